"""A DNS server for the tests: serves the zone file named by argv[1] (BIND syntax, with
absolute names) over UDP and TCP on one free port of 127.0.0.1, prints that port on a
line of its own once both listen, and logs each question it gets ("NAME TYPE") to the
file named by argv[2]. A name that exists without records of the type asked is answered
with no records (NODATA); a name that does not exist, NXDOMAIN; the names given after
argv[2] (without their final dots), SERVFAIL, as a broken server or an unreachable zone
answers; NAME/TYPE fails only that type of question. A failure is answered after 0.2 s,
as from a server that first waited for another: the other questions about the name are
answered before it. Runs until killed."""

import socket
import sys
import time

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):
    def __init__(self, text, log_path, failing):
        self.records = list(RR.fromZone(text))
        self.log_path = log_path
        self.failing = {name.rstrip(".").lower() for name in failing}

    def resolve(self, request, handler):
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        with open(self.log_path, "a") as log:
            log.write(f"{str(qname).rstrip('.').lower()} {QTYPE[qtype]}\n")
        name = str(qname).rstrip(".").lower()
        if name in self.failing or f"{name}/{QTYPE[qtype]}".lower() in self.failing:
            time.sleep(0.2)
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        exists = False
        for rr in self.records:
            if rr.rname == qname:
                exists = True
                if rr.rtype == qtype or rr.rtype == QTYPE.CNAME:
                    reply.add_answer(rr)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    with open(sys.argv[1]) as f:
        zone = Zone(f.read(), sys.argv[2], sys.argv[3:])
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
    # The UDP port may be taken for TCP by someone else: try a few.
    for _ in range(20):
        port = free_port()
        try:
            udp = DNSServer(zone, port=port, address="127.0.0.1", logger=quiet)
            tcp = DNSServer(zone, port=port, address="127.0.0.1", tcp=True, logger=quiet)
        except OSError:
            continue
        udp.start_thread()
        tcp.start_thread()
        print(port, flush=True)
        while True:
            time.sleep(3600)
    sys.exit("no free port")


main()
