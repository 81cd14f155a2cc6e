# Shared parts of the benchmarks (bench/provider.sh, bench/compare.sh, bench/roundtrips.sh). Sourced,
# not run: the caller sets `set -euo pipefail`, ROOT (the repository) and cds there, and sets
# TMP (a temp dir it removes), DUR (seconds per wrk run) and CONNS (wrk connections).
#
# Pinning: the server under test runs on core 0 with all its threads (`taskset -a -c 0`), wrk
# (one thread) on core 1. Concierge: release build, SQLite, one HTTP worker.

BENCH_SECRET="bench-secret-bench-secret-bench-secret"
# bench/login_flow.py is imported by the scripts' Python: no __pycache__ left in bench/.
export PYTHONDONTWRITEBYTECODE=1
BENCH_EMAIL="bench@example.com"
BENCH_PASSWORD="bench-password"
BENCH_REDIRECT_URI="http://127.0.0.1:9/cb"

bench_need() { command -v "$1" >/dev/null 2>&1; }

# Installs wrk and taskset if missing; refuses a machine with one core.
bench_tools() {
  local sudo=()
  [[ $EUID -ne 0 ]] && sudo=(sudo)
  bench_need wrk || "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2
  bench_need taskset || "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q util-linux >&2
  [[ $(nproc) -ge 2 ]] || { echo "needs 2 cores (server on one, load on the other)" >&2; exit 1; }
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
basic() { printf 'Basic %s' "$(printf '%s:%s' "$1" "$BENCH_SECRET" | base64 -w0)"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}'; }
errors() { awk '/Non-2xx or 3xx responses:/ {n=$5} /Socket errors/ {s=$0} END {print (n?n:0)}'; }
load() { # load NAME URL SCRIPT -> "rps errors"; raw wrk output in $TMP/NAME.wrk
  local out; out="$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "bench/wrk/$3" "$2" 2>&1)"
  echo "$out" > "$TMP/$1.wrk"
  echo "$(echo "$out" | rps) $(echo "$out" | errors)"
}

# concierge_start BIN DIR: a fresh Concierge in DIR (config, SQLite database, the bench user),
# serving on a free port pinned to core 0. Sets CONCIERGE_PID and BASE. Clients: `cc-es256` and
# `cc-rs256` (client_credentials, api channel), `web` (code flow to BENCH_REDIRECT_URI); all with
# the secret BENCH_SECRET. CONCIERGE_EXTRA_TOML, when set, is appended to the configuration.
concierge_start() {
  local bin="$1" dir="$2" port hash kek
  mkdir -p "$dir"
  port="$(free_port)"
  hash="$(printf '%s' "$BENCH_SECRET" | sha256sum | cut -d' ' -f1)"
  kek="$(head -c 32 /dev/urandom | base64 -w0)"
  cat > "$dir/concierge.toml" <<TOML
data_dir = "$dir/data"
[server]
bind = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
workers = 1
[database]
url = "sqlite://$dir/data/concierge.db"
[log]
level = "${LOG_LEVEL:-warn}"
[session]
idle_timeout = "12h"
[rate_limit]
# The load generator is one client hammering one endpoint: the per-client limit would be measured.
token_per_client = "off"
# Every login of the load starts a journey from the one loopback address.
journey_per_ip = "off"
[provider]
key_encryption_key = "$kek"
[[clients]]
id = "cc-es256"
channel = "api"
secret_sha256 = "$hash"
grant_types = ["client_credentials"]
scopes = ["api:read"]
signing_alg = "ES256"
[[clients]]
id = "cc-rs256"
channel = "api"
secret_sha256 = "$hash"
grant_types = ["client_credentials"]
scopes = ["api:read"]
signing_alg = "RS256"
[[clients]]
id = "web"
secret_sha256 = "$hash"
redirect_uris = ["$BENCH_REDIRECT_URI"]
signing_alg = "ES256"
${CONCIERGE_EXTRA_TOML:-}
TOML
  "$bin" migrate --config "$dir/concierge.toml" >/dev/null
  printf '%s\n' "$BENCH_PASSWORD" | "$bin" users add "$BENCH_EMAIL" --config "$dir/concierge.toml" >/dev/null
  taskset -a -c 0 "$bin" serve --config "$dir/concierge.toml" 2>"$dir/concierge.log" &
  CONCIERGE_PID=$!
  PIDS+=("$CONCIERGE_PID")
  BASE="http://127.0.0.1:$port"
  wait_up "$BASE/healthz"
}

# concierge_stop: stops the server concierge_start started.
concierge_stop() {
  kill "$CONCIERGE_PID" 2>/dev/null || true
  wait "$CONCIERGE_PID" 2>/dev/null || true
  local p keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$CONCIERGE_PID" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# concierge_sign_in DIR: the bench user signs in at BASE as a browser does (bench/login_flow.py:
# /authorize for `web`, the login page's form with whatever hidden fields it carries, the
# redirects to the code), then authorizes once with the session alone. Writes DIR/cookie.txt
# and DIR/authorize.txt (the path of that authorize request).
concierge_sign_in() {
  python3 bench/login_flow.py "$BASE" "$BENCH_EMAIL" "$BENCH_PASSWORD" web "$BENCH_REDIRECT_URI" "$1"
}
