#!/usr/bin/env bash
# Installs privacyIDEA 3.14 (tests/peers/privacyidea/requirements.txt) into its own virtualenv,
# once: ${CONCIERGE_PRIVACYIDEA_VENV:-${XDG_CACHE_HOME:-~/.cache}/concierge/privacyidea-3.14}.
# A venv whose marker (.concierge-stamp: the pinned version, the Python version, the hash of
# requirements.txt) matches and whose installed privacyidea reports 3.14 is reused as it is;
# anything else is removed and installed afresh. Concurrent callers wait on one lock.
# Prints the venv's python on stdout; everything else goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIN="privacyidea==3.14"
REQ="$HERE/requirements.txt"
VENV="${CONCIERGE_PRIVACYIDEA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/concierge/privacyidea-3.14}"
PYTHON3="${CONCIERGE_PRIVACYIDEA_BASE_PYTHON:-python3}"
STAMP="$VENV/.concierge-stamp"

want="$PIN $("$PYTHON3" -c 'import sys; print("python%d.%d.%d" % sys.version_info[:3])') $(sha256sum "$REQ" | cut -d' ' -f1)"

intact() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]] &&
    [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("privacyidea"))' 2>/dev/null)" == 3.14 ]]
}

if ! intact; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! intact; then # another caller may have installed it while we waited
    echo "privacyidea peer: installing $PIN into $VENV" >&2
    start=$(date +%s%N)
    rm -rf "$VENV"
    "$PYTHON3" -m venv "$VENV" >&2
    # In the background, so that a SIGTERM to this script (or start.sh) stops pip too.
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2 &
    pip_pid=$!
    trap 'kill "$pip_pid" 2>/dev/null; exit 143' TERM INT
    wait "$pip_pid"
    trap - TERM INT
    printf '%s' "$want" >"$STAMP"
    intact || { echo "privacyidea peer: the venv in $VENV is not usable after install" >&2; exit 1; }
    echo "privacyidea peer: installed in $((($(date +%s%N) - start) / 1000000)) ms" >&2
  fi
  flock -u 9
fi
echo "$VENV/bin/python"
