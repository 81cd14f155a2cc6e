#!/usr/bin/env bash
# Starts a provisioned privacyIDEA 3.14 on 127.0.0.1 (see README.md): installs it once into its
# cached venv (install.sh), then becomes the server process (exec), so SIGTERM to this PID stops
# it and SIGKILL leaves nothing running. Arguments go to pi_server.py. Prints one JSON line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$("$HERE/install.sh")"
exec "$PY" "$HERE/pi_server.py" "$@"
