#!/usr/bin/env bash
# Database round trips of one sign-in journey, per HTTP request (issue #13: "a full password
# login adds at most one database round trip over today's count").
#
#   bench/roundtrips.sh BIN          # DETAILS=1: also every statement; KEEP=1: keep the temp dir
#
# Starts a private PostgreSQL (as scripts/test.sh does: a temp dir, 127.0.0.1, a free port) that
# logs every statement with its backend and database (`log_min_duration_statement = 0`,
# `log_line_prefix = '%m [%p] %d: '`, no parameter values), runs BIN on it (release or debug:
# counts do not depend on speed) and drives, one request at a time, as a browser does
# (bench/login_flow.py): GET /authorize for client `web` without a session -> the login page ->
# its form posted with whatever hidden fields it carries plus email and password -> the
# redirects -> the code at the app's redirect URI; then one GET /authorize with that session.
# bench/roundtrips.py cuts the log at each request's start, at its answer, and SETTLE seconds
# later, and counts per request (see there): statements, BEGIN/COMMIT, Parse (a prepare: one
# more round trip, the first time a pooled connection runs a statement), and the batched writes
# that land after the answer. Background timers that would touch the database during the run
# are slowed down (sweep 1h, key reload 10m, plugin reload off); the batched writers are sped up
# (audit rows every 200ms, last-seen every 1s) so that each request's batch lands in its own
# window. The table is for the second login (another user, another browser: the pool's
# statement caches are warm, as on a running server); the first is summarised below it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ $# -ge 1 ]] || { sed -n '2,5p' "$0" >&2; exit 2; }
BIN="$(realpath "$1")"
[[ -x $BIN ]] || { echo "not an executable: $BIN" >&2; exit 2; }
SETTLE="${SETTLE:-1.5}"
PIDS=()
# shellcheck source=bench/lib.sh
source bench/lib.sh

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; exit 1; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/concierge-roundtrips.XXXXXX")"
chmod 755 "$TMP"
PG_RUN=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -f "$TMP/pg/data/postmaster.pid" ]]; then
    (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m immediate -w stop) >/dev/null 2>&1 || true
  fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- a private PostgreSQL that logs every statement (it refuses to run as root) ----------------
mkdir -m 700 "$TMP/pg"
if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$TMP/pg"; PG_RUN=(runuser -u postgres --); fi
(cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$TMP/pg/data" -A trust -U postgres -E UTF8 --no-locale --no-sync) \
  >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; exit 1; }
PG_PORT=""
for _ in 1 2 3 4 5; do
  port="$(free_port)"
  if (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$TMP/pg \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
          -c log_min_duration_statement=0 -c log_parameter_max_length=0 \
          -c log_parameter_max_length_on_error=0 -c log_line_prefix='%m [%p] %d: '" \
      start) >/dev/null 2>&1; then
    PG_PORT="$port"; break
  fi
done
[[ -n "$PG_PORT" ]] || { tail -n 20 "$TMP/pg/server.log" >&2; echo "could not start PostgreSQL" >&2; exit 1; }
DB=concierge_rt
command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $DB"
PG_VERSION="$(command psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'SHOW server_version' | cut -d' ' -f1)"

# --- the broker on it ----------------------------------------------------------------------------
PORT="$(free_port)"
HASH="$(printf '%s' "$BENCH_SECRET" | sha256sum | cut -d' ' -f1)"
KEK="$(head -c 32 /dev/urandom | base64 -w0)"
cat > "$TMP/concierge.toml" <<TOML
data_dir = "$TMP/data"
[server]
bind = "127.0.0.1:$PORT"
public_url = "http://127.0.0.1:$PORT"
workers = 1
[database]
url = "postgres://postgres@127.0.0.1:$PG_PORT/$DB"
[log]
level = "warn"
[session]
touch_interval = "1s"
sweep_interval = "1h"
[audit]
flush_interval = "200ms"
[mfa]
reload_interval = "0s"
[provider]
key_encryption_key = "$KEK"
key_reload_interval = "10m"
jwks_max_age = "20m"
[[clients]]
id = "web"
secret_sha256 = "$HASH"
redirect_uris = ["$BENCH_REDIRECT_URI"]
signing_alg = "ES256"
TOML
"$BIN" migrate --config "$TMP/concierge.toml" >/dev/null
for who in first bench; do
  printf '%s\n' "$BENCH_PASSWORD" | "$BIN" users add "$who@example.com" --config "$TMP/concierge.toml" >/dev/null
done
"$BIN" serve --config "$TMP/concierge.toml" 2>"$TMP/concierge.log" &
PIDS+=($!)
BASE="http://127.0.0.1:$PORT"
wait_up "$BASE/healthz"
sleep 1 # the timers' first ticks (they fire at start) are over

BENCH_PASSWORD="$BENCH_PASSWORD" BENCH_REDIRECT_URI="$BENCH_REDIRECT_URI" \
  python3 bench/roundtrips.py "$BASE" "$TMP/pg/server.log" "$DB" "$SETTLE" "$TMP/roundtrips.json" \
  first@example.com "$BENCH_EMAIL"

echo "Database round trips per HTTP request, PostgreSQL $PG_VERSION (\`bench/roundtrips.sh $1\`, binary sha256 $(sha256sum "$BIN" | cut -c1-12)):"
echo
python3 bench/roundtrips.py render "$TMP/roundtrips.json" ${DETAILS:+details}
