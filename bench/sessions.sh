#!/usr/bin/env bash
# Sessions at scale (issue #6), on a private PostgreSQL started here:
#  1. 1,000,000 sessions of 100,000 users: session-check latency, last-seen flushes, the sweep,
#     stored bytes per session (cargo bench --bench sessions_1m);
#  2. password logins per second across two `concierge serve` processes (release build) on that
#     same database, and the database writes each login costs, without and with a
#     concurrent-session limit.
#
#   bench/sessions.sh [seconds per login run, default 30] [connections per instance, default 4]
#
# Installs what it needs on Debian (postgresql, python3, curl), starts its own PostgreSQL 15+ on a
# free port of 127.0.0.1 in a temp dir (stock settings plus pg_stat_statements), and prints a
# Markdown section ready for BENCHMARKS.md. Nothing is pinned: PostgreSQL, the bench, both
# brokers and the load driver share the machine's cores. Environment: CARGO_TARGET_DIR,
# KEEP=1 (keep the temp dir with logs and raw figures).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DUR="${1:-30}"
CONNS="${2:-4}"
LOGIN_USERS=32
PASSWORD="bench-password-1"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
SUDO=(); [[ $EUID -ne 0 ]] && SUDO=(sudo)
missing=()
for p in postgresql python3 curl; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/concierge-sessions.XXXXXX")"
chmod 755 "$TMP"
PIDS=()
PG_RUN=()
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -f "$TMP/pg/data/postmaster.pid" ]]; then
    (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m fast -w stop) >/dev/null 2>&1 || true
  fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; die "not up: $1"; }

LOAD="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD before starting; other work on this machine skews the figures"
fi

# --- a private PostgreSQL (as in scripts/test.sh; PostgreSQL refuses to run as root) --------------
mkdir -m 700 "$TMP/pg"
if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$TMP/pg"; PG_RUN=(runuser -u postgres --); fi
(cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$TMP/pg/data" -A trust -U postgres -E UTF8 --no-locale) \
  >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
PG_PORT=""
for _ in 1 2 3 4 5; do
  port="$(free_port)"
  if (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$TMP/pg \
          -c shared_preload_libraries=pg_stat_statements" start) >/dev/null 2>&1; then
    PG_PORT="$port"; break
  fi
done
[[ -n "$PG_PORT" ]] || { tail -n 20 "$TMP/pg/server.log" >&2; die "could not start PostgreSQL"; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE concierge_bench"
psql -d concierge_bench -c "CREATE EXTENSION pg_stat_statements"
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/concierge_bench"
PG_VERSION="$(psql -d postgres -Atc "SHOW server_version" | cut -d' ' -f1)"
log "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT ($TMP/pg)"

# --- 1. one million sessions ---------------------------------------------------------------------
log "building (release)"
cargo build --release --locked -p concierge >&2
cargo bench --locked -p concierge --bench sessions_1m --no-run >&2
# A copy: a rebuild in the shared target dir during the run cannot swap the binary under test.
cp "${CARGO_TARGET_DIR:-target}/release/concierge" "$TMP/concierge"
BIN="$TMP/concierge"
log "1,000,000 sessions: fill, checks, flushes, sweep"
CONCIERGE_BENCH_PG_URL="$PG_URL" cargo bench --locked -p concierge --bench sessions_1m >"$TMP/checks.md"

# --- 2. logins across two broker processes on that database ---------------------------------------
KEK="$(head -c 32 /dev/urandom | base64 -w0)"
PORT_A="$(free_port)"
PORT_B="$(free_port)"
write_config() { # write_config NAME PORT MAX_PER_USER
  cat >"$TMP/$1.toml" <<TOML
data_dir = "$TMP/data-$1"
[server]
bind = "127.0.0.1:$2"
# Both instances stand for one service behind a load balancer: one public URL.
public_url = "http://127.0.0.1:$PORT_A"
[database]
url = "$PG_URL"
[log]
level = "warn"
[session]
max_per_user = $3
[rate_limit]
# The load comes from one address and $LOGIN_USERS accounts: the in-memory rates would refuse
# it. The lockout (one read per login, and a delete on success, in the database) stays on.
login_per_ip = "off"
journey_per_ip = "off"
login_per_account = "off"
[provider]
key_encryption_key = "$KEK"
TOML
}

# The database's counters, as "xact_commit tuples_written wal_bytes".
db_counters() {
  psql -d concierge_bench -Atc "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted,
      pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
    FROM pg_stat_database WHERE datname = current_database()" | tr '|' ' '
}

# CPU time in clock ticks: of one process; of the whole private PostgreSQL (the postmaster, its
# live children, and the children it has reaped, i.e. the brokers' connections once closed); of
# the machine as "busy total" over all cores.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
  local pm c sum
  pm="$(head -n 1 "$TMP/pg/data/postmaster.pid")"
  sum="$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")"
  for c in $(pgrep -P "$pm"); do sum=$((sum + $(cpu_ticks "$c"))); done
  echo "$sum"
}
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }

login_run() { # login_run NAME MAX_PER_USER
  local name="$1" limit="$2" i
  write_config "$name-a" "$PORT_A" "$limit"
  write_config "$name-b" "$PORT_B" "$limit"
  "$BIN" migrate --config "$TMP/$name-a.toml" >/dev/null
  log "run '$name' (session.max_per_user = $limit): adding $LOGIN_USERS users"
  : >"$TMP/$name-users.txt"
  for i in $(seq 1 "$LOGIN_USERS"); do
    echo "login-$name-$i@bench.invalid" >>"$TMP/$name-users.txt"
  done
  # Two at a time: each `users add` hashes its password with argon2id.
  xargs -P 2 -I{} sh -c 'printf "%s\n" "$1" | "$2" users add "$3" --config "$4" >/dev/null' \
    _ "$PASSWORD" "$BIN" {} "$TMP/$name-a.toml" <"$TMP/$name-users.txt"
  # Counters before the servers start and after they stopped: by then every server process has
  # reported its statistics (PostgreSQL 15 reports them lazily while a connection lives).
  psql -d concierge_bench -Atc "SELECT pg_stat_statements_reset()" >/dev/null
  read -r X0 T0 W0 < <(db_counters)
  read -r B0 A0 < <(machine_ticks)
  P0="$(pg_ticks)"
  "$BIN" serve --config "$TMP/$name-a.toml" 2>"$TMP/$name-a.log" &
  PIDS+=($!)
  "$BIN" serve --config "$TMP/$name-b.toml" 2>"$TMP/$name-b.log" &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$PORT_A/healthz"
  wait_up "http://127.0.0.1:$PORT_B/healthz"
  log "run '$name': $CONNS connections per instance for ${DUR}s"
  python3 bench/logins.py "$DUR" "$CONNS" "$PASSWORD" "$TMP/$name-users.txt" \
    "http://127.0.0.1:$PORT_A" "http://127.0.0.1:$PORT_B" >"$TMP/$name.json"
  local cpu_a cpu_b
  cpu_a="$(cpu_ticks "${PIDS[0]}")"
  cpu_b="$(cpu_ticks "${PIDS[1]}")"
  for i in "${PIDS[@]}"; do kill -TERM "$i" 2>/dev/null || true; done
  for i in "${PIDS[@]}"; do wait "$i" 2>/dev/null || true; done
  PIDS=()
  sleep 1
  read -r B1 A1 < <(machine_ticks)
  P1="$(pg_ticks)"
  read -r X1 T1 W1 < <(db_counters)
  psql -d concierge_bench -c "COPY (
      SELECT calls, rows, regexp_replace(query, '\s+', ' ', 'g') AS query
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY calls DESC) TO STDOUT WITH CSV HEADER" >"$TMP/$name-statements.csv"
  printf '{"limit": %s, "xacts": %s, "tuples": %s, "wal": %s, "cpu_ticks": [%s, %s], "clk_tck": %s,
    "pg_ticks": %s, "machine_busy_ticks": %s, "machine_all_ticks": %s, "cores": %s}\n' \
    "$limit" "$((X1 - X0))" "$((T1 - T0))" "$((W1 - W0))" "$cpu_a" "$cpu_b" "$(getconf CLK_TCK)" \
    "$((P1 - P0))" "$((B1 - B0))" "$((A1 - A0))" "$(nproc)" >"$TMP/$name-db.json"
  log "run '$name': $(cat "$TMP/$name.json")"
}
login_run nolimit 0
login_run limit3 3

# --- the section for BENCHMARKS.md ---------------------------------------------------------------
CPU="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
MEM="$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
OS="$(. /etc/os-release && echo "$PRETTY_NAME")"
SHARED_BUFFERS="$(psql -d postgres -Atc "SHOW shared_buffers")"
login_tables() {
  python3 - "$TMP" nolimit limit3 <<'PY'
import csv, json, sys
tmp, names = sys.argv[1], sys.argv[2:]
runs = []
for n in names:
    run, db = json.load(open(f"{tmp}/{n}.json")), json.load(open(f"{tmp}/{n}-db.json"))
    calls = {"SELECT": 0, "INSERT": 0, "UPDATE": 0, "DELETE": 0}
    for r in csv.DictReader(open(f"{tmp}/{n}-statements.csv")):
        verb = r["query"].lstrip().split(" ", 1)[0].upper()
        if verb in calls:
            calls[verb] += int(r["calls"])
    runs.append((run, db, calls))
label = lambda db: "0 (no limit, default)" if db["limit"] == 0 else f"{db['limit']} (oldest session ends)"
print("| session.max_per_user | logins/s A / B | **total logins/s** | latency p50 / p99 A; B (ms) "
      "| errors | broker CPU per login A / B (ms) | cores busy in the window | CPU from start to stop (cores): brokers / PostgreSQL / driver / other processes | session from A valid on B |")
print("|---|---|---|---|---|---|---|---|---|")
others = []
for run, db, _ in runs:
    a, b = run["instances"]
    tck = db["clk_tck"]
    cpu = [t * 1000 / tck / max(i["logins_total"], 1) for t, i in zip(db["cpu_ticks"], run["instances"])]
    span = db["machine_all_ticks"] / db["cores"] / tck  # seconds of wall time
    brokers, pg = sum(db["cpu_ticks"]) / tck / span, db["pg_ticks"] / tck / span
    driver = run["driver_cpu_seconds"] / span
    other = max(db["machine_busy_ticks"] / tck / span - brokers - pg - driver, 0)
    others.append(other)
    print(f"| {label(db)} | {a['per_second']:.1f} / {b['per_second']:.1f} | **{a['per_second'] + b['per_second']:.1f}** "
          f"| {a['p50_ms']:.0f} / {a['p99_ms']:.0f}; {b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {a['errors'] + b['errors']} "
          f"| {cpu[0]:.1f} / {cpu[1]:.1f} | {100 * run['machine_cpu_busy']:.0f}% "
          f"| {brokers:.2f} / {pg:.2f} / {driver:.2f} / {other:.2f} | {'yes' if run['cross_instance_ok'] else 'NO'} |")
if max(others) > 0.1:
    print(f"\n**Other processes used up to {max(others):.2f} cores during these runs: the login rates are low; "
          "re-run on a quiet machine.** (CPU per login is not affected.)")
print()
print("| session.max_per_user | logins counted | write statements per login (insert / update / delete) "
      "| rows written per login | transactions per login (reads included) | SELECTs per login | WAL per login |")
print("|---|---|---|---|---|---|---|")
for run, db, calls in runs:
    logins = sum(i["logins_total"] for i in run["instances"])
    per = lambda x: x / max(logins, 1)
    writes = calls["INSERT"] + calls["UPDATE"] + calls["DELETE"]
    print(f"| {label(db)} | {logins} | **{per(writes):.2f}** ({per(calls['INSERT']):.2f} / {per(calls['UPDATE']):.2f} / "
          f"{per(calls['DELETE']):.2f}) | {per(db['tuples']):.2f} | {per(db['xacts']):.2f} | {per(calls['SELECT']):.2f} "
          f"| {per(db['wal']) / 1024:.1f} KiB |")
PY
}
cat <<MD
## Sessions at scale (issue #6)

\`\`\`sh
bench/sessions.sh $DUR $CONNS   # seconds per login run, connections per instance
\`\`\`

Machine: $(nproc) cores ($CPU), $MEM GiB, $OS, release build.
PostgreSQL $PG_VERSION started by the script with stock settings (shared_buffers $SHARED_BUFFERS,
fsync and synchronous_commit on) plus pg_stat_statements, on TCP loopback. Nothing is pinned:
PostgreSQL, the bench, both brokers and the load driver share the $(nproc) cores.

### 1,000,000 sessions

\`SessionManager::check(cookie)\` from one thread on random sessions (and unknown cookies):
decode, SHA-256, read by primary key, timeouts, in-memory last-seen. The pending last-seen
updates are flushed every \`touch_interval\` as an instance does (not counted in the check times);
then the sweep is timed. Bytes per session: \`pg_total_relation_size('sessions') / count(*)\`.

$(cat "$TMP/checks.md")

### Password logins, two broker processes, one database

Two \`concierge serve\` processes (default workers and pool) on the database above (1,000,000
sessions), same key-encryption key. A login is GET /login then POST /login (argon2id m=19456,
t=2, p=1) answered 303 with a session cookie. Load: bench/logins.py (Python), $CONNS connections
per instance, ${DUR} s, $LOGIN_USERS users round robin; login rate limits off (one client
address), lockout and audit trail on. Database figures are per successful login, counted from
before both servers start to after both stopped (their start-up and background tasks included):
statements from pg_stat_statements, rows written (tup_inserted + tup_updated + tup_deleted) and
transactions (xact_commit) from pg_stat_database, WAL from pg_current_wal_lsn.

$(login_tables)
MD
