# A real SMTP server for tests: Python's aiosmtpd on 127.0.0.1, saving each
# transaction's envelope (N.json) and data (N.eml) in a directory.
#   python3 aiosmtpd_saver.py PORT DIR   (prints "ready", stops at end of stdin)
import json, os, sys
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Saver:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        with open(os.path.join(out, f"{n}.eml"), "wb") as f:
            f.write(envelope.original_content)
        tmp = os.path.join(out, f"{n}.tmp")
        with open(tmp, "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options}, f)
        os.rename(tmp, os.path.join(out, f"{n}.json"))
        return "250 2.0.0 Ok: queued as PY1"

controller = Controller(Saver(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
