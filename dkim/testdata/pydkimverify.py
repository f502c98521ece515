#!/usr/bin/python3
"""Verify every DKIM signature of the message on stdin with python3-dkim,
an implementation independent of mailnode's, taking the public keys from a
file of "NAME TXT-VALUE" lines instead of DNS (NAME as in DNS, e.g.
sel._domainkey.example.com). Prints one line per signature and exits 0 only
when there is at least one signature and all of them pass.

Usage: pydkimverify.py KEYFILE < message
"""
import sys

import dkim

keys = {}
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if line:
            name, value = line.split(None, 1)
            keys[name.rstrip(".").lower()] = value.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return keys.get(name.rstrip(".").lower())


msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
if not sigs:
    print("none")
    sys.exit(1)
ok = True
for i in range(len(sigs)):
    d = dkim.DKIM(msg)
    try:
        res = d.verify(idx=i, dnsfunc=dnsfunc)
    except Exception as e:  # a broken signature is a failure, not a crash
        res = False
        print("error", e, file=sys.stderr)
    tags = dict(
        t.strip().split(b"=", 1) for t in sigs[i].split(b";") if b"=" in t
    )
    print("pass" if res else "fail", tags.get(b"a", b"").decode(),
          tags.get(b"d", b"").decode(), tags.get(b"s", b"").decode())
    ok = ok and res
sys.exit(0 if ok else 1)
