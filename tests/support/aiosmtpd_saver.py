# A real SMTP server for tests: Python's aiosmtpd on 127.0.0.1, saving each
# transaction's envelope (N.json) and data (N.eml) in a directory.
#   python3 aiosmtpd_saver.py PORT DIR [implicit|starttls CERT KEY]
# (prints "ready", stops at end of stdin). With "implicit" the server speaks TLS from
# the first byte (port 465 style); with "starttls" it offers STARTTLS. N.json's "tls"
# is the TLS version the transaction arrived over, or null.
# With SAVER_PIPELINING=1 in the environment, EHLO also offers PIPELINING (aiosmtpd
# reads commands in order from its buffer, so it serves a pipelining client as is), and
# N.json's "pipelined" says whether more commands had already arrived when MAIL FROM
# was answered: a client that waits for each reply never has any.
import json, os, ssl, sys
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
pipelining = os.environ.get("SAVER_PIPELINING") == "1"

class Saver:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # The hook replaces aiosmtpd's own answer, which would have noted the name.
        session.host_name = hostname
        if pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What aiosmtpd does without this hook, and a look at its input buffer
        # (asyncio's StreamReader keeps it in _buffer).
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        session.pipelined = len(getattr(server._reader, "_buffer", b"")) > 0
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        with open(os.path.join(out, f"{n}.eml"), "wb") as f:
            f.write(envelope.original_content)
        tls = None
        if server.transport is not None:
            obj = server.transport.get_extra_info("ssl_object")
            if obj is not None:
                tls = obj.version()
        tmp = os.path.join(out, f"{n}.tmp")
        with open(tmp, "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options, "tls": tls,
                       "pipelined": getattr(session, "pipelined", False)}, f)
        os.rename(tmp, os.path.join(out, f"{n}.json"))
        return "250 2.0.0 Ok: queued as PY1"

kwargs = {}
if mode != "plain":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    if mode == "implicit":
        kwargs["ssl_context"] = context
    else:
        kwargs["tls_context"] = context
controller = Controller(Saver(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
