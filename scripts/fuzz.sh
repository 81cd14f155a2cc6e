#!/usr/bin/env bash
# Runs Concierge's fuzz targets (fuzz/, libFuzzer through libfuzzer-sys on the pinned stable
# toolchain; ADR 12): the SAML pre-check against libxml2, compact JWS, the form and query
# parsers, the journey JSON.
#
#   scripts/fuzz.sh [--ci] [--no-merge] [--jobs N] [SECONDS] [TARGET...]
#
#   SECONDS     per target (default 600; 20 with --ci)
#   TARGET      any of the targets below (default: all)
#   --ci        brief run for scripts/test.sh: the corpus in the repository is only read
#   --no-merge  do not merge what a long run found back into fuzz/corpus/
#   --jobs N    run N targets at a time (default 1)
#
# First every file under fuzz/regressions/<target>/ is replayed: each must pass, except those
# listed in fuzz/regressions/EXPECTED-FAILURES (known, being fixed), which are reported as XFAIL
# (and as XPASS once they pass: then take them off the list). Then each target runs from its
# hand-written seeds (fuzz/seeds/<target>/) and its corpus (fuzz/corpus/<target>/); a long run
# merges what it found, minimised, back into fuzz/corpus/<target>/.
#
# Exits non-zero on a crash, a disagreement, an unexpected regression failure or a build error.
# A failing input is kept under fuzz/artifacts/<target>/ (not in git); replay it with
#   CONCIERGE_FUZZ_DEBUG=1 <target dir>/<triple>/release/<target> fuzz/artifacts/<target>/<file>
#
# Environment: CARGO_TARGET_DIR (default: target/; the targets build in <dir>/<triple>/release,
# apart from the broker's own debug build); CONCIERGE_FUZZ_CORPUS_KB and _FILES, what a merged
# corpus keeps per target (default 48 KB and 300 files, smallest inputs first).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(saml_precheck jwt id_token form_body authorize_query journey_json)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

CI=0
MERGE=1
JOBS=1
SECONDS_PER_TARGET=""
TARGETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ci) CI=1; MERGE=0 ;;
    --no-merge) MERGE=0 ;;
    --jobs) shift; JOBS="${1:?--jobs needs a number}" ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *)
      if [[ -z "$SECONDS_PER_TARGET" && "$1" =~ ^[0-9]+$ ]]; then
        SECONDS_PER_TARGET="$1"
      else
        [[ " ${ALL_TARGETS[*]} " == *" $1 "* ]] || die "unknown target $1 (${ALL_TARGETS[*]})"
        TARGETS+=("$1")
      fi
      ;;
  esac
  shift
done
[[ -n "$SECONDS_PER_TARGET" ]] || SECONDS_PER_TARGET=$([[ $CI -eq 1 ]] && echo 20 || echo 600)
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
# What a merged corpus may keep in git, per target.
CORPUS_BUDGET_KB="${CONCIERGE_FUZZ_CORPUS_KB:-48}"
CORPUS_BUDGET_FILES="${CONCIERGE_FUZZ_CORPUS_FILES:-300}"

# Longest input per target: a SAML Response of a few KB, tokens past the 16 KiB limit.
max_len() {
  case "$1" in
    saml_precheck) echo 12000 ;;
    jwt|id_token) echo 17000 ;;
    journey_json) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# --- toolchain and build -----------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
# shellcheck source=scripts/toolchain.sh
. "$ROOT/scripts/toolchain.sh"
ensure_toolchain

TRIPLE="$(cd "$FUZZ" && rustc -vV | sed -n 's/^host: //p')"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN_DIR="$TARGET_DIR/$TRIPLE/release"

# The fuzz crate is its own workspace; its lock file is the broker's (same versions of every
# shared crate) plus libfuzzer-sys, resolved here rather than kept in git.
cp "$ROOT/Cargo.lock" "$FUZZ/Cargo.lock"

# Coverage instrumentation as cargo-fuzz sets it, minus `-Zsanitizer` (stable toolchain; the code
# under test is safe Rust and libxml2 is not instrumented anyway). `--target` keeps the flags off
# build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
log "building the fuzz targets (release, instrumented) into $BIN_DIR"
(cd "$FUZZ" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --target "$TRIPLE" --bins) ||
  die "the fuzz targets do not build"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/concierge-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The targets' SQLite store goes under here too.
export TMPDIR="$WORK"

FAILED=0
SUMMARY=()

# --- regressions ---------------------------------------------------------------------------------
expected_failure() {
  grep -qxF "$1" <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$FUZZ/regressions/EXPECTED-FAILURES" 2>/dev/null)
}
for t in "${TARGETS[@]}"; do
  shopt -s nullglob
  files=("$FUZZ/regressions/$t"/*)
  shopt -u nullglob
  for f in "${files[@]}"; do
    rel="$t/$(basename "$f")"
    if out="$("$BIN_DIR/$t" "$f" 2>&1)"; then
      if expected_failure "$rel"; then
        SUMMARY+=("XPASS regression $rel (passes now: take it off fuzz/regressions/EXPECTED-FAILURES)")
      else
        SUMMARY+=("ok    regression $rel")
      fi
    else
      why="$(grep -m1 -oE "(DISAGREEMENT|FAILURE) in [a-z_]+: .{0,300}" <<<"$out" ||
        grep -m1 -A1 -E "panicked at" <<<"$out" | tr '\n' ' ' || echo "exit status")"
      if expected_failure "$rel"; then
        SUMMARY+=("XFAIL regression $rel (known): $why")
      else
        SUMMARY+=("FAIL  regression $rel: $why")
        FAILED=$((FAILED + 1))
      fi
    fi
  done
done

# --- fuzzing ---------------------------------------------------------------------------------------
# Known classes of disagreement pass while their fix is pending (the regressions above ran strict).
CONCIERGE_FUZZ_KNOWN="$(sed -e 's/#.*//' "$FUZZ/KNOWN-DISAGREEMENTS" 2>/dev/null | tr -s ' \n' ',' |
  sed -e 's/^,//' -e 's/,$//')"
export CONCIERGE_FUZZ_KNOWN
# Runs one target; leaves its figures in $WORK/<target>.result.
run_target() {
  local t="$1" dir="$WORK/$t" seeds="$FUZZ/seeds/$t" corpus="$FUZZ/corpus/$t" dict=() rc=0
  mkdir -p "$dir/new" "$dir/artifacts" "$seeds" "$corpus"
  [[ -f "$FUZZ/dict/$t.dict" ]] && dict=("-dict=$FUZZ/dict/$t.dict")
  (cd "$dir" && "$BIN_DIR/$t" "$dir/new" "$seeds" "$corpus" "${dict[@]}" \
      -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$t")" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
      >"$dir/log" 2>&1) || rc=$?
  local execs secs crashes=0 disagreements=0 f
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$dir/log" | tail -n 1)"
  shopt -s nullglob
  for f in "$dir/artifacts"/*; do
    mkdir -p "$FUZZ/artifacts/$t"
    cp "$f" "$FUZZ/artifacts/$t/"
    if grep -q "DISAGREEMENT" "$dir/log"; then
      disagreements=$((disagreements + 1))
    else
      crashes=$((crashes + 1))
    fi
  done
  shopt -u nullglob
  if [[ $rc -ne 0 && $crashes -eq 0 && $disagreements -eq 0 ]]; then
    crashes=1
  fi
  printf '%s %s %s %s %s %s\n' "$t" "${secs:-?}" "${execs:-?}" "$crashes" "$disagreements" "$rc" \
    >"$dir.result"
}

log "fuzzing ${TARGETS[*]} for $SECONDS_PER_TARGET s each ($JOBS at a time)"
running=0
for t in "${TARGETS[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if [[ $running -ge $JOBS ]]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

for t in "${TARGETS[@]}"; do
  read -r _ secs execs crashes disagreements rc <"$WORK/$t.result"
  status=ok
  if [[ $crashes -ne 0 || $disagreements -ne 0 ]]; then
    status=FAIL
    FAILED=$((FAILED + 1))
    grep -m3 -E "DISAGREEMENT|FAILURE|panicked at|ERROR: libFuzzer" "$WORK/$t/log" >&2 || true
    printf '(%s log kept at fuzz/artifacts/%s/log)\n' "$t" "$t" >&2
    mkdir -p "$FUZZ/artifacts/$t" && cp "$WORK/$t/log" "$FUZZ/artifacts/$t/log"
  fi
  met="$(sed -n 's/^KNOWN DISAGREEMENT met (let pass): //p' "$WORK/$t/log" | sort -u | paste -sd, -)"
  SUMMARY+=("$(printf '%-5s %-16s %5s s  %10s execs  %s crashes  %s disagreements%s' \
    "$status" "$t" "$secs" "$execs" "$crashes" "$disagreements" "${met:+  (known met: $met)}")")
  if [[ $MERGE -eq 1 && $status == ok ]]; then
    # Minimised: only inputs that add coverage, hand-written seeds not copied.
    out="$WORK/$t.merged"
    mkdir -p "$out"
    "$BIN_DIR/$t" -merge=1 -max_len="$(max_len "$t")" "$out" "$FUZZ/seeds/$t" "$FUZZ/corpus/$t" \
      "$WORK/$t/new" >"$WORK/$t.merge.log" 2>&1 || die "merging the corpus of $t failed"
    for s in "$FUZZ/seeds/$t"/*; do
      [[ -f "$s" ]] && rm -f "$out/$(sha1sum "$s" | cut -d' ' -f1)"
    done
    # Kept small in git: the smallest inputs first, up to the budget per target.
    total=0
    count=0
    while read -r size f; do
      total=$((total + size))
      count=$((count + 1))
      [[ $total -le $((CORPUS_BUDGET_KB * 1024)) && $count -le $CORPUS_BUDGET_FILES ]] || rm -f "$f"
    done < <(find "$out" -type f -printf '%s %p\n' | sort -n)
    rm -rf "$FUZZ/corpus/$t" && mv "$out" "$FUZZ/corpus/$t"
  fi
done

printf '\n==================== fuzz summary ====================\n' >&2
printf '%s\n' "${SUMMARY[@]}" >&2
[[ $MERGE -eq 1 ]] && printf 'corpus: %s\n' "$(du -sh --apparent-size "$FUZZ/corpus" | cut -f1)" >&2
if [[ $FAILED -ne 0 ]]; then
  printf 'FUZZING FAILED (%s)\n' "$FAILED" >&2
  exit 1
fi
printf 'no crash, no disagreement\n' >&2
