#!/usr/bin/env python3
"""Broker CPU time per federated login, the upstream's own time excluded (used by
bench/federated.sh).

    federated_logins.py BROKER_URL BROKER_PID IDP_URL OP_PORT OP_KEY_PEM LOGINS

Runs LOGINS sign-ins through the OIDC upstream `op` and LOGINS through the SAML upstream
`idp`, one after the other, each as a fresh browser (its own cookies), over 20 upstream users
round robin (one warm-up round first: it creates the users). The OIDC upstream is a minimal
OpenID provider served by this script (discovery, JWKS, token endpoint signing RS256 ID tokens);
the SAML upstream is tests/peers/saml_idp.py (pysaml2 + xmlsec1), a separate process. The broker's
CPU time (user + system, /proc/PID/stat) is read before and after each series: the upstreams'
and this driver's work are in other processes and do not count.

Prints one JSON object per protocol: logins, broker CPU ms per login, wall-clock ms per login.
Needs `cryptography` (a pysaml2 dependency) for the OP's signatures.
"""
import base64
import html
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

BROKER, PID, IDP, OP_PORT, OP_KEY, LOGINS = sys.argv[1:7]
PID, OP_PORT, LOGINS = int(PID), int(OP_PORT), int(LOGINS)
OP = f"http://127.0.0.1:{OP_PORT}"
KEY = serialization.load_pem_private_key(open(OP_KEY, "rb").read(), password=None)
CODES = {}  # code -> (nonce, sub)
LOCK = threading.Lock()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def id_token(nonce, sub):
    now = int(time.time())
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    claims = {"iss": OP, "sub": sub, "aud": "concierge", "iat": now, "exp": now + 300,
              "nonce": nonce, "email": f"{sub}@op.example", "email_verified": True,
              "name": f"OP {sub}"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(sig)}"


class Op(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            return self.reply({
                "issuer": OP, "authorization_endpoint": f"{OP}/authorize",
                "token_endpoint": f"{OP}/token", "jwks_uri": f"{OP}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        if self.path == "/jwks":
            n = KEY.public_key().public_numbers()
            to_b = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")
            return self.reply({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                                         "n": b64(to_b(n.n)), "e": b64(to_b(n.e))}]})
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        with LOCK:
            nonce, sub = CODES.pop(form.get("code", ""), (None, None))
        if nonce is None:
            self.send_response(400)
            self.end_headers()
            return
        self.reply({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
                    "id_token": id_token(nonce, sub)})


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(url, method="GET", body=None, cookies=None, ctype=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if ctype:
        headers["Content-Type"] = ctype
    path = u.path + (f"?{u.query}" if u.query else "")
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    for h, v in r.getheaders():
        if h.lower() == "set-cookie" and cookies is not None:
            k, val = v.split(";", 1)[0].split("=", 1)
            cookies[k] = val
    conn.close()
    return r.status, r.getheader("Location"), data.decode("utf-8", "replace")


def oidc_login(user):
    jar = {}
    status, to, _ = request(f"{BROKER}/upstream/op/start", cookies=jar)
    assert status == 303, status
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(to).query))
    code = b64(os.urandom(18))
    with LOCK:
        CODES[code] = (q["nonce"], user)
    status, to, body = request(
        f"{BROKER}/upstream/op/callback?code={code}&state={urllib.parse.quote(q['state'])}",
        cookies=jar)
    assert status == 303 and "concierge_session" in jar, (status, body[:300])


def saml_login(user):
    jar = {}
    status, to, _ = request(f"{BROKER}/upstream/idp/start", cookies=jar)
    assert status == 303, status
    # At the IdP (its own process): the login form, then the signed Response.
    _, _, page = request(to)
    fields = {k: html.unescape(v) for k, v in
              re.findall(r'name="(SAMLRequest|RelayState)" value="([^"]*)"', page)}
    fields.update(user=user, action="signin")
    _, _, post = request(f"{IDP}/login", "POST", urllib.parse.urlencode(fields),
                         ctype="application/x-www-form-urlencoded")
    answer = {k: html.unescape(v) for k, v in
              re.findall(r'name="(SAMLResponse|RelayState)" value="([^"]*)"', post)}
    status, _, body = request(f"{BROKER}/upstream/idp/saml/acs", "POST",
                              urllib.parse.urlencode(answer), cookies=jar,
                              ctype="application/x-www-form-urlencoded")
    assert status == 303 and "concierge_session" in jar, (status, body[:300])


def series(name, login):
    users = [f"user{i}" for i in range(20)]
    for u in users:  # warm-up: creates and links the users, fills caches
        login(u)
    cpu0, t0 = cpu_seconds(PID), time.perf_counter()
    for i in range(LOGINS):
        login(users[i % len(users)])
    cpu, wall = cpu_seconds(PID) - cpu0, time.perf_counter() - t0
    print(json.dumps({"protocol": name, "logins": LOGINS,
                      "broker_cpu_ms_per_login": round(cpu * 1000 / LOGINS, 3),
                      "wall_ms_per_login": round(wall * 1000 / LOGINS, 2)}), flush=True)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", OP_PORT), Op)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    series("oidc", oidc_login)
    series("saml", saml_login)


if __name__ == "__main__":
    main()
