#!/usr/bin/env bash
# Provider throughput on one core, side by side with npm oidc-provider (the reference) and with
# the same core's signing limits.
#
#   bench/provider.sh [seconds per run, default 10]
#   BIN=/path/to/concierge bench/provider.sh 2   # a given binary, no build (a smoke test with a
#                                                # debug build; figures only from the release)
#
# The server under test (Concierge, or oidc-provider) is pinned to core 0 with all its threads
# (`taskset -a -c 0`), the load generator (wrk, one thread, 32 connections) to core 1. Concierge
# runs the release build on SQLite with one HTTP worker; oidc-provider its default storage, the
# built-in in-memory adapter (bench/oidc-provider-server.mjs). The five operations run against
# both in the same run: client_credentials ES256 and RS256, introspection, refresh rotation,
# authorize with a live session. `openssl speed -seconds 3 ecdsap256 rsa2048`, pinned to core 0,
# gives the physical limit: signatures per second on that core. Prints a Markdown table.
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

if [[ -z "${BIN:-}" ]]; then
  cargo build --release --locked -p concierge >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/concierge"
fi

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
read -r R[c_int] E[c_int] < <(BODY="token=$(cat "$TMP/access.txt")" AUTH="$(basic web)" load c_int "$BASE/introspect" post.lua)
read -r R[c_ref] E[c_ref] < <(TOKENS="$TMP/refresh.txt" AUTH="$(basic web)" load c_ref "$BASE/token" refresh.lua)
read -r R[c_auth] E[c_auth] < <(COOKIE="$(cat "$TMP/cookie.txt")" load c_auth "$BASE$(cat "$TMP/authorize.txt")" get.lua)
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# --- npm oidc-provider, same machine, same pinning --------------------------------------------
for ALG in ES256 RS256; do
  OPORT="$(free_port)"
  PORT="$OPORT" ALG="$ALG" SECRET="$SECRET" taskset -a -c 0 node bench/oidc-provider-server.mjs >"$TMP/op-$ALG.log" 2>&1 &
  PIDS+=($!)
  OBASE="http://127.0.0.1:$OPORT"
  wait_up "$OBASE/.well-known/openid-configuration"
  read -r R[o_$ALG] E[o_$ALG] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic svc)" load "o_$ALG" "$OBASE/token" post.lua)
  if [[ $ALG == ES256 ]]; then
    # The code-flow client signs ES256, as Concierge's `web` does. Sign in through the
    # interaction (the server signs `bench-user` in at once), then collect tokens as above.
    python3 - "$OBASE" "$SECRET" "$((CONNS + 8))" "$TMP/op" <<'PY'
import base64, http.cookiejar, json, os, sys, urllib.parse, urllib.request
base, secret, n, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.makedirs(tmp, exist_ok=True)
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
def loc(h): return h.get("Location") or h.get("location")
auth = "Basic " + base64.b64encode(f"web:{secret}".encode()).decode()
authorize = base + "/auth?" + urllib.parse.urlencode({"response_type": "code", "client_id": "web", "redirect_uri": "http://127.0.0.1:9/cb", "scope": "openid offline_access"})
url = authorize
for _ in range(6):
    s, h, b = call(url)
    l = loc(h); assert l, (s, h, b)
    if l.startswith("http://127.0.0.1:9/cb"): break
    url = urllib.parse.urljoin(url, l)
else:
    raise SystemExit("oidc-provider: no code after the interaction")
refresh, access = [], None
for _ in range(n):
    s, h, b = call(authorize)
    l = loc(h); assert l and l.startswith("http://127.0.0.1:9/cb"), (s, h, b)
    code = urllib.parse.parse_qs(urllib.parse.urlparse(l).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb"}).encode()
    _, _, t = call(base + "/token", body, {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    t = json.loads(t); assert "refresh_token" in t, t; refresh.append(t["refresh_token"]); access = t["access_token"]
cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
open(f"{tmp}/refresh.txt", "w").write("\n".join(refresh) + "\n")
open(f"{tmp}/access.txt", "w").write(access)
open(f"{tmp}/cookie.txt", "w").write(cookie)
open(f"{tmp}/authorize.txt", "w").write(authorize[len(base):])
PY
    read -r R[o_int] E[o_int] < <(BODY="token=$(cat "$TMP/op/access.txt")" AUTH="$(basic web)" load o_int "$OBASE/token/introspection" post.lua)
    read -r R[o_ref] E[o_ref] < <(TOKENS="$TMP/op/refresh.txt" AUTH="$(basic web)" load o_ref "$OBASE/token" refresh.lua)
    read -r R[o_auth] E[o_auth] < <(COOKIE="$(cat "$TMP/op/cookie.txt")" load o_auth "$OBASE$(cat "$TMP/op/authorize.txt")" get.lua)
  fi
  kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
done

# --- The physical limit: signatures per second on the server's core ---------------------------
SPEED="$(taskset -c 0 openssl speed -seconds 3 ecdsap256 rsa2048 2>/dev/null)"
echo "$SPEED" > "$TMP/openssl-speed.txt"
ES_SIGN="$(echo "$SPEED" | awk '/^ *256 bits ecdsa \(nistp256\)/ {printf "%.0f", $7}')"
ES_VERIFY="$(echo "$SPEED" | awk '/^ *256 bits ecdsa \(nistp256\)/ {printf "%.0f", $8}')"
RS_SIGN="$(echo "$SPEED" | awk '/^rsa 2048 bits/ {printf "%.0f", $6}')"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
share() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
half() { awk -v a="$1" 'BEGIN { printf "%.0f", a / 2 }'; }
cat <<MD
| operation (one server core, wrk 1 thread / $CONNS connections, ${DUR}s) | Concierge req/s | errors | oidc-provider req/s | errors | Concierge / oidc-provider | same-core limit (openssl speed) | Concierge / limit |
|---|---|---|---|---|---|---|---|
| client_credentials, JWT access token ES256 | ${R[c_es]} | ${E[c_es]} | ${R[o_ES256]} | ${E[o_ES256]} | $(ratio "${R[c_es]}" "${R[o_ES256]}") | ${ES_SIGN} (1 ES256 signature) | $(share "${R[c_es]}" "$ES_SIGN") |
| client_credentials, JWT access token RS256 | ${R[c_rs]} | ${E[c_rs]} | ${R[o_RS256]} | ${E[o_RS256]} | $(ratio "${R[c_rs]}" "${R[o_RS256]}") | ${RS_SIGN} (1 RS256 signature) | $(share "${R[c_rs]}" "$RS_SIGN") |
| refresh_token rotation (Concierge: SQLite, JWT access + ID token; oidc-provider: memory, opaque access + ID token) | ${R[c_ref]} | ${E[c_ref]} | ${R[o_ref]} | ${E[o_ref]} | $(ratio "${R[c_ref]}" "${R[o_ref]}") | $(half "$ES_SIGN") (2 ES256 signatures) | $(share "${R[c_ref]}" "$(half "$ES_SIGN")") |
| introspection (Concierge: ES256 JWT, signature cached; oidc-provider: opaque token) | ${R[c_int]} | ${E[c_int]} | ${R[o_int]} | ${E[o_int]} | $(ratio "${R[c_int]}" "${R[o_int]}") | ${ES_VERIFY} (1 ES256 verify, if not cached) | $(share "${R[c_int]}" "$ES_VERIFY") |
| authorize with a live session -> code (Concierge 302, oidc-provider 303) | ${R[c_auth]} | ${E[c_auth]} | ${R[o_auth]} | ${E[o_auth]} | $(ratio "${R[c_auth]}" "${R[o_auth]}") | (no signature) | - |

Same-core signing limits (\`taskset -c 0 openssl speed -seconds 3 ecdsap256 rsa2048\`, $(openssl version | cut -d' ' -f1-2)): ES256 sign ${ES_SIGN}/s, verify ${ES_VERIFY}/s; RS256 (RSA-2048) sign ${RS_SIGN}/s. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
MD
echo "latency details: rerun with KEEP=1; raw wrk output is in $TMP (removed on exit otherwise)" >&2
