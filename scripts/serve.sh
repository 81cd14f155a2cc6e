#!/usr/bin/env bash
# Runs the broker on the embedded default ("demo mode": SQLite in ./concierge-data, http://127.0.0.1:8080,
# demo user demo@example.com / demo). Installs the Debian build dependencies first if any is missing.
#
#   scripts/serve.sh                      # demo mode
#   scripts/serve.sh --config FILE        # any `concierge serve` arguments
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_DEBS=(build-essential pkg-config libssl-dev libpq-dev libclang-dev libxml2-dev libxmlsec1-dev)

missing=()
for p in "${BUILD_DEBS[@]}"; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  command -v apt-get >/dev/null 2>&1 || { echo "error: missing packages (${missing[*]}) and no apt-get" >&2; exit 1; }
  SUDO=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  echo "==> installing Debian packages: ${missing[*]}" >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }

# shellcheck source=scripts/toolchain.sh
. "$ROOT/scripts/toolchain.sh"
ensure_toolchain

exec cargo run --release --locked -p concierge -- serve "$@"
