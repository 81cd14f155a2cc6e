#!/usr/bin/env python3
"""Password logins against several broker instances at once (used by bench/sessions.sh).

    logins.py SECONDS CONNS_PER_INSTANCE PASSWORD USERS_FILE URL [URL ...]

Each connection is a browser signing in again and again: GET /login (CSRF cookie and form
token), then POST /login with the next user of USERS_FILE (one email a line, shared round robin
by all connections); a login counts when the POST answers 303 with a session cookie. Session
cookies are never sent back (each login is a new browser session). Every instance gets the same
number of connections. Standard library only; one thread per connection (the time goes to
argon2id in the broker, the client side is a few hundred microseconds per login).

Prints one JSON object: per instance the logins completed inside the window, errors, latency
percentiles, and all logins completed (the window plus those in flight at its end, which the
database counters also see); how busy the machine's cores were and how much of a core this
driver used. Then checks that a session made on one instance is accepted by the other.
"""
import http.client
import itertools
import json
import os
import re
import sys
import threading
import time
import urllib.parse

CSRF_COOKIE = "concierge_csrf"
SESSION_COOKIE = "concierge_session"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def cookie_from(resp, name):
    for header, value in resp.getheaders():
        if header.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


class Browser:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.conn = None
        self.csrf_cookie = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def login(self, email, password):
        """One sign-in: the login page, then the form. Returns the session cookie or None."""
        headers = {"Cookie": f"{CSRF_COOKIE}={self.csrf_cookie}"} if self.csrf_cookie else {}
        resp, page = self.request("GET", "/login", headers=headers)
        if resp.status != 200:
            return None
        self.csrf_cookie = cookie_from(resp, CSRF_COOKIE) or self.csrf_cookie
        m = TOKEN.search(page.decode())
        if not m or not self.csrf_cookie:
            return None
        body = urllib.parse.urlencode(
            {"csrf_token": m.group(1), "email": email, "password": password, "return_to": ""}
        )
        resp, _ = self.request(
            "POST",
            "/login",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"{CSRF_COOKIE}={self.csrf_cookie}",
            },
        )
        if resp.status != 303:
            return None
        return cookie_from(resp, SESSION_COOKIE)


def machine_cpu():
    """(total, idle) jiffies of all cores from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v), v[3] + v[4]


def pct(sorted_ms, p):
    if not sorted_ms:
        return None
    rank = max(1, min(len(sorted_ms), -(-len(sorted_ms) * p // 100)))
    return round(sorted_ms[int(rank) - 1], 1)


def main():
    seconds, conns, password, users_file = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    urls = sys.argv[5:]
    users = [line.strip() for line in open(users_file) if line.strip()]
    next_user = itertools.count()
    lock = threading.Lock()
    stats = {u: {"in_window": 0, "total": 0, "errors": 0, "ms": [], "cookie": None} for u in urls}

    start = time.monotonic()
    deadline = start + seconds
    cpu0, own0 = machine_cpu(), os.times()

    def run(url):
        b = Browser(url)
        s = stats[url]
        while True:
            t0 = time.monotonic()
            if t0 >= deadline:
                return
            email = users[next(next_user) % len(users)]
            try:
                cookie = b.login(email, password)
            except Exception:  # noqa: BLE001 - a failed request is an error, the run goes on
                cookie = None
            t1 = time.monotonic()
            with lock:
                if cookie is None:
                    s["errors"] += 1
                    continue
                s["total"] += 1
                s["cookie"] = cookie
                if t1 <= deadline:
                    s["in_window"] += 1
                    s["ms"].append((t1 - t0) * 1000)

    threads = [threading.Thread(target=run, args=(u,)) for u in urls for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1, own1 = machine_cpu(), os.times()
    elapsed = time.monotonic() - start
    busy = 1 - (cpu1[1] - cpu0[1]) / max(cpu1[0] - cpu0[0], 1)
    driver = (own1.user + own1.system - own0.user - own0.system) / elapsed

    # A session made on one instance works on the next one (one database, no stickiness).
    shared = []
    for i, url in enumerate(urls):
        other = urls[(i + 1) % len(urls)]
        cookie = stats[url]["cookie"]
        ok = False
        if cookie:
            resp, _ = Browser(other).request("GET", "/account", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
            ok = resp.status == 200
        shared.append(ok)

    out = {
        "seconds": seconds,
        "connections_per_instance": conns,
        "instances": [],
        "cross_instance_ok": all(shared),
        "machine_cpu_busy": round(busy, 3),
        "driver_cpu_cores": round(driver, 3),
        "driver_cpu_seconds": round(own1.user + own1.system - own0.user - own0.system, 3),
    }
    for url in urls:
        s = stats[url]
        ms = sorted(s["ms"])
        out["instances"].append(
            {
                "url": url,
                "logins_in_window": s["in_window"],
                "logins_total": s["total"],
                "errors": s["errors"],
                "per_second": round(s["in_window"] / seconds, 1),
                "p50_ms": pct(ms, 50),
                "p99_ms": pct(ms, 99),
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
