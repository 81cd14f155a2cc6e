#!/usr/bin/env bash
# MFA plugin host (issue #5): what one second-factor verify costs through the wasmtime host, and a
# TOTP verify end to end with its encrypted state on SQLite and PostgreSQL
# (broker/benches/mfa_verify.rs says exactly what each row times).
#
#   bench/mfa.sh
#
# Builds the plugins with plugins/build.sh if plugins/dist has none, starts a private PostgreSQL
# 15+ on a free port of 127.0.0.1 in a temp dir (stock settings; skipped with NO_PG=1 or when
# CONCIERGE_BENCH_PG_URL names a database to use instead), then runs the bench pinned to one core
# (`taskset -c $CORE`, default 1; its wasmtime epoch thread shares that core). PostgreSQL is not
# pinned. Prints a Markdown table on stdout.
#
# Environment: CARGO_TARGET_DIR, CORE, NO_PG=1, CONCIERGE_BENCH_PG_URL, CONCIERGE_BENCH_PLUGIN_DIR
# (default plugins/dist), CONCIERGE_BENCH_HOST_ITERS (100000), CONCIERGE_BENCH_DB_ITERS (20000),
# KEEP=1 (keep the temp dir).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CORE="${CORE:-1}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup"
command -v taskset >/dev/null 2>&1 || die "taskset not found (Debian package util-linux)"

PLUGIN_DIR="${CONCIERGE_BENCH_PLUGIN_DIR:-$ROOT/plugins/dist}"
if [[ ! -f "$PLUGIN_DIR/totp.wasm" || ! -f "$PLUGIN_DIR/test/test-factor-v1.wasm" ]]; then
  [[ -x plugins/build.sh ]] || die "no plugins in $PLUGIN_DIR and no plugins/build.sh: set CONCIERGE_BENCH_PLUGIN_DIR"
  log "building the plugins (plugins/build.sh)"
  plugins/build.sh >/dev/null
  PLUGIN_DIR="$ROOT/plugins/dist"
fi
export CONCIERGE_BENCH_PLUGIN_DIR="$PLUGIN_DIR"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/concierge-mfa.XXXXXX")"
chmod 755 "$TMP"
PG_RUN=()
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
cleanup() {
  if [[ -f "$TMP/pg/data/postmaster.pid" ]]; then
    (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m fast -w stop) >/dev/null 2>&1 || true
  fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- a private PostgreSQL (as in bench/sessions.sh; PostgreSQL refuses to run as root) ----------
if [[ -z "${CONCIERGE_BENCH_PG_URL:-}" && -z "${NO_PG:-}" ]]; then
  [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL server binaries not found (install postgresql, or NO_PG=1)"
  command -v python3 >/dev/null 2>&1 || die "python3 not found (picks a free port)"
  free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
  mkdir -m 700 "$TMP/pg"
  if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$TMP/pg"; PG_RUN=(runuser -u postgres --); fi
  (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$TMP/pg/data" -A trust -U postgres -E UTF8 --no-locale) \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
  PG_PORT=""
  for _ in 1 2 3 4 5; do
    port="$(free_port)"
    if (cd "$TMP/pg" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$TMP/pg" start) >/dev/null 2>&1; then
      PG_PORT="$port"; break
    fi
  done
  [[ -n "$PG_PORT" ]] || { tail -n 20 "$TMP/pg/server.log" >&2; die "could not start PostgreSQL"; }
  command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE DATABASE concierge_bench"
  export CONCIERGE_BENCH_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/concierge_bench"
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($TMP/pg)"
fi

log "building the bench (release)"
cargo bench --locked -p concierge --bench mfa_verify --no-run >&2
LOAD="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD; other work on this machine skews the tail (p99) figures"
fi
log "running pinned to core $CORE"
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr); load average before the run $LOAD; plugins from $PLUGIN_DIR."
echo
taskset -c "$CORE" cargo bench --locked -p concierge --bench mfa_verify
