#!/usr/bin/env bash
# Provider throughput on one core, side by side with npm oidc-provider (the reference).
#
#   bench/provider.sh [seconds per run, default 10]
#
# The server under test (Concierge, or oidc-provider) is pinned to core 0 with all its threads
# (`taskset -a -c 0`), the load generator (wrk, one thread, 32 connections) to core 1. Concierge
# runs the release build on SQLite with one HTTP worker. Prints a Markdown table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DUR="${1:-10}"
CONNS=32
SECRET="bench-secret-bench-secret-bench-secret"

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=(); [[ $EUID -ne 0 ]] && SUDO=(sudo)
need wrk || "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2
need taskset || "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q util-linux >&2
[[ -d bench/node_modules/oidc-provider ]] || (cd bench && npm install --no-audit --no-fund >&2)
[[ $(nproc) -ge 2 ]] || { echo "needs 2 cores (server on one, load on the other)" >&2; exit 1; }

cargo build --release --locked -p concierge >&2
BIN="${CARGO_TARGET_DIR:-target}/release/concierge"

TMP="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n "${KEEP:-}" ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
basic() { printf 'Basic %s' "$(printf '%s:%s' "$1" "$SECRET" | base64 -w0)"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}'; }
errors() { awk '/Non-2xx or 3xx responses:/ {n=$5} /Socket errors/ {s=$0} END {print (n?n:0)}'; }
load() { # load NAME URL SCRIPT -> "rps errors"
  local out; out="$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "bench/wrk/$3" "$2" 2>&1)"
  echo "$out" > "$TMP/$1.wrk"
  echo "$(echo "$out" | rps) $(echo "$out" | errors)"
}

# --- Concierge --------------------------------------------------------------------------------
PORT="$(free_port)"
HASH="$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)"
KEK="$(head -c 32 /dev/urandom | base64 -w0)"
cat > "$TMP/concierge.toml" <<TOML
data_dir = "$TMP/data"
[server]
bind = "127.0.0.1:$PORT"
public_url = "http://127.0.0.1:$PORT"
workers = 1
[database]
url = "sqlite://$TMP/data/concierge.db"
[log]
level = "${LOG_LEVEL:-warn}"
[session]
idle_timeout = "12h"
[rate_limit]
# The load generator is one client hammering one endpoint: the per-client limit would be measured.
token_per_client = "off"
[provider]
key_encryption_key = "$KEK"
[[clients]]
id = "cc-es256"
channel = "api"
secret_sha256 = "$HASH"
grant_types = ["client_credentials"]
scopes = ["api:read"]
signing_alg = "ES256"
[[clients]]
id = "cc-rs256"
channel = "api"
secret_sha256 = "$HASH"
grant_types = ["client_credentials"]
scopes = ["api:read"]
signing_alg = "RS256"
[[clients]]
id = "web"
secret_sha256 = "$HASH"
redirect_uris = ["http://127.0.0.1:9/cb"]
signing_alg = "ES256"
TOML
"$BIN" migrate --config "$TMP/concierge.toml" >/dev/null
printf 'bench-password\n' | "$BIN" users add bench@example.com --config "$TMP/concierge.toml" >/dev/null
taskset -a -c 0 "$BIN" serve --config "$TMP/concierge.toml" 2>"$TMP/concierge.log" &
PIDS+=($!)
BASE="http://127.0.0.1:$PORT"
wait_up "$BASE/healthz"

# Sign in once, then collect refresh tokens (one per connection) and an access token.
python3 - "$BASE" "$SECRET" "$((CONNS + 8))" "$TMP" <<'PY'
import base64, http.cookiejar, json, re, sys, urllib.parse, urllib.request
base, secret, n, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
jar = http.cookiejar.CookieJar()
op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
def call(url, data=None, headers={}):
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        r = op.open(req); return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
_, _, page = call(base + "/login")
csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
form = urllib.parse.urlencode({"csrf_token": csrf, "email": "bench@example.com", "password": "bench-password"}).encode()
status, _, _ = call(base + "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, status
cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
auth = "Basic " + base64.b64encode(f"web:{secret}".encode()).decode()
authorize = base + "/authorize?" + urllib.parse.urlencode({"response_type": "code", "client_id": "web", "redirect_uri": "http://127.0.0.1:9/cb", "scope": "openid offline_access"})
refresh, access = [], None
for _ in range(n):
    _, h, _ = call(authorize)
    loc = h.get("Location") or h.get("location")
    assert loc, (h, cookie)
    code = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb"}).encode()
    _, _, t = call(base + "/token", body, {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    t = json.loads(t); refresh.append(t["refresh_token"]); access = t["access_token"]
open(f"{tmp}/refresh.txt", "w").write("\n".join(refresh) + "\n")
open(f"{tmp}/access.txt", "w").write(access)
open(f"{tmp}/cookie.txt", "w").write(cookie)
open(f"{tmp}/authorize.txt", "w").write(authorize[len(base):])
PY

declare -A R E
read -r R[c_es] E[c_es] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic cc-es256)" load c_es "$BASE/token" post.lua)
read -r R[c_rs] E[c_rs] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic cc-rs256)" load c_rs "$BASE/token" post.lua)
read -r R[c_ref] E[c_ref] < <(TOKENS="$TMP/refresh.txt" AUTH="$(basic web)" load c_ref "$BASE/token" refresh.lua)
read -r R[c_int] E[c_int] < <(BODY="token=$(cat "$TMP/access.txt")" AUTH="$(basic web)" load c_int "$BASE/introspect" post.lua)
read -r R[c_auth] E[c_auth] < <(COOKIE="$(cat "$TMP/cookie.txt")" load c_auth "$BASE$(cat "$TMP/authorize.txt")" get.lua)
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# --- npm oidc-provider, same machine, same pinning --------------------------------------------
for ALG in ES256 RS256; do
  OPORT="$(free_port)"
  PORT="$OPORT" ALG="$ALG" SECRET="$SECRET" taskset -a -c 0 node bench/oidc-provider-server.mjs >"$TMP/op-$ALG.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$OPORT/.well-known/openid-configuration"
  read -r R[o_$ALG] E[o_$ALG] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic svc)" load "o_$ALG" "http://127.0.0.1:$OPORT/token" post.lua)
  kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
cat <<MD
| operation (one server core, wrk 1 thread / $CONNS connections, ${DUR}s) | Concierge req/s | errors | oidc-provider req/s | ratio |
|---|---|---|---|---|
| client_credentials, JWT access token ES256 | ${R[c_es]} | ${E[c_es]} | ${R[o_ES256]} | $(ratio "${R[c_es]}" "${R[o_ES256]}") |
| client_credentials, JWT access token RS256 | ${R[c_rs]} | ${E[c_rs]} | ${R[o_RS256]} | $(ratio "${R[c_rs]}" "${R[o_RS256]}") |
| refresh_token rotation (SQLite) | ${R[c_ref]} | ${E[c_ref]} | | |
| introspection of an ES256 access token | ${R[c_int]} | ${E[c_int]} | | |
| authorize with a live session -> code (302) | ${R[c_auth]} | ${E[c_auth]} | | |
MD
echo "latency details: rerun with the same command; raw wrk output was in $TMP (removed on exit)" >&2
