#!/usr/bin/env bash
# Try the MFA plugins: builds them (plugins/build.sh), starts a local SMTP server that prints every
# email it receives to this terminal, writes a config that pins the built plugins and requires a
# second factor, creates demo@example.com / demo-demo, and runs the broker on http://localhost:8080
# (passkeys on too).
#
#   scripts/demo-mfa.sh
#
# Sign in as demo@example.com / demo-demo with the email code printed here, then set up an
# authenticator app from the account page (QR code). Data lives in ./concierge-data/mfa-demo (delete it to start over).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="$ROOT/concierge-data/mfa-demo"
# shellcheck source=scripts/toolchain.sh
. "$ROOT/scripts/toolchain.sh"
ensure_toolchain
SMTP_PORT="${SMTP_PORT:-2525}"
mkdir -p "$DATA"

"$ROOT/plugins/build.sh"

if [[ -z "${CONCIERGE_BIN:-}" ]]; then
  if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  cargo build --release --locked -p concierge
  CONCIERGE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/concierge"
fi

# A real SMTP server (aiosmtpd) in a venv; its Debugging handler prints each message.
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/concierge/pyvenv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/tests/peers/requirements.txt"
fi
"$VENV/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Debugging stdout &
SMTP_PID=$!
trap 'kill $SMTP_PID 2>/dev/null || true' EXIT

pin() { sha256sum "$1" | cut -d' ' -f1; }
DIST="$ROOT/plugins/dist"
CONFIG="$DATA/concierge.toml"
KEK_FILE="$DATA/../concierge-demo-mfa.kek"
[[ -s $KEK_FILE ]] || (umask 077 && openssl rand -base64 32 >"$KEK_FILE")
cat >"$CONFIG" <<TOML
data_dir = "$DATA"

[server]
bind = "127.0.0.1:8080"
# localhost, not 127.0.0.1: browsers offer passkeys to a host name only.
public_url = "http://localhost:8080"

[database]
url = "sqlite://$DATA/concierge.db"

[provider]
key_encryption_key_file = "$KEK_FILE"

[mfa]
required = "required"

[mfa.passkey]
enabled = true

[mfa.smtp]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
from = "Concierge demo <no-reply@concierge.test>"

[[mfa.plugins]]
id = "totp"
path = "$DIST/totp.wasm"
sha256 = "$(pin "$DIST/totp.wasm")"
grants = ["clock", "random", "state", "log"]

[[mfa.plugins]]
id = "email-otp"
path = "$DIST/email-otp.wasm"
sha256 = "$(pin "$DIST/email-otp.wasm")"
grants = ["clock", "random", "state", "email"]
TOML

export CONCIERGE_CONFIG="$CONFIG"
# The account exists after the first run.
if ! out="$(printf 'demo-demo\n' | "$CONCIERGE_BIN" users add demo@example.com --name "Demo User" 2>&1)"; then
  grep -qi "exists" <<<"$out" || { echo "$out" >&2; exit 1; }
fi
echo "==> http://localhost:8080  (demo@example.com / demo-demo; emails are printed below)" >&2
"$CONCIERGE_BIN" serve
