#!/usr/bin/env bash
# Broker CPU per SAML SP sign-in with a live session (issue #20), beside an OpenID authorize with
# a live session in the same run, and the same core's RSA-2048 signing rate.
#
#   bench/saml_sso.sh [BIN] [N]      # BIN: default target/release/concierge (built if missing);
#                                    # N: sign-ins per kind (default 2000)
#
# The broker (release, SQLite, one worker) runs alone on core 0 with the bench user signed in
# (bench/login_flow.py) and one SP registered (`sign = "assertion"`, the default). bench/saml_sso.py
# sends, from core 1, N AuthnRequests over HTTP-Redirect with that session's cookie, each with a
# fresh ID (the broker uses an ID once), 4 at a time, and checks every answer is the
# auto-posting form with a SAMLResponse; then N authorize requests of the OpenID client `web`
# with the same session (each a 302 with a code). The broker's CPU time (utime + stime of its
# process, /proc/PID/stat) over each batch, divided by N, is the CPU per sign-in.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${1:-target/release/concierge}"
N="${2:-2000}"
if [[ ! -x $BIN ]]; then cargo build --release -p concierge >&2; fi
BIN="$(realpath "$BIN")"
PIDS=()
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_tools
TMP="$(mktemp -d "${TMPDIR:-/tmp}/concierge-saml-sso.XXXXXX")"
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

SP="https://sp.bench.example/metadata"
export CONCIERGE_EXTRA_TOML="
[[saml_apps]]
entity_id = \"$SP\"
name = \"bench SP\"
acs_urls = [\"http://127.0.0.1:9/acs\"]
"
concierge_start "$BIN" "$TMP/c"
concierge_sign_in "$TMP"
taskset -c 1 python3 bench/saml_sso.py "$BASE" "$TMP/cookie.txt" "$(cat "$TMP/authorize.txt")" \
  "$BENCH_REDIRECT_URI" "$SP" "$CONCIERGE_PID" "$N" > "$TMP/result.json"
concierge_stop
SPEED="$(taskset -c 0 openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')"
python3 - "$TMP/result.json" "$SPEED" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
sign_rate = float(sys.argv[2])
sign_us = 1e6 / sign_rate
print(f"| one broker core, {r['n']} each, 4 at a time | broker CPU µs per sign-in | per second (wall) |")
print("|---|---|---|")
for k, label in [("saml", "SAML SP sign-in with a live session (AuthnRequest -> signed Response)"),
                 ("oidc", "OpenID authorize with a live session (-> code)")]:
    print(f"| {label} | {r[k]['cpu_us']:,.0f} | {r[k]['rps']:,.0f} |")
print()
print(f"openssl speed rsa2048 on core 0: {sign_rate:,.0f} signs/s ({sign_us:,.0f} µs per signature).")
print(f"A SAML sign-in costs {r['saml']['cpu_us'] / sign_us:.1f} RSA-2048 signatures of CPU; "
      f"{r['saml']['cpu_us'] / r['oidc']['cpu_us']:.1f}x an OpenID authorize with a session.")
PY
