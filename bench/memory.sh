#!/usr/bin/env bash
# Resident memory of one broker process: idle, after a burst of password logins, and during and
# after a mixed soak (password logins plus client_credentials tokens and introspection).
#
#   bench/memory.sh [soak seconds, default 300] [login connections in the burst, default 16]
#   BIN=/path/to/concierge bench/memory.sh ...   # measure a given binary (no build)
#
# Prints VmRSS and VmHWM (peak) of the broker from /proc/PID/status at each point, and its
# thread count. Release build, SQLite, default workers and pools, nothing pinned; login rate
# limits off (one client address), lockout and audit trail on. Each password login is argon2id
# (m=19456 KiB, t=2, p=1), so a thread that hashes holds a 19 MiB buffer while it does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SOAK="${1:-300}"
BURST_CONNS="${2:-16}"
BURST_SECS=20
SECRET="bench-secret-bench-secret-bench-secret"
PASSWORD="bench-password"

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=(); [[ $EUID -ne 0 ]] && SUDO=(sudo)
need wrk || "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2

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
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# "VmRSS VmHWM threads" of the broker, in KiB.
mem() { awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} /^Threads:/ {t=$2} END {print r, h, t}' "/proc/$SERVER/status"; }
row() { # row LABEL
  local r h t
  read -r r h t < <(mem)
  echo "| $1 | $(mib "$r") | $(mib "$h") | $t |"
}

PORT="$(free_port)"
HASH="$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)"
KEK="$(head -c 32 /dev/urandom | base64 -w0)"
cat > "$TMP/concierge.toml" <<TOML
data_dir = "$TMP/data"
[server]
bind = "127.0.0.1:$PORT"
public_url = "http://127.0.0.1:$PORT"
[database]
url = "sqlite://$TMP/data/concierge.db"
[log]
level = "warn"
[rate_limit]
login_per_ip = "off"
journey_per_ip = "off"
login_per_account = "off"
token_per_client = "off"
[provider]
key_encryption_key = "$KEK"
[[clients]]
id = "cc"
channel = "api"
secret_sha256 = "$HASH"
grant_types = ["client_credentials"]
scopes = ["api:read"]
signing_alg = "ES256"
TOML
"$BIN" migrate --config "$TMP/concierge.toml" >/dev/null
: > "$TMP/users.txt"
for i in $(seq 1 16); do echo "mem-$i@bench.invalid" >> "$TMP/users.txt"; done
xargs -P 2 -I{} sh -c 'printf "%s\n" "$1" | "$2" users add "$3" --config "$4" >/dev/null' \
  _ "$PASSWORD" "$BIN" {} "$TMP/concierge.toml" < "$TMP/users.txt"
"$BIN" serve --config "$TMP/concierge.toml" 2>"$TMP/concierge.log" &
SERVER=$!
PIDS+=("$SERVER")
BASE="http://127.0.0.1:$PORT"
wait_up "$BASE/healthz"
sleep 2

echo "| broker process (${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}, $(nproc) cores) | VmRSS (MiB) | VmHWM (MiB) | threads |"
echo "|---|---|---|---|"
row "idle after start"

python3 bench/logins.py "$BURST_SECS" "$BURST_CONNS" "$PASSWORD" "$TMP/users.txt" "$BASE" > "$TMP/burst.json"
LOGINS="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(i["logins_total"] for i in d["instances"]), sum(i["errors"] for i in d["instances"]))' "$TMP/burst.json")"
row "after a login burst ($BURST_CONNS connections, ${BURST_SECS}s: $LOGINS logins / errors)"
sleep 15
row "15 s after the burst"

# The soak: logins on 8 connections, client_credentials tokens on 8 more (wrk, one thread).
TOKEN="$(curl -fs -H "Authorization: $(basic cc)" -d 'grant_type=client_credentials&scope=api%3Aread' "$BASE/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
python3 bench/logins.py "$SOAK" 8 "$PASSWORD" "$TMP/users.txt" "$BASE" > "$TMP/soak.json" &
LOGIN_PID=$!
BODY="grant_type=client_credentials&scope=api%3Aread" AUTH="$(basic cc)" \
  wrk -t1 -c4 -d"${SOAK}s" -s bench/wrk/post.lua "$BASE/token" > "$TMP/soak-token.wrk" 2>&1 &
WRK1=$!
BODY="token=$TOKEN" AUTH="$(basic cc)" \
  wrk -t1 -c4 -d"${SOAK}s" -s bench/wrk/post.lua "$BASE/introspect" > "$TMP/soak-introspect.wrk" 2>&1 &
WRK2=$!
step=$(( SOAK / 5 > 0 ? SOAK / 5 : 1 ))
for i in 1 2 3 4; do
  sleep "$step"
  row "soak, after $(( i * step )) s"
done
wait "$LOGIN_PID" "$WRK1" "$WRK2"
LOGINS="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(i["logins_total"] for i in d["instances"]), sum(i["errors"] for i in d["instances"]))' "$TMP/soak.json")"
TOKENS="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$TMP/soak-token.wrk")"
INTRO="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$TMP/soak-introspect.wrk")"
row "end of the ${SOAK}s soak ($LOGINS logins / errors; $TOKENS tokens/s, $INTRO introspections/s)"
sleep 15
row "15 s after the soak"
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
