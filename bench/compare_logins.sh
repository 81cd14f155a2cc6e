#!/usr/bin/env bash
# Full password logins, BEFORE against AFTER, in one run (issue #17: "a full password login: no
# slower per CPU-second than today"; the authorize path is bench/compare.sh).
#
#   bench/compare_logins.sh BEFORE_BIN AFTER_BIN [seconds per run, default 10]
#   PAIRS=3 bench/compare_logins.sh ...   # before/after pairs, default 2
#
# The setup of bench/compare.sh (bench/lib.sh): a release binary on SQLite with one HTTP worker,
# pinned to core 0 with all its threads; the driver on core 1 is bench/logins.py with CONNS
# connections, each a browser signing in again and again (GET /login, POST /login with the
# password: argon2id, the journey, the session). Runs BEFORE, AFTER, BEFORE, AFTER and prints a
# Markdown table: logins per second and per CPU-second of the server process (/proc/PID/stat,
# user + system), the means and the ratio after/before.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ $# -ge 2 ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
BEFORE="$(realpath "$1")"
AFTER="$(realpath "$2")"
DUR="${3:-10}"
CONNS="${CONNS:-4}"
PIDS=()
# shellcheck source=bench/lib.sh
source bench/lib.sh
for b in "$BEFORE" "$AFTER"; do [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }; done
bench_tools

TMP="$(mktemp -d)"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

PAIRS="${PAIRS:-2}"
# One bench user signs in from one address again and again: the login rates would be measured.
export CONCIERGE__RATE_LIMIT__LOGIN_PER_IP=off CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT=off
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo "$BENCH_EMAIL" > "$TMP/users.txt"
for pair in $(seq 1 "$PAIRS"); do
  for which in before after; do
    bin="$BEFORE"; [[ $which == after ]] && bin="$AFTER"
    dir="$TMP/run$pair-$which"
    concierge_start "$bin" "$dir"
    t0="$(cpu_ticks "$CONCIERGE_PID")"
    taskset -c 1 python3 bench/logins.py "$DUR" "$CONNS" "$BENCH_PASSWORD" "$TMP/users.txt" "$BASE" > "$dir/logins.json"
    t1="$(cpu_ticks "$CONCIERGE_PID")"
    concierge_stop
    python3 - "$dir/logins.json" "$((t1 - t0))" "$(getconf CLK_TCK)" "$DUR" "$which" >> "$TMP/runs.tsv" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
ticks, hz, dur, which = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
i = run["instances"][0]
total, errors = i["logins_total"], i.get("errors", 0)
cpu = ticks / hz
print(f"{which}\t{i['logins_in_window'] / dur:.1f}\t{total / cpu if cpu else float('nan'):.1f}\t{100 * cpu / dur:.0f}%\t{errors}")
PY
    echo "pair $pair ($which): $(tail -1 "$TMP/runs.tsv")" >&2
  done
done

python3 - "$TMP/runs.tsv" "$DUR" "$CONNS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur, conns = sys.argv[2], sys.argv[3]
print(f"| run (password logins: GET /login + POST /login; server on core 0, bench/logins.py {conns} connections on core 1, {dur}s each) | binary | logins/s | logins per server CPU-second | server CPU use | errors |")
print("|---|---|---|---|---|---|")
for n, (which, rate, percpu, core, err) in enumerate(rows, 1):
    print(f"| {n} | {which} | {rate} | {percpu} | {core} | {err} |")
mean = lambda which, k: statistics.mean(float(r[k]) for r in rows if r[0] == which)  # noqa: E731
rb, ra, cb, ca = mean("before", 1), mean("after", 1), mean("before", 2), mean("after", 2)
print(f"| **mean** | before / after | **{rb:.1f}** / **{ra:.1f}** (after/before **{ra / rb:.3f}**) | **{cb:.1f}** / **{ca:.1f}** (after/before **{ca / cb:.3f}**) | | |")
PY
echo
echo "Before: \`$BEFORE\` (sha256 $(sha256sum "$BEFORE" | cut -c1-12)). After: \`$AFTER\` (sha256 $(sha256sum "$AFTER" | cut -c1-12)). $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
