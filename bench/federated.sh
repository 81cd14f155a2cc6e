#!/usr/bin/env bash
# Federated logins (issue #4): broker CPU time per login through an OIDC upstream and through a
# SAML upstream, the upstreams' own time excluded, and SAML Response validations per second on
# one core.
#
#   bench/federated.sh [logins per protocol, default 300]
#
# 1. `cargo bench --bench saml_validate` pinned to core 0: one whole validation of a signed
#    Response (RSA-2048, SHA-256) as the ACS runs it.
# 2. The release broker (SQLite, one HTTP worker, all threads pinned to core 0) with two
#    upstreams: `op`, a minimal OpenID provider served by the driver, and `idp`, the pysaml2 IdP of
#    the browser tests (tests/peers/saml_idp.py). The driver (bench/federated_logins.py, core 1)
#    signs in again and again as fresh browsers and reads the broker process's CPU time
#    (/proc/PID/stat) around each series: the IdP, the OP and the driver run in other processes.
#
# Needs the Python test peers' venv (scripts/test.sh makes it: pysaml2, cryptography) or
# CONCIERGE_TEST_PYTHON pointing at a Python that has them; xmlsec1 and openssl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOGINS="${1:-300}"
PY="${CONCIERGE_TEST_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/concierge/pyvenv/bin/python}"
[[ -x "$PY" ]] || { echo "no Python with pysaml2 at $PY: run scripts/test.sh once, or set CONCIERGE_TEST_PYTHON" >&2; exit 1; }

log() { printf '==> %s\n' "$*" >&2; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/concierge-federated.XXXXXX")"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP:-}" ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

log "SAML validation on one core (cargo bench --bench saml_validate)"
taskset -c 0 cargo bench --locked -p concierge --bench saml_validate -- --noplot 2>/dev/null \
  | tee "$TMP/validate.txt" | grep -E "^saml/|time:|thrpt:" >&2

log "building (release)"
cargo build --release --locked -p concierge >&2
BIN="${CARGO_TARGET_DIR:-target}/release/concierge"

for n in op idp sp; do
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$n" \
    -keyout "$TMP/$n.key" -out "$TMP/$n.crt" 2>/dev/null
done
BROKER_PORT="$(free_port)"; IDP_PORT="$(free_port)"; OP_PORT="$(free_port)"
BROKER="http://127.0.0.1:$BROKER_PORT"
mkdir -p "$TMP/data"
cat >"$TMP/concierge.toml" <<EOF
data_dir = "$TMP/data"
[server]
bind = "127.0.0.1:$BROKER_PORT"
workers = 1
[database]
url = "sqlite://$TMP/data/c.db"
[provider]
key_encryption_key = "$(openssl rand -base64 32)"
[rate_limit]
login_per_ip = "1000000/1s"
journey_per_ip = "off"
callback_per_ip = "off"
[log]
level = "warn"
[[upstreams]]
id = "op"
kind = "oidc"
issuer = "http://127.0.0.1:$OP_PORT"
client_id = "concierge"
client_secret = "bench-secret"
[[upstreams]]
id = "idp"
kind = "saml"
metadata_url = "http://127.0.0.1:$IDP_PORT/metadata"
signing_key_file = "$TMP/sp.key"
signing_cert_file = "$TMP/sp.crt"
EOF
log "broker on $BROKER (core 0), pysaml2 IdP and the driver on core 1"
taskset -a -c 0 "$BIN" serve --config "$TMP/concierge.toml" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
wait_up "$BROKER/healthz"
taskset -c 1 "$PY" tests/peers/saml_idp.py --port "$IDP_PORT" --key "$TMP/idp.key" --cert "$TMP/idp.crt" \
  --sp-metadata-url "$BROKER/upstream/idp/saml/metadata" >"$TMP/idp.log" 2>&1 &
PIDS+=("$!")
wait_up "http://127.0.0.1:$IDP_PORT/metadata"
taskset -c 1 "$PY" bench/federated_logins.py "$BROKER" "$BROKER_PID" "http://127.0.0.1:$IDP_PORT" \
  "$OP_PORT" "$TMP/op.key" "$LOGINS" | tee "$TMP/logins.json"

VALIDATE="$(grep -A2 '^saml/validate' "$TMP/validate.txt" | grep 'time:' | sed 's/.*time: *//')"
THRPT="$(grep -A3 '^saml/validate' "$TMP/validate.txt" | grep 'thrpt:' | sed 's/.*thrpt: *//')"
ROWS="$(python3 - "$TMP/logins.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    name, n = r["protocol"].upper(), r["logins"]
    print(f"| broker CPU per federated login, {name} ({n} logins) | {r['broker_cpu_ms_per_login']} ms (wall {r['wall_ms_per_login']} ms) |")
PY
)"
printf '\n| measure | figure |\n|---|---|\n'
printf '| SAML Response validation, RSA-2048 SHA-256, one core (criterion [low mean high]) | %s, %s |\n' "$VALIDATE" "$THRPT"
printf '%s\n' "$ROWS"
