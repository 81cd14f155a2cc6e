#!/usr/bin/env python3
"""Self-test of the privacyIDEA peer (stdlib only; run with any python3; needs Debian oathtool).

    tests/peers/privacyidea/selftest.py [--quiet]

Starts start.sh, then talks plain HTTP to /validate/check with codes from `oathtool --totp`:
a right code with the service credential is accepted; the same code again, a wrong code, an older
unused code, and codes with no, a "Bearer"-prefixed or a wrongly signed credential are refused.
Prints each request and answer (JSON), times a few checks, stops the server with SIGTERM and checks
that it exited cleanly, its port is closed and its directory is gone. Exits non-zero on any failure.
"""

import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
QUIET = "--quiet" in sys.argv[1:]
FAILURES = []


def say(*a):
    if not QUIET:
        print(*a, flush=True)


def check(cond, what):
    if cond:
        say("ok   " + what)
    else:
        print("FAIL " + what, flush=True)
        FAILURES.append(what)


def oathtool(secret_b32, at=None):
    args = ["oathtool", "--totp", "-b"]
    if at is not None:
        args += ["--now", f"@{int(at)}"]
    return subprocess.run(args + [secret_b32], check=True, capture_output=True, text=True).stdout.strip()


def http(method, url, fields=None, headers=None, as_json=False):
    """One request; returns (status, parsed JSON answer or text, milliseconds)."""
    data = None
    headers = dict(headers or {})
    if fields is not None:
        if as_json:
            data = json.dumps(fields).encode()
            headers["Content-Type"] = "application/json"
        else:
            data = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    ms = (time.perf_counter() - t) * 1000
    try:
        return status, json.loads(body), ms
    except ValueError:
        return status, body.decode(errors="replace"), ms


def show(label, fields, headers, status, answer):
    shown_headers = {k: (v[:16] + "..." if len(v) > 20 else v) for k, v in (headers or {}).items()}
    say(f"--- {label}\n    request: {json.dumps(fields)} headers={json.dumps(shown_headers)}\n"
        f"    answer:  HTTP {status} {json.dumps(answer, sort_keys=True)}")


def value(answer):
    return answer.get("result", {}).get("value") if isinstance(answer, dict) else None


def forged_jwt(payload):
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + enc(json.dumps(payload).encode())
    return (head + b"." + enc(hmac.new(b"not the server's key", head, hashlib.sha256).digest())).decode()


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main():
    t0 = time.perf_counter()
    proc = subprocess.Popen([os.path.join(HERE, "start.sh"), "--extra-user", "carol"], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        sys.exit(f"the privacyIDEA peer did not start (exit {proc.poll()})")
    startup = (time.perf_counter() - t0) * 1000
    peer = json.loads(line)
    say(f"started in {startup:.0f} ms (server's own count {peer['startup_ms']} ms): {peer['base_url']}")
    if shutil.which("ss"):
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()
        mine = [l.split()[3] for l in listening if f"pid={peer['pid']}," in l]
        check(mine == [f"127.0.0.1:{peer['port']}"], f"it listens on 127.0.0.1:{peer['port']} only ({mine})")
    else:
        say("(no `ss` (Debian iproute2): the listening addresses are not checked)")
    say("peer: " + json.dumps({k: v for k, v in peer.items() if k not in ("credential", "admin_password")}))
    try:
        run_checks(peer)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed after 15 s"
    check(rc == 0, f"SIGTERM: the server exited with 0 (got {rc})")
    check(not port_open(peer["port"]), "SIGTERM: nothing listens on the port any more")
    check(not os.path.exists(peer["dir"]), "SIGTERM: its directory is removed")
    if FAILURES:
        print(f"{len(FAILURES)} FAILED: {FAILURES}", file=sys.stderr)
        sys.exit(1)
    print("privacyIDEA peer self-test: all passed")


def run_checks(peer):
    url = peer["validate_url"]
    secret = peer["seed_base32"]
    cred = {"Authorization": peer["credential"]}
    user = {"user": peer["user"], "realm": peer["realm"]}
    check(open(peer["credential_file"]).read() == peer["credential"], "the credential file holds the credential")

    def validate(label, fields, headers, as_json=False):
        status, answer, ms = http("POST", url, fields, headers, as_json)
        show(label, fields, headers, status, answer)
        return status, answer, ms

    now = time.time()
    step = int(now // 30)
    code = oathtool(secret, step * 30)  # this step's, whatever the clock says a moment later
    older = oathtool(secret, (step - 1) * 30)
    nxt = oathtool(secret, (step + 1) * 30)
    wrong = f"{(int(code) + 500000) % 1000000:06d}"

    status, answer, _ = validate("right code, with the credential", {**user, "pass": code}, cred)
    check(status == 200 and value(answer) is True, "right code + credential: HTTP 200, result.value true")
    check(answer.get("detail", {}).get("serial") == peer["serial"], "detail.serial names the token")

    status, answer, _ = validate("the same code again (replay)", {**user, "pass": code}, cred)
    check(status == 200 and value(answer) is False, "replayed code: HTTP 200, result.value false")

    status, answer, _ = validate("a wrong code", {**user, "pass": wrong}, cred)
    check(status == 200 and value(answer) is False, "wrong code: HTTP 200, result.value false")

    status, answer, _ = validate("an older unused code (previous step)", {**user, "pass": older}, cred)
    check(status == 200 and value(answer) is False, "older unused code: result.value false")

    status, answer, _ = validate("the next step's code, no credential", {**user, "pass": nxt}, {})
    check(status != 200 and answer.get("result", {}).get("status") is False and value(answer) is None,
          f"no credential: refused (HTTP {status}, result.status false, no value)")

    bearer = {"Authorization": "Bearer " + peer["credential"]}
    status, answer, _ = validate("the next step's code, 'Bearer <credential>'", {**user, "pass": nxt}, bearer)
    check(status != 200 and value(answer) is None, f"'Bearer ' prefix: refused (HTTP {status})")

    forged = {"Authorization": forged_jwt({"username": "x", "realm": "API", "role": "validate",
                                           "exp": int(now) + 3600})}
    status, answer, _ = validate("the next step's code, a JWT signed with another key", {**user, "pass": nxt}, forged)
    check(status != 200 and value(answer) is None, f"wrongly signed credential: refused (HTTP {status})")

    status, answer, _ = validate("the next step's code, with the credential, JSON body", {**user, "pass": nxt},
                                 cred, as_json=True)
    check(status == 200 and value(answer) is True,
          "the code refused for want of a credential is accepted with it (JSON body): result.value true")

    status, answer, _ = validate("a user without a token", {"user": peer["user_without_token"], "pass": code}, cred)
    check(status == 200 and value(answer) is False, "user without a token: result.value false")

    status, answer, _ = validate("an unknown user", {"user": "mallory", "pass": code}, cred)
    check(value(answer) is not True, f"unknown user: not accepted (HTTP {status})")

    carol = peer["extra_users"][0]
    status, answer, _ = validate("an extra user's code, its own token", {"user": carol["user"],
                                 "pass": oathtool(carol["seed_base32"])}, cred)
    check(status == 200 and value(answer) is True and answer["detail"]["serial"] == "TOTP-CAROL",
          "--extra-user carol: her own code is accepted (her own token)")

    # The threaded server answers concurrent checks (16 at once) without stalling.
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: http("POST", url, {"user": peer["user_without_token"],
                                                            "pass": f"{i:06d}"}, cred), range(16)))
    took = time.perf_counter() - t
    check(all(s == 200 and value(a) is False for s, a, _ in answers) and took < 10,
          f"16 concurrent checks all answered in {took:.1f} s")

    # Time a few checks (wrong codes: the whole +-180 s window is computed, then the audit written).
    # Wrong codes count as failures, and from the 10th on privacyIDEA refuses even right codes
    # ("Failcounter exceeded"): reset the counter as the admin before and after.
    _, auth, _ = http("POST", peer["base_url"] + "/auth",
                      {"username": peer["admin_user"], "password": peer["admin_password"]})
    admin = {"Authorization": value(auth)["token"]}
    q = urllib.parse.urlencode({"realm": peer["realm"], "username": peer["user"]})
    status, answer, _ = http("GET", f"{peer['base_url']}/user/?{q}", None, admin)
    found = value(answer) or [{}]
    check(status == 200 and found[0].get("email") == peer["email"],
          f"admin: privacyIDEA knows {peer['user']} with email {found[0].get('email')}")
    reset = f"{peer['base_url']}/token/reset/{peer['serial']}"
    status, answer, _ = http("POST", reset, {}, admin)
    check(status == 200 and value(answer) == 1, "admin: the token's fail counter is reset")
    times = []
    for i in range(8):
        _, answer, ms = http("POST", url, {**user, "pass": f"{(int(wrong) + i + 1) % 1000000:06d}"}, cred)
        check(value(answer) is False and answer["detail"]["message"] == "wrong otp value",
              f"timed wrong code {i + 1}: refused ({ms:.1f} ms)")
        times.append(ms)
    say(f"/validate/check: median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f} "
        f"over {len(times)} wrong codes")
    status, answer, _ = http("POST", reset, {}, admin)
    check(status == 200 and value(answer) == 1, "admin: the token's fail counter is reset again")
    # Two steps ahead: unused, and within privacyIDEA's default window (+-180 s).
    status, answer, ms = http("POST", url, {**user, "pass": oathtool(secret, (step + 2) * 30)}, cred)
    check(status == 200 and value(answer) is True, f"a later unused code is accepted after the reset ({ms:.1f} ms)")


if __name__ == "__main__":
    main()
