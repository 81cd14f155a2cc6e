#!/usr/bin/env bash
# Builds the template the way docs/plugins.md tells an integrator to, outside this repository,
# and loads the result in the harness. It runs the shell blocks of docs/plugins.md that follow
# the markers `<!-- out-of-tree:install -->` and `<!-- out-of-tree:build -->` as they are
# written (so the documented steps are the tested ones), in a temporary directory outside the
# repository, with CONCIERGE set to this checkout:
#
#   install  wasm-tools (the componentize step without a Concierge checkout); run only when
#            the pinned version is not cached yet, with CARGO_INSTALL_ROOT=~/.cache/concierge/…
#            so CI installs it once per machine, not once per run
#   build    copy the template, rename it, point it at the SDK, add the release profile, build the
#            core module for wasm32 (rustup target, or Debian's rustc-web), make the component
#            with `wasm-tools component new`
#
# then runs the harness's template test (plugins/tools/harness) on the component it made: the
# PIN enrolment and challenge, with exactly the grants the template needs.
#
#   plugins/tools/out-of-tree.sh
#
# Environment: PLUGINS_TARGET_DIR, PLUGINS_JOBS as for plugins/build.sh (the copy builds in
# $PLUGINS_TARGET_DIR/out-of-tree, so reruns are incremental); XDG_CACHE_HOME.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PLUGINS="$ROOT/plugins"
DOC="$ROOT/docs/plugins.md"
if [[ -n "${PLUGINS_TARGET_DIR:-}" ]]; then
  TARGET_DIR="$PLUGINS_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  TARGET_DIR="$CARGO_TARGET_DIR/plugins"
else
  TARGET_DIR="$PLUGINS/target"
fi
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
JOBS="${PLUGINS_JOBS:-2}"
# The version docs/plugins.md installs; the cache folder is named after it.
WASM_TOOLS_VERSION=1.263.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/concierge/wasm-tools-$WASM_TOOLS_VERSION"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
unset RUSTC RUSTC_WRAPPER CARGO_BUILD_RUSTC CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

# The fenced block that follows the line `<!-- out-of-tree:$1 -->` in docs/plugins.md.
block() {
  local text
  text="$(awk -v marker="<!-- out-of-tree:$1 -->" '
    $0 == marker { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$DOC")"
  [[ -n "$text" ]] || die "docs/plugins.md has no shell block after <!-- out-of-tree:$1 -->"
  printf '%s\n' "$text"
}
INSTALL="$(block install)"
BUILD="$(block build)"
grep -q "wasm-tools@$WASM_TOOLS_VERSION" <<<"$INSTALL" \
  || die "docs/plugins.md installs another wasm-tools than $WASM_TOOLS_VERSION: update WASM_TOOLS_VERSION here"

# --- wasm-tools, once per machine ------------------------------------------------------------------
if [[ ! -x "$CACHE/bin/wasm-tools" ]]; then
  log "wasm-tools $WASM_TOOLS_VERSION is not in $CACHE: the documented install (a few minutes, once)"
  mkdir -p "$CACHE"
  started=$SECONDS
  (export CARGO_INSTALL_ROOT="$CACHE" CARGO_BUILD_JOBS="$JOBS"; bash -euo pipefail -c "$INSTALL") >&2
  log "installed in $((SECONDS - started)) s"
fi
export PATH="$CACHE/bin:$PATH"
wasm-tools --version >&2

# --- the documented build, outside the repository ----------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/concierge-out-of-tree.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in
  "$ROOT"/*) die "the temporary directory $WORK is inside the repository" ;;
esac
log "the documented steps in $WORK (CONCIERGE=$ROOT)"
started=$SECONDS
(
  cd "$WORK"
  export CONCIERGE="$ROOT" CARGO_TARGET_DIR="$TARGET_DIR/out-of-tree" CARGO_BUILD_JOBS="$JOBS"
  bash -euo pipefail -x -c "$BUILD"
) >&2
log "built in $((SECONDS - started)) s"
COMPONENT="$WORK/my-factor/my-factor.wasm"
[[ -f "$COMPONENT" ]] || die "the documented steps made no $COMPONENT"
# Nothing from the repository's workspace leaked into the copy.
if grep -qE '^[^#]*workspace' "$WORK/my-factor/Cargo.toml"; then
  die "the copied Cargo.toml mentions a workspace"
fi

# --- load it in the harness ------------------------------------------------------------------------------
log "the harness's template test on $COMPONENT"
out="$(env CONCIERGE_TEMPLATE_COMPONENT="$COMPONENT" CONCIERGE_TEMPLATE_ID=my-factor \
  CARGO_TARGET_DIR="$TARGET_DIR/tools" cargo test --locked -j "$JOBS" \
  --manifest-path "$PLUGINS/tools/harness/Cargo.toml" --test components \
  template_enrols_a_pin_and_checks_it 2>&1)" || { printf '%s\n' "$out" >&2; die "the harness test failed"; }
printf '%s\n' "$out" | grep -E '^(test |template component)' >&2
grep -q '^test result: ok. 1 passed' <<<"$out" || { printf '%s\n' "$out" >&2; die "the harness test did not run"; }

# --- the privacyIDEA factor, out of tree the same way ---------------------------------------------------
# The documented steps again with plugins/privacyidea (contract 0.2, the SDK's `http` feature)
# in place of the template: an integrator's 0.2 factor builds outside the repository too, and
# its component imports `http`.
PI_BUILD="$(sed -e 's|plugins/template"|plugins/privacyidea"|' \
  -e 's|name = "concierge-plugin-template"|name = "concierge-plugin-privacyidea"|' \
  -e 's|name = "template"|name = "privacyidea"|' \
  -e 's|Description::new("template"|Description::new("privacyidea"|' \
  -e 's|cargo add concierge-plugin-sdk --path "$CONCIERGE/plugins/sdk"|& --features http|' <<<"$BUILD")"
grep -q 'plugins/privacyidea"' <<<"$PI_BUILD" || die "the documented build block no longer copies plugins/template"
log "the documented steps with plugins/privacyidea in $WORK/pi"
mkdir -p "$WORK/pi"
(
  cd "$WORK/pi"
  export CONCIERGE="$ROOT" CARGO_TARGET_DIR="$TARGET_DIR/out-of-tree-pi" CARGO_BUILD_JOBS="$JOBS"
  bash -euo pipefail -c "$PI_BUILD"
) >"$WORK/pi.log" 2>&1 || { cat "$WORK/pi.log" >&2; die "the privacyIDEA factor did not build out of tree"; }
grep -q 'import concierge:mfa/http@0.2.0' "$WORK/pi.log" \
  || { cat "$WORK/pi.log" >&2; die "the out-of-tree privacyIDEA component does not import http"; }
log "privacyIDEA factor out of tree: $(grep -c '^  import' "$WORK/pi.log") imports, http among them"

log "out of tree: OK"
