#!/usr/bin/python3
"""ARC with python3-dkim, an implementation independent of mailnode's, the
public keys taken from KEYS: a file of "NAME TXT-VALUE" lines (NAME as in
DNS, e.g. sel._domainkey.example.com), or dns:HOST:PORT, a DNS server asked
with dnspython (the end-to-end tests' server on loopback).

  pyarc.py verify KEYS < message
      prints the chain validation status (pass, fail, none) and the reason;
      exits 0 only for pass.
  pyarc.py sign KEYS PRIVKEY.pem SELECTOR DOMAIN AUTHSERV-ID < message
      prints the message with the next ARC set on top (the message needs an
      Authentication-Results field of AUTHSERV-ID).
"""
import sys

import dkim

keys = {}
server = None
if sys.argv[2].startswith("dns:"):
    import dns.resolver

    host, port = sys.argv[2][4:].rsplit(":", 1)
    server = dns.resolver.Resolver(configure=False)
    server.nameservers = [host]
    server.port = int(port)
else:
    with open(sys.argv[2]) as f:
        for line in f:
            line = line.strip()
            if line:
                name, value = line.split(None, 1)
                keys[name.rstrip(".").lower()] = value.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    if server is None:
        return keys.get(name.rstrip(".").lower())
    try:
        answer = server.resolve(name, "TXT", lifetime=timeout)
    except Exception:
        return None
    return b"".join(b"".join(rr.strings) for rr in answer)


msg = sys.stdin.buffer.read()
if sys.argv[1] == "verify":
    cv, results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
    cv = cv.decode() if cv else "ended"
    print(cv, reason)
    sys.exit(0 if cv == "pass" else 1)
elif sys.argv[1] == "sign":
    with open(sys.argv[3], "rb") as f:
        priv = f.read()
    sel, dom, srv = (a.encode() for a in sys.argv[4:7])
    fields = dkim.arc_sign(msg, sel, dom, priv, srv,
                           include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    if not fields:
        print("no ARC set made", file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(b"".join(fields) + msg)
else:
    sys.exit("unknown command " + sys.argv[1])
