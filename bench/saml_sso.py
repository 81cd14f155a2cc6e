#!/usr/bin/env python3
"""Drives bench/saml_sso.sh's load and measures the broker's CPU per request.

    saml_sso.py BASE COOKIE_FILE AUTHORIZE_PATH REDIRECT_URI SP_ENTITY_ID PID N

N AuthnRequests of SP_ENTITY_ID over HTTP-Redirect (each with a fresh ID, raw DEFLATE + base64
as SAML Bindings 3.4.4.1 says), then N authorizes (AUTHORIZE_PATH), each with the session
cookie, 4 at a time over keep-alive connections. Every answer is checked (a 200 form posting a
SAMLResponse; a 302 to REDIRECT_URI with a code). The broker's CPU time (utime + stime of PID)
is read before and after each batch. Prints JSON: {n, saml: {cpu_us, rps}, oidc: {...}}.
Standard library only.
"""
import base64
import concurrent.futures
import datetime
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

CONCURRENCY = 4


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line; after the ")" they are
    # the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def authn_request(base, sp):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_{uuid.uuid4().hex}" Version="2.0" IssueInstant="{now}" '
        f'Destination="{base}/saml/idp/sso">'
        f"<saml:Issuer>{sp}</saml:Issuer></samlp:AuthnRequest>"
    )
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(xml.encode()) + c.flush()
    q = urllib.parse.urlencode({"SAMLRequest": base64.b64encode(raw).decode(), "RelayState": "bench"})
    return f"/saml/idp/sso?{q}"


def run(host, port, cookie, paths, check):
    local = threading.local()

    def one(path):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, port)
        conn.request("GET", path, headers={"Cookie": cookie})
        r = conn.getresponse()
        body = r.read().decode(errors="replace")
        check(r.status, r.getheader("Location") or "", body)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, paths))
    return time.monotonic() - start


def main():
    base, cookie_file, authorize, redirect_uri, sp, pid, n = sys.argv[1:8]
    n = int(n)
    cookie = open(cookie_file).read().strip()
    u = urllib.parse.urlparse(base)

    def saml_ok(status, location, body):
        if status != 200 or 'name="SAMLResponse"' not in body:
            raise SystemExit(f"saml_sso: the SSO answered {status} {location!r}: {body[:300]}")

    def oidc_ok(status, location, body):
        if status not in (302, 303) or not location.startswith(redirect_uri) or "code=" not in location:
            raise SystemExit(f"saml_sso: authorize answered {status} {location!r}")

    out = {"n": n}
    # A warm-up of each kind (caches, connections), not measured.
    run(u.hostname, u.port, cookie, [authn_request(base, sp) for _ in range(50)], saml_ok)
    run(u.hostname, u.port, cookie, [authorize] * 50, oidc_ok)
    for kind, paths, check in [
        ("saml", [authn_request(base, sp) for _ in range(n)], saml_ok),
        ("oidc", [authorize] * n, oidc_ok),
    ]:
        before = cpu_seconds(pid)
        wall = run(u.hostname, u.port, cookie, paths, check)
        cpu = cpu_seconds(pid) - before
        out[kind] = {"cpu_us": cpu * 1e6 / n, "rps": n / wall}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
