#!/usr/bin/env python3
"""Database round trips per HTTP request of one sign-in journey (used by bench/roundtrips.sh).

    roundtrips.py BASE PG_LOG DB SETTLE_SECONDS OUT_JSON EMAIL_COLD EMAIL
        (env: BENCH_PASSWORD, BENCH_REDIRECT_URI, BENCH_CLIENT default `web`)
    roundtrips.py render OUT_JSON [details]      # the Markdown table (details: each statement)

PostgreSQL logs every statement of the broker's database (`log_min_duration_statement = 0`,
prefix `%m [%p] %d: `) to PG_LOG. Requests are made one at a time; the log's size before a
request, when its answer arrived, and SETTLE_SECONDS later (the broker's batched writes,
flushed every audit.flush_interval / session.touch_interval, land then) cuts it into per-request
slices. Each slice's lines of database DB are counted:
  parse      "parse __diesel_stmt_N: ..."   PQprepare: one round trip of its own, the first
                                             time a connection runs a cacheable statement;
                                             "parse <unnamed>" is not one (diesel 2.3 sends an
                                             uncached statement as Parse+Bind+Execute+Sync
                                             with PQsendQueryParams: one round trip)
  execute    "execute <name>: ..."          one round trip per statement
  statement  "statement: ..."               a simple query: one round trip (BEGIN, COMMIT,
                                             ROLLBACK counted as `tx`, the rest as statements)
  bind lines are skipped (same round trip as their execute). The back-channel logout outbox
  poll (a timer, every 2 s) is counted apart as `background`.
Flows, each in a fresh browser: an idle window (nothing should run), the full password login of
EMAIL[0] (its connections' statement caches are cold), the full password login of EMAIL[1]
(warm: the figure to compare), then one authorize with EMAIL[1]'s session. Writes OUT_JSON.
"""
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from login_flow import Browser  # noqa: E402

LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S*): LOG:  duration: [0-9.]+ ms  (parse|bind|execute|statement)( [^:]*)?: (.*)$")
TX = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|SAVEPOINT|RELEASE)\b", re.I)


# Timers that read the database whatever the requests do, counted apart: the back-channel logout
# outbox is polled every 2 s (not configurable; startup.rs).
BACKGROUND = re.compile(r'^SELECT .* FROM "logout_deliveries"', re.S)


def short(sql):
    """The statement without its column lists, for reading."""
    sql = re.sub(r"^SELECT .*? FROM ", "SELECT ... FROM ", sql)
    sql = re.sub(r'^(INSERT INTO "?\w+"?) \(.*?\) VALUES', r"\1 (...) VALUES", sql)
    return sql[:200]


def count(log, db, start, end):
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    c = {"statements": 0, "tx": 0, "parse": 0, "background": 0, "backends": set(), "sql": []}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or m.group(2) != db:
            continue
        pid, _, kind, name, sql = m.groups()
        if BACKGROUND.match(sql):
            if kind in ("execute", "statement"):
                c["background"] += 1
            continue
        c["backends"].add(pid)
        if kind == "bind":
            continue
        if kind == "parse":
            # diesel 2.3 sends an uncached statement with PQsendQueryParams (Parse, Bind,
            # Execute, Sync in one message: one round trip, logged as parse + bind + execute);
            # a cached one is prepared once per connection with PQprepare (a round trip of its
            # own, logged as a named parse) and then run with PQsendQueryPrepared.
            if (name or "").strip() != "<unnamed>":
                c["parse"] += 1
                c["sql"].append("PREPARE " + short(sql))
            continue
        if TX.match(sql):
            c["tx"] += 1
        else:
            c["statements"] += 1
        c["sql"].append(short(sql))
    c["backends"] = len(c["backends"])
    c["round_trips"] = c["statements"] + c["tx"] + c["parse"]
    return c


def main():
    base, log, db, settle, out = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    emails = sys.argv[6:8]
    password = os.environ["BENCH_PASSWORD"]
    client, redirect_uri = os.environ.get("BENCH_CLIENT", "web"), os.environ["BENCH_REDIRECT_URI"]
    size = lambda: os.path.getsize(log)  # noqa: E731

    def traced():
        steps = []
        marks = {}

        def trace(method, url, phase):
            if phase == "before":
                marks["before"], marks["t0"] = size(), time.time()
            else:
                at_answer, t1 = size(), time.time()
                time.sleep(settle)
                steps.append((method, url, marks["before"], at_answer, size(), marks["t0"], t1))

        return steps, trace

    result = {}
    # Nothing should touch the database while no request is made.
    o0 = size()
    time.sleep(2 * settle)
    result["idle"] = count(log, db, o0, size())
    result["idle"]["seconds"] = 2 * settle

    session = None
    for name, email in (("login_cold", emails[0]), ("login", emails[1])):
        steps, trace = traced()
        b = Browser(base, trace)
        authorize = b.sign_in(email, password, client, redirect_uri)
        result[name] = rows(b, steps, log, db)
        session = (b, authorize)

    b, authorize = session
    steps, trace = traced()
    b.trace = trace
    b.requests = []
    b.authorize_with_session(authorize, redirect_uri)
    result["authorize_with_session"] = rows(b, steps, log, db)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def rows(b, steps, log, db):
    out = []
    for (method, url, status), (_, _, o0, o1, o2, t0, t1) in zip(b.requests, steps):
        path = urllib.parse.urlparse(url).path
        sync, later = count(log, db, o0, o1), count(log, db, o1, o2)
        out.append({"request": f"{method} {path}", "status": status, "in_request": sync, "after_answer": later, "sent_at": t0, "answered_at": t1})
    return out


def render(path, details):
    r = json.load(open(path))
    print("| flow | HTTP request | answer | SQL statements | BEGIN/COMMIT | prepares (named Parse) | round trips in the request | batched writes after the answer (round trips) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, title in (("login", "full password login"), ("authorize_with_session", "authorize with a live session")):
        tot = {"statements": 0, "tx": 0, "parse": 0, "round_trips": 0, "later": 0}
        for s in r[name]:
            i, a = s["in_request"], s["after_answer"]
            print(f"| {title} | {s['request']} | {s['status']} | {i['statements']} | {i['tx']} | {i['parse']} | {i['round_trips']} | {a['round_trips']} |")
            for k in ("statements", "tx", "parse", "round_trips"):
                tot[k] += i[k]
            tot["later"] += a["round_trips"]
        print(f"| **{title}, total** | {len(r[name])} requests | | {tot['statements']} | {tot['tx']} | {tot['parse']} | **{tot['round_trips']}** | {tot['later']} |")
    cold = r["login_cold"]
    rt = sum(s["in_request"]["round_trips"] for s in cold)
    parse = sum(s["in_request"]["parse"] for s in cold)
    later = sum(s["after_answer"]["round_trips"] for s in cold)
    print()
    print(f"The first login after start (another user; the pool's connections had not prepared these statements yet): {rt} round trips in its requests, {parse} of them prepares; {later} batched after the answers. Idle {r['idle']['seconds']:.0f} s before it: {r['idle']['round_trips']} round trips (and {r['idle']['background']} polls of the logout outbox, a 2 s timer, left out of every count).")
    if details:
        for name in ("login", "authorize_with_session"):
            for s in r[name]:
                print(f"\n{name}: {s['request']} -> {s['status']}")
                for q in s["in_request"]["sql"]:
                    print(f"    {q}")
                for q in s["after_answer"]["sql"]:
                    print(f"    (after the answer) {q}")


if __name__ == "__main__":
    if sys.argv[1] == "render":
        render(sys.argv[2], len(sys.argv) > 3)
    else:
        main()
