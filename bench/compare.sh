#!/usr/bin/env bash
# Authorize with a live session -> code, BEFORE against AFTER, in one run (issue #13: absolute
# figures on the project's machines vary 2x from day to day; a ratio within one run does not).
#
#   bench/compare.sh BEFORE_BIN AFTER_BIN [seconds per run, default 10]
#   PAIRS=4 bench/compare.sh ...   # before/after pairs, default 2 (more pairs, less noise)
#
# The setup of bench/provider.sh (bench/lib.sh): a release binary on SQLite with one HTTP worker,
# pinned to core 0 with all its threads; wrk (one thread, 32 connections) on core 1, the same
# GET /authorize with the session cookie again and again (302 with a fresh code each time). Each
# run gets a fresh server and database; the session is made as a browser makes it
# (bench/login_flow.py: /authorize, the login page's form with whatever hidden fields this build
# renders, the redirects to the code), so a build whose form carries a `journey` instead of a
# `return_to` is measured the same way. Runs BEFORE, AFTER, BEFORE, AFTER (interleaved: drift of
# the machine's load hits both alike) and prints a Markdown table: each run's requests per
# second and per CPU-second of the server process (/proc/PID/stat, user + system: what other
# work takes from core 0 counts in neither, so it moves far less than req/s on a shared machine),
# the mean of each binary and the ratio after/before (overall and per pair; the same binary's
# two runs show the noise). Then the same load side by side: both binaries serving at once on
# core 0, each with its own wrk on core 1, PAIRS rounds: what else runs on the machine hits both
# alike, so its per-CPU-second ratio is the steadiest figure on a busy machine (see below;
# NO_SIDE_BY_SIDE=1 skips it).
# KEEP=1 keeps the temp dir (wrk output, server logs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ $# -ge 2 ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
BEFORE="$(realpath "$1")"
AFTER="$(realpath "$2")"
DUR="${3:-10}"
CONNS=32
PIDS=()
# shellcheck source=bench/lib.sh
source bench/lib.sh
for b in "$BEFORE" "$AFTER"; do [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }; done
bench_tools

TMP="$(mktemp -d)"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n "${KEEP:-}" ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
PAIRS="${PAIRS:-2}"
RUNS=()
for _ in $(seq 1 "$PAIRS"); do RUNS+=(before after); done
declare -A RPS ERR LOADAVG PERCPU CORE
# CPU time (user + system, clock ticks) the server process has used so far: requests per
# server CPU-second is far less sensitive to other work on the machine than requests per second
# (what the other work takes from core 0 is neither counted in the time nor in the requests).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for i in "${!RUNS[@]}"; do
  which="${RUNS[$i]}"
  bin="$BEFORE"; [[ $which == after ]] && bin="$AFTER"
  dir="$TMP/run$i-$which"
  concierge_start "$bin" "$dir"
  concierge_sign_in "$dir"
  t0="$(cpu_ticks "$CONCIERGE_PID")"
  read -r RPS[$i] ERR[$i] < <(COOKIE="$(cat "$dir/cookie.txt")" load "run$i-$which" "$BASE$(cat "$dir/authorize.txt")" get.lua)
  t1="$(cpu_ticks "$CONCIERGE_PID")"
  n="$(awk '/ requests in / {print $1}' "$TMP/run$i-$which.wrk")"
  PERCPU[$i]="$(awk -v n="$n" -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "-" }')"
  CORE[$i]="$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v d="$DUR" 'BEGIN { printf "%.0f%%", 100 * t / hz / d }')"
  LOADAVG[$i]="$(cut -d' ' -f1 /proc/loadavg)"
  # The last answer must still be a code: a session lost mid-run would answer 302 to /login,
  # which wrk counts as a success.
  python3 - "$BASE" "$(cat "$dir/authorize.txt")" "$(cat "$dir/cookie.txt")" "$BENCH_REDIRECT_URI" <<'PY'
import sys
sys.path.insert(0, "bench")
from login_flow import Browser
base, authorize, cookie, redirect_uri = sys.argv[1:5]
b = Browser(base)
status, h, _ = b.call(authorize, headers={"Cookie": cookie})
loc = h.get("Location") or h.get("location") or ""
if status not in (302, 303) or not loc.startswith(redirect_uri) or "code=" not in loc:
    raise SystemExit(f"compare.sh: after the run, authorize answered {status} {loc!r}, not a code")
PY
  concierge_stop
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$which" "${RPS[$i]}" "${PERCPU[$i]}" "${CORE[$i]}" "${ERR[$i]}" "${LOADAVG[$i]}" >> "$TMP/runs.tsv"
  echo "run $((i + 1))/${#RUNS[@]} ($which): ${RPS[$i]} req/s, ${PERCPU[$i]} per server CPU-second, ${ERR[$i]} non-2xx/3xx" >&2
done

python3 - "$TMP/runs.tsv" "$DUR" "$CONNS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur, conns = sys.argv[2], sys.argv[3]
num = lambda v: float(v) if v not in ("", "-") else float("nan")  # noqa: E731
print(f"| run (authorize with a live session -> code; server on core 0, wrk 1 thread / {conns} connections on core 1, {dur}s each) | binary | req/s | req per server CPU-second | server CPU use | non-2xx/3xx | load average at the end |")
print("|---|---|---|---|---|---|---|")
for i, (which, rps, percpu, core, err, load) in enumerate(rows, 1):
    print(f"| {i} | {which} | {rps} | {percpu} | {core} | {err} | {load} |")
def col(which, k):
    return [num(r[k]) for r in rows if r[0] == which]
def ratio(a, b):
    return f"{a / b:.3f}" if b > 0 else "-"
mb, ma = statistics.mean(col("before", 1)), statistics.mean(col("after", 1))
cb, ca = statistics.mean(col("before", 2)), statistics.mean(col("after", 2))
print(f"| **mean** | before / after | **{mb:.0f}** / **{ma:.0f}** (after/before **{ratio(ma, mb)}**) | **{cb:.0f}** / **{ca:.0f}** (after/before **{ratio(ca, cb)}**) | | | |")
print()
pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
print("After/before per pair (runs 2/1, 4/3, ...): req/s " + ", ".join(ratio(num(a[1]), num(b[1])) for b, a in pairs)
      + "; per CPU-second " + ", ".join(ratio(num(a[2]), num(b[2])) for b, a in pairs) + ".")
spread = lambda v: f"{max(v) / min(v) - 1:.0%}" if min(v) > 0 else "-"  # noqa: E731
print(f"Noise, the same binary's runs (max/min - 1): req/s before {spread(col('before', 1))}, after {spread(col('after', 1))}; "
      f"per CPU-second before {spread(col('before', 2))}, after {spread(col('after', 2))}.")
PY
cat <<MD
Before: \`$BEFORE\` (sha256 $(sha256sum "$BEFORE" | cut -c1-12)). After: \`$AFTER\` (sha256 $(sha256sum "$AFTER" | cut -c1-12)). Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores. A server CPU use well under 100% means other work took core 0: trust the per-CPU-second column then.
MD

# --- Side by side: both binaries at once on core 0 ------------------------------------------------
# Both servers pinned to core 0, each loaded by its own wrk (both on core 1), at the same time:
# whatever else runs on the machine hits both alike, at the same moment. Read the requests per
# CPU-second ratio: both servers run at similar rates under the same interference, so their CPU
# cost per request compares fairly. The req/s ratio understates any difference whenever core 0
# is not saturated (the cheaper server idles waiting for its wrk and the scheduler hands its
# share to the other): release against debug gave 0.467 in req/s, 0.274 per CPU-second (0.194
# interleaved). Same binary twice at load average 11-14, per CPU-second: rounds 0.974, 1.002,
# 0.987, 1.010, 0.964 (the interleaved runs of the same trials: 0.87 to 1.07). PAIRS rounds of
# DUR seconds; the wrk started first alternates. NO_SIDE_BY_SIDE=1 skips it.
if [[ -z "${NO_SIDE_BY_SIDE:-}" ]]; then
  concierge_start "$BEFORE" "$TMP/side-before"; PID_B="$CONCIERGE_PID"; BASE_B="$BASE"
  concierge_sign_in "$TMP/side-before"
  concierge_start "$AFTER" "$TMP/side-after"; PID_A="$CONCIERGE_PID"; BASE_A="$BASE"
  concierge_sign_in "$TMP/side-after"
  side() { # side NAME BASE DIR
    COOKIE="$(cat "$3/cookie.txt")" taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s bench/wrk/get.lua "$2$(cat "$3/authorize.txt")" >"$TMP/$1.wrk" 2>&1
  }
  : > "$TMP/side.tsv"
  for r in $(seq 1 "$PAIRS"); do
    b0="$(cpu_ticks "$PID_B")"; a0="$(cpu_ticks "$PID_A")"
    if (( r % 2 )); then
      side "side$r-before" "$BASE_B" "$TMP/side-before" & w1=$!
      side "side$r-after" "$BASE_A" "$TMP/side-after" & w2=$!
    else
      side "side$r-after" "$BASE_A" "$TMP/side-after" & w1=$!
      side "side$r-before" "$BASE_B" "$TMP/side-before" & w2=$!
    fi
    wait "$w1" "$w2"
    b1="$(cpu_ticks "$PID_B")"; a1="$(cpu_ticks "$PID_A")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" \
      "$(rps < "$TMP/side$r-before.wrk")" "$(awk '/ requests in / {print $1}' "$TMP/side$r-before.wrk")" "$((b1 - b0))" "$(errors < "$TMP/side$r-before.wrk")" \
      "$(rps < "$TMP/side$r-after.wrk")" "$(awk '/ requests in / {print $1}' "$TMP/side$r-after.wrk")" "$((a1 - a0))" "$(errors < "$TMP/side$r-after.wrk")" \
      >> "$TMP/side.tsv"
    printf '\t%s\n' "$(cut -d' ' -f1 /proc/loadavg)" >> "$TMP/side-load.txt"
  done
  for d in side-before side-after; do
    python3 - "$(cat "$TMP/$d/authorize.txt")" "$(cat "$TMP/$d/cookie.txt")" "$BENCH_REDIRECT_URI" \
      "$([[ $d == side-before ]] && echo "$BASE_B" || echo "$BASE_A")" <<'PY'
import sys
sys.path.insert(0, "bench")
from login_flow import Browser
authorize, cookie, redirect_uri, base = sys.argv[1:5]
status, h, _ = Browser(base).call(authorize, headers={"Cookie": cookie})
loc = h.get("Location") or h.get("location") or ""
if status not in (302, 303) or not loc.startswith(redirect_uri) or "code=" not in loc:
    raise SystemExit(f"compare.sh: after the side-by-side runs, authorize answered {status} {loc!r}, not a code")
PY
  done
  echo
  python3 - "$TMP/side.tsv" "$TMP/side-load.txt" "$DUR" "$CONNS" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
loads = [l.strip() for l in open(sys.argv[2])]
dur, conns, hz = sys.argv[3], sys.argv[4], float(sys.argv[5])
print(f"| side by side (both on core 0 at once, each with its own wrk 1 thread / {conns} connections on core 1, {dur}s) | before req/s | before req per CPU-second | after req/s | after req per CPU-second | after/before req/s | after/before per CPU-second | core 0 used by both | non-2xx/3xx | load average |")
print("|---|---|---|---|---|---|---|---|---|---|")
rr, rc = [], []
for (r, brps, bn, bt, be, arps, an, at, ae), load in zip(rows, loads):
    bc = float(bn) / (float(bt) / hz) if float(bt) > 0 else float("nan")
    ac = float(an) / (float(at) / hz) if float(at) > 0 else float("nan")
    rr.append(float(arps) / float(brps)); rc.append(ac / bc)
    used = (float(bt) + float(at)) / hz / float(dur)
    print(f"| round {r} | {brps} | {bc:.0f} | {arps} | {ac:.0f} | {rr[-1]:.3f} | {rc[-1]:.3f} | {used:.0%} | {be} / {ae} | {load} |")
print(f"| **mean** | | | | | {statistics.mean(rr):.3f} | **{statistics.mean(rc):.3f}** | | | |")
print()
print(f"Side by side, after/before per CPU-second (the figure to read) per round from {min(rc):.3f} to {max(rc):.3f}. "
      "The req/s ratio is pulled towards 1 whenever core 0 is not saturated.")
PY
fi
