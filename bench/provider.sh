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
PIDS=()
# shellcheck source=bench/lib.sh
source bench/lib.sh
SECRET="$BENCH_SECRET"

bench_tools
[[ -d bench/node_modules/oidc-provider ]] || (cd bench && npm install --no-audit --no-fund >&2)

if [[ -z "${BIN:-}" ]]; then
  cargo build --release --locked -p concierge >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/concierge"
fi

TMP="$(mktemp -d)"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n "${KEEP:-}" ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT

# --- Concierge --------------------------------------------------------------------------------
concierge_start "$BIN" "$TMP/concierge"
# Sign in once as a browser does (bench/login_flow.py), then collect refresh tokens (one per
# connection) and an access token with that session.
concierge_sign_in "$TMP"
python3 - "$BASE" "$SECRET" "$((CONNS + 8))" "$TMP" <<'PY'
import base64, json, sys, urllib.parse
sys.path.insert(0, "bench")
from login_flow import Browser
base, secret, n, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cookie = open(f"{tmp}/cookie.txt").read()
authorize = open(f"{tmp}/authorize.txt").read()
b = Browser(base)
auth = "Basic " + base64.b64encode(f"web:{secret}".encode()).decode()
refresh, access = [], None
for _ in range(n):
    _, h, _ = b.call(authorize, headers={"Cookie": cookie})
    loc = h.get("Location") or h.get("location")
    assert loc, h
    code = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb"}).encode()
    _, _, t = b.call("/token", body, {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    t = json.loads(t); refresh.append(t["refresh_token"]); access = t["access_token"]
open(f"{tmp}/refresh.txt", "w").write("\n".join(refresh) + "\n")
open(f"{tmp}/access.txt", "w").write(access)
PY

declare -A R E
read -r R[c_es] E[c_es] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic cc-es256)" load c_es "$BASE/token" post.lua)
read -r R[c_rs] E[c_rs] < <(BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic cc-rs256)" load c_rs "$BASE/token" post.lua)
read -r R[c_int] E[c_int] < <(BODY="token=$(cat "$TMP/access.txt")" AUTH="$(basic web)" load c_int "$BASE/introspect" post.lua)
read -r R[c_ref] E[c_ref] < <(TOKENS="$TMP/refresh.txt" AUTH="$(basic web)" load c_ref "$BASE/token" refresh.lua)
read -r R[c_auth] E[c_auth] < <(COOKIE="$(cat "$TMP/cookie.txt")" load c_auth "$BASE$(cat "$TMP/authorize.txt")" get.lua)
concierge_stop

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
