# Sourced by the scripts that run cargo (test.sh, serve.sh, demo-mfa.sh); expects $ROOT.
# rust-toolchain.toml names the exact toolchain (rust-version). Where rustup cannot download it
# (offline CI) but the installed `stable` is that very version, make `stable` answer to that name
# too. `rustup toolchain link` refuses official names such as 1.95.0, hence a symlink.
ensure_toolchain() {
  local want triple stable_version home
  want="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
  command -v rustup >/dev/null 2>&1 && [[ -n "$want" ]] || return 0
  if rustup toolchain list | grep "^$want-" >/dev/null; then
    return 0
  fi
  stable_version="$(rustc +stable --version 2>/dev/null | cut -d' ' -f2)"
  if [[ "$stable_version" != "$want" ]]; then
    printf '==> %s\n' "toolchain $want is not installed; rustup installs it on first use (needs the network)" >&2
    return 0
  fi
  triple="$(rustc +stable -vV | sed -n 's/^host: //p')"
  home="${RUSTUP_HOME:-$HOME/.rustup}"
  printf '==> %s\n' "toolchain $want: linking the installed stable ($stable_version) as $want-$triple" >&2
  ln -s "$(rustc +stable --print sysroot)" "$home/toolchains/$want-$triple"
}
