# An independent DKIM verifier for tests: dkimpy, with DNS answered from the command line.
#   python3 dkimpy_verify.py MESSAGE_FILE NAME TXT
# Checks every DKIM-Signature of the message (dkim.verify checks the first; the tests
# make sure there is one). Prints "pass" or "fail: REASON"; a lookup of any other name
# than NAME is answered with nothing, so a wrong s= or d= fails.
import sys
import dkim

path, name, txt = sys.argv[1], sys.argv[2], sys.argv[3]
message = open(path, "rb").read()
asked = []

def dnsfunc(qname, timeout=5):
    qname = qname.decode() if isinstance(qname, bytes) else qname
    asked.append(qname)
    return txt.encode() if qname.rstrip(".").lower() == name.rstrip(".").lower() else None

try:
    ok = dkim.verify(message, dnsfunc=dnsfunc)
except Exception as e:
    print("fail: %s: %s (asked %s)" % (type(e).__name__, e, asked))
    sys.exit(1)
print("pass" if ok else "fail: signature does not verify (asked %s)" % asked)
sys.exit(0 if ok else 1)
