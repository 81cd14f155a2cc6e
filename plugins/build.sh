#!/usr/bin/env bash
# Builds every Concierge MFA plugin - the first-party ones (plugins/*) and the test corpus
# (tests/plugins/*) - into WebAssembly components:
#
#   plugins/dist/<name>.wasm         first-party plugins (totp, email-otp, sms-otp, privacyidea,
#                                    template, approve)
#   plugins/dist/examples/<name>.wasm  examples on the SDK (plugins/examples: security-question)
#   plugins/dist/test/<name>.wasm    the host's test corpus (hostile-*, test-factor-v1/v2,
#                                    test-http-v2, test-sdk-http)
#
# and prints `sha256  file` for each on stdout (paths relative to the repository root, so
# `plugins/build.sh > SHA256SUMS && sha256sum -c SHA256SUMS` works from there); size and
# imported capabilities go to stderr.
#
#   plugins/build.sh
#
# Two toolchain routes, picked automatically:
#   rustup  `rustup target add wasm32-unknown-unknown` was done: plain `cargo build --target`.
#   debian  no such target (e.g. rustup cannot download it): Debian's `rustc-web` compiler and
#           `rust-web-src` std source (installed with apt-get if missing) build core and alloc
#           for wasm32 (`-Z build-std`, enabled with RUSTC_BOOTSTRAP=1), linked by rustup's
#           rust-lld. Only the guest build sees this compiler: nothing else changes.
# The core module of each plugin becomes a component with plugins/tools/componentize (the
# `wit-component` crate), built once with the host toolchain.
#
# Environment:
#   PLUGINS_TARGET_DIR   where cargo builds (default: plugins/target, or $CARGO_TARGET_DIR/plugins
#                        when CARGO_TARGET_DIR is set; never the broker's own build folders, so
#                        the two builds never wait on each other's lock)
#   PLUGINS_ROUTE        rustup | debian, to force a route
#   PLUGINS_JOBS         cargo -j (default: 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGINS="$ROOT/plugins"
DIST="$PLUGINS/dist"
# Default: plugins/target, or a `plugins` folder in CARGO_TARGET_DIR when that is set (CI keeps
# it between runs), never the broker's own build folders.
if [[ -n "${PLUGINS_TARGET_DIR:-}" ]]; then
  TARGET_DIR="$PLUGINS_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  TARGET_DIR="$CARGO_TARGET_DIR/plugins"
else
  TARGET_DIR="$PLUGINS/target"
fi
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
JOBS="${PLUGINS_JOBS:-2}"
WASM_TARGET=wasm32-unknown-unknown

# Crate directory -> component name; the crate's [lib] name is the name with '_' for '-'.
FIRST_PARTY=(totp email-otp sms-otp privacyidea template approve)
EXAMPLES=(security-question)
TEST_CORPUS=(hostile-loop hostile-memhog hostile-trap hostile-ungranted hostile-malformed
             hostile-describe-loop hostile-logger test-factor-v1 test-factor-v2 test-http-v2
             test-sdk-http)
# Members (package names) that enable the SDK's `http` feature (contract 0.2). Cargo unifies
# features within one build, so they are built in a second cargo invocation: the 0.1 plugins keep
# the 0.1 bindings.
SDK_HTTP=(test-sdk-http concierge-plugin-privacyidea)
# Members on the SDK's `waiting` feature (a waiting factor binds another world): a third invocation.
SDK_WAITING=(concierge-plugin-approve)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"

# Host settings meant for the broker must not leak into the guest build, and ours not into it.
unset RUSTC RUSTC_WRAPPER CARGO_BUILD_RUSTC CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

# --- route --------------------------------------------------------------------------------------
has_rustup_target() {
  local installed
  command -v rustup >/dev/null 2>&1 || return 1
  installed="$(rustup target list --installed 2>/dev/null)" || return 1
  grep -qx "$WASM_TARGET" <<<"$installed"
}
ROUTE="${PLUGINS_ROUTE:-}"
if [[ -z "$ROUTE" ]]; then
  if has_rustup_target; then ROUTE=rustup; else ROUTE=debian; fi
fi

CARGO_WASM=(cargo build --release --locked -j "$JOBS" --target "$WASM_TARGET")
WASM_ENV=(env CARGO_TARGET_DIR="$TARGET_DIR/wasm-$ROUTE")
case "$ROUTE" in
  rustup)
    has_rustup_target || die "PLUGINS_ROUTE=rustup but the $WASM_TARGET target is not installed (rustup target add $WASM_TARGET)"
    ;;
  debian)
    is_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }
    missing=()
    for p in rustc-web rust-web-src; do
      is_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
      command -v apt-get >/dev/null 2>&1 || die "no $WASM_TARGET target in rustup and no apt-get to install ${missing[*]}"
      SUDO=()
      if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root to install ${missing[*]}: run as root, install sudo, or rustup target add $WASM_TARGET"
        SUDO=(sudo)
      fi
      log "no rustup $WASM_TARGET target: installing Debian packages ${missing[*]}"
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
    DEB_RUSTC=/usr/bin/rustc
    [[ -x "$DEB_RUSTC" && -d /usr/lib/rustlib/src/rust/library ]] || die "rustc-web/rust-web-src did not install $DEB_RUSTC and /usr/lib/rustlib/src/rust"
    # rustup's rust-lld (Debian's wasm-ld from lld 14 cannot link these modules).
    command -v rustc >/dev/null 2>&1 || die "rustc (rustup) not found: needed for its rust-lld"
    HOST_TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
    LLD="$(rustc --print sysroot)/lib/rustlib/$HOST_TRIPLE/bin/rust-lld"
    [[ -x "$LLD" ]] || die "rust-lld not found at $LLD (a rustup toolchain ships it)"
    CARGO_WASM+=(--config "build.rustc=\"$DEB_RUSTC\""
                 --config 'unstable.build-std=["core","alloc"]'
                 --config "target.$WASM_TARGET.linker=\"$LLD\"")
    WASM_ENV+=(RUSTC_BOOTSTRAP=1)
    ;;
  *) die "PLUGINS_ROUTE must be rustup or debian, not $ROUTE" ;;
esac

# --- componentize (host tool, built once) -------------------------------------------------------
COMPONENTIZE="$TARGET_DIR/tools/release/componentize"
log "host tool: componentize"
env CARGO_TARGET_DIR="$TARGET_DIR/tools" cargo build --release --locked -j "$JOBS" -q \
  --manifest-path "$PLUGINS/tools/componentize/Cargo.toml" >&2

# --- guests ------------------------------------------------------------------------------------------
log "guests ($ROUTE route): cargo build --target $WASM_TARGET"
EXCLUDE=()
ONLY=()
WAITING_ONLY=()
for name in "${SDK_HTTP[@]}"; do
  EXCLUDE+=(--exclude "$name")
  ONLY+=(-p "$name")
done
for name in "${SDK_WAITING[@]}"; do
  EXCLUDE+=(--exclude "$name")
  WAITING_ONLY+=(-p "$name")
done
(cd "$PLUGINS" && "${WASM_ENV[@]}" "${CARGO_WASM[@]}" --workspace "${EXCLUDE[@]}") >&2
(cd "$PLUGINS" && "${WASM_ENV[@]}" "${CARGO_WASM[@]}" "${ONLY[@]}") >&2
(cd "$PLUGINS" && "${WASM_ENV[@]}" "${CARGO_WASM[@]}" "${WAITING_ONLY[@]}") >&2

# --- components ----------------------------------------------------------------------------------
CORE_DIR="$TARGET_DIR/wasm-$ROUTE/$WASM_TARGET/release"
mkdir -p "$DIST/test" "$DIST/examples"
componentize() {
  local name="$1" out="$2" core imports sum size
  core="$CORE_DIR/${name//-/_}.wasm"
  [[ -f "$core" ]] || die "$core was not built"
  imports="$("$COMPONENTIZE" encode "$core" "$out" | sed -n 's/^imports: //p')"
  sum="$(sha256sum "$out" | cut -d' ' -f1)"
  size="$(stat -c %s "$out")"
  printf '%s  %s\n' "$sum" "${out#"$ROOT"/}"
  printf '    %6d bytes  imports: %s\n' "$size" "$imports" >&2
}
for name in "${FIRST_PARTY[@]}"; do
  componentize "$name" "$DIST/$name.wasm"
done
for name in "${EXAMPLES[@]}"; do
  componentize "$name" "$DIST/examples/$name.wasm"
done
for name in "${TEST_CORPUS[@]}"; do
  componentize "$name" "$DIST/test/$name.wasm"
done
