"""A real privacyIDEA 3.14 server for the tests, on SQLite, listening on 127.0.0.1 only. Run by
start.sh with the python of the venv install.sh builds; see README.md.

    pi_server.py [--dir DIR] [--port PORT] [--seed HEX] [--realm R] [--user U] [--email E]
                 [--extra-user NAME]... [--no-api-key] [--verbose]

1. Writes DIR/pi.cfg (SQLite DB, random SECRET_KEY and pepper, key files in DIR) and runs the
   pi-manage commands (in this process, one interpreter for all of them): `setup create_enckey`,
   `setup create_audit_keys`, `setup create_tables`, `admin add`, `api createtoken -r validate`.
2. Serves privacyidea.app:create_app with werkzeug's threaded server (what `pi-manage run` uses)
   on 127.0.0.1:PORT (default: a free port chosen by the kernel, no race).
3. Provisions through the REST API, as the admin: a flat-file resolver over DIR/users.passwd,
   a realm (the default realm) with `alice` (alice@example.com, a TOTP token), each
   --extra-user (NAME@example.com, a TOTP token with a random seed) and `bob` (bob@example.com,
   no token), and a policy `scope=authorization, action=api_key_required`, so
   /validate/check requires the service credential: the validate JWT from step 1, sent raw (no
   "Bearer") in the `Authorization` header.
4. Prints one line of JSON (also written to DIR/peer.json) and serves until SIGTERM or SIGINT,
   then stops the server and removes DIR if it made it. Everything else goes to DIR/*.log.

Without --dir it makes a temporary directory; give --dir (inside a directory the test removes) when
the test might be SIGKILLed, since then nothing here runs to remove it.
"""

import argparse
import base64
import contextlib
import faulthandler
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

START = time.monotonic()


class Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="working directory (created if missing; kept at exit)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--seed", help="the TOTP seed in hex (default: 20 random bytes)")
    p.add_argument("--realm", default="concierge")
    p.add_argument("--user", default="alice")
    p.add_argument("--email", help="the user's email (default: USER@example.com)")
    p.add_argument("--extra-user", action="append", default=[], metavar="NAME",
                   help="one more user with a TOTP token (a random seed), e.g. one per test")
    p.add_argument("--no-api-key", action="store_true",
                   help="leave /validate/check open (no api_key_required policy)")
    p.add_argument("--verbose", action="store_true", help="log each HTTP request to stderr")
    args = p.parse_args()
    args.email = args.email or f"{args.user}@example.com"
    if args.seed is None:
        args.seed = secrets.token_hex(20)
    try:
        if len(bytes.fromhex(args.seed)) < 10:
            p.error("--seed: at least 10 bytes")
    except ValueError:
        p.error("--seed: hex, please")
    args.seed = args.seed.lower()
    names = [args.user] + args.extra_user
    for name in names:
        if not name.isalnum() or not name.islower():
            p.error(f"{name!r}: lower-case letters and digits, please")
    if "bob" in names:
        p.error("bob is the user without a token")
    if len(set(names)) != len(names):
        p.error("each user once, please")
    return args


def write_config(d, base_url):
    q = repr
    cfg = "\n".join([
        "# Written by tests/peers/privacyidea/pi_server.py",
        f"SQLALCHEMY_DATABASE_URI = {q('sqlite:///' + os.path.join(d, 'privacyidea.sqlite'))}",
        f"SECRET_KEY = {q(secrets.token_hex(32))}",
        f"PI_PEPPER = {q(secrets.token_hex(16))}",
        f"PI_ENCFILE = {q(os.path.join(d, 'enckey'))}",
        f"PI_AUDIT_KEY_PRIVATE = {q(os.path.join(d, 'audit-private.pem'))}",
        f"PI_AUDIT_KEY_PUBLIC = {q(os.path.join(d, 'audit-public.pem'))}",
        f"PI_LOGFILE = {q(os.path.join(d, 'privacyidea.log'))}",
        "PI_LOGLEVEL = 20",
        # No pool limit: a request holds one connection and privacyIDEA's metrics writer takes a
        # second at teardown, so under the threaded server a bounded pool (5 + 10 overflow)
        # deadlocks for its 30 s timeout from about 8 concurrent requests on. SQLite connections
        # are cheap; writers wait for each other up to 30 s (SQLite's busy timeout).
        "from sqlalchemy.pool import NullPool",
        "SQLALCHEMY_ENGINE_OPTIONS = {'poolclass': NullPool, 'connect_args': {'timeout': 30}}",
        f"PI_NODE_UUID = {q(str(uuid.uuid4()))}",
        f"PI_BASE_URL = {q(base_url)}",
        "",
    ])
    path = os.path.join(d, "pi.cfg")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(cfg)
    return path


def pi_manage(log, *args):
    """Runs one pi-manage command in this interpreter; returns what it printed on stdout."""
    from privacyidea.cli.pimanage import cli

    out_path = log.name + ".tmp"
    with open(out_path, "w+") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(log):
        code = cli.main(list(args), prog_name="pi-manage", standalone_mode=False)
        out.seek(0)
        text = out.read()
    os.unlink(out_path)
    shown = " ".join("***" if i > 0 and args[i - 1] == "-p" else a for i, a in enumerate(args))
    log.write(f"$ pi-manage {shown}  # at {(time.monotonic() - START) * 1000:.0f} ms\n{text}")
    log.flush()
    if code not in (None, 0):
        raise RuntimeError(f"pi-manage {args[0]} {args[1]} failed ({code}); see {log.name}")
    return text


class Api:
    def __init__(self, base_url):
        self.base_url = base_url
        self.token = None

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", self.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or answer.get("result", {}).get("status") is not True:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {text[:500]!r}")
        return answer["result"].get("value")


def provision(api, d, args, admin_password):
    api.token = api.call("POST", "/auth", {"username": "admin", "password": admin_password})["token"]
    # (name, email, seed hex): the main user first, then the extra users.
    people = [(args.user, args.email, args.seed)] + [
        (name, f"{name}@example.com", secrets.token_hex(20)) for name in args.extra_user]
    users = os.path.join(d, "users.passwd")
    with open(users, "w") as f:
        # name:password:uid:gid:"Given Surname,room,office phone,home phone,email":home:shell
        for uid, (name, email, _) in enumerate(people + [("bob", "bob@example.com", None)], start=1001):
            f.write(f"{name}:x:{uid}:{uid}:{name.capitalize()} Example,,,,{email}:/nonexistent:/bin/false\n")
    api.call("POST", "/resolver/users", {"type": "passwdresolver", "fileName": users})
    api.call("POST", f"/realm/{args.realm}", {"resolvers": "users"})
    api.call("POST", f"/defaultrealm/{args.realm}")
    enrolled = []
    for name, email, seed in people:
        serial = f"TOTP-{name.upper()}"
        api.call("POST", "/token/init", {
            "type": "totp", "serial": serial, "otpkey": seed, "genkey": 0, "otplen": 6,
            "hashlib": "sha1", "timeStep": 30, "user": name, "realm": args.realm,
            "description": "tests/peers/privacyidea",
        })
        enrolled.append({"user": name, "email": email, "serial": serial, "seed_hex": seed,
                         "seed_base32": base64.b32encode(bytes.fromhex(seed)).decode().rstrip("=")})
    if not args.no_api_key:
        api.call("POST", "/policy/concierge-service-credential", {
            "scope": "authorization", "action": "api_key_required", "active": True,
            "description": "/validate/check requires the validate JWT in Authorization",
        })
    return enrolled


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: every thread's stack on stderr
    args = parse_args()
    own_dir = args.dir is None
    d = tempfile.mkdtemp(prefix="concierge-privacyidea-") if own_dir else os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    server = None
    serving = None
    try:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Handler(WSGIRequestHandler):
            def log_request(self, *a, **kw):
                if args.verbose:
                    super().log_request(*a, **kw)

        app = {}
        # Bound now (port 0: the kernel picks a free one); requests wait until serve_forever.
        server = make_server("127.0.0.1", args.port, lambda e, s: app["wsgi"](e, s),
                             threaded=True, request_handler=Handler)
        base_url = f"http://127.0.0.1:{server.server_port}"

        cfg = write_config(d, base_url)
        os.environ["PRIVACYIDEA_CONFIGFILE"] = cfg
        admin_password = secrets.token_urlsafe(18)
        with open(os.path.join(d, "setup.log"), "a") as log:
            pi_manage(log, "setup", "create_enckey")
            pi_manage(log, "setup", "create_audit_keys")
            pi_manage(log, "setup", "create_tables")
            pi_manage(log, "admin", "add", "admin", "-p", admin_password)
            out = pi_manage(log, "api", "createtoken", "-r", "validate", "-u", "concierge", "-d", "30")
        # alembic's logging config (create_tables) hung handlers on the root logger that write to
        # the redirected streams above, now closed.
        for logger in [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]:
            for h in list(logger.handlers):
                if getattr(getattr(h, "stream", None), "closed", False):
                    logger.removeHandler(h)
        credential = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Auth-Token:"))
        cred_file = os.path.join(d, "service-credential")
        with open(os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(credential)

        from privacyidea.app import create_app

        app["wsgi"] = create_app(config_name="production", config_file=cfg, silent=True)
        serving = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
        serving.start()

        api = Api(base_url)
        api.call("GET", "/healthz/")
        main_user, *extra_users = provision(api, d, args, admin_password)

        info = {
            "base_url": base_url,
            "port": server.server_port,
            "dir": d,
            "validate_url": base_url + "/validate/check",
            "credential": None if args.no_api_key else credential,
            "credential_file": None if args.no_api_key else cred_file,
            "credential_header": "Authorization",
            "realm": args.realm,
            **main_user,
            "totp": {"digits": 6, "period": 30, "algorithm": "SHA1"},
            "extra_users": extra_users,
            "user_without_token": "bob",
            "admin_user": "admin",
            "admin_password": admin_password,
            "pid": os.getpid(),
            "startup_ms": round((time.monotonic() - START) * 1000),
            "startup_cpu_ms": round(time.process_time() * 1000),
        }
        line = json.dumps(info)
        with open(os.path.join(d, "peer.json"), "w") as f:
            f.write(line + "\n")
        print(line, flush=True)
        while True:
            signal.pause()
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if server is not None:
            if serving is not None:
                server.shutdown()
            server.server_close()
        if own_dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
