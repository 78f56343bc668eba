#!/usr/bin/env bash
# Fuzzes every parser of untrusted input for SECONDS each (default 60) with cargo-fuzz/libFuzzer:
#   notification  Graph change-notification batches (POST /notifications)
#   lifecycle     Graph lifecycle notifications (POST /lifecycle)
#   crm_answer    CRM.interface <response> documents (CRM client)
#   graph_answer  Graph JSON answers: pages, items, errors, subscriptions (Graph client, mapping)
#   html_to_text  cgc_core html_to_text on any UTF-8 (no XML-forbidden character out)
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Env:   FUZZ_SANITIZER=address|none (default address), FUZZ_JOBS (cargo build jobs).
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer, sancov), which
# RUSTC_BOOTSTRAP=1 unlocks for this build only. Installs cargo-fuzz if it is missing.
# Each target starts from its committed corpus fuzz/corpus/<target>/ (read only: new inputs go to
# a scratch directory, so the committed corpus never grows). A crashing input is saved under
# fuzz/artifacts/<target>/ (git-ignored); reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…   (from the repo root)
# Exits non-zero when any target crashed (panic, timeout, out of memory) or failed to build.
set -euo pipefail

secs="${1:-60}"
shift || true
case "$secs" in '' | *[!0-9]*) echo "fuzz: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

all_targets=(notification lifecycle crm_answer graph_answer html_to_text)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
# cargo-fuzz builds optimised with debug assertions and overflow checks on by default.
build_flags=(--sanitizer "$sanitizer")
if [ -n "${FUZZ_JOBS:-}" ]; then build_flags+=(--jobs "$FUZZ_JOBS"); fi

echo "fuzz: building ${#targets[@]} target(s) (sanitizer $sanitizer, debug assertions on)"
build_start=$SECONDS
for t in "${targets[@]}"; do
  cargo fuzz build "${build_flags[@]}" "$t"
done
echo "fuzz: build took $((SECONDS - build_start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=0
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "$scratch/$t"
  stamp="$scratch/$t.stamp"
  touch "$stamp"
  log="$scratch/$t.log"
  echo "fuzz: running $t for ${secs}s"
  t_start=$SECONDS
  set +e
  cargo fuzz run "${build_flags[@]}" "$t" "$scratch/$t" "$corpus" -- \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
  [ -n "$runs" ] || runs="$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || true)"
  [ -n "$runs" ] || runs="?"
  crashes="$(find "$artifacts" -maxdepth 1 -type f -newer "$stamp" \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)"
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # the fuzzer failed without leaving an artifact (e.g. it did not start)
  fi
  line="fuzz: $t: $runs runs, $crashes crash(es) in $((SECONDS - t_start)) s"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "---- $t: last lines of the fuzzer's output ----"
    tail -n 40 "$log"
    for a in $(find "$artifacts" -maxdepth 1 -type f -newer "$stamp"); do
      line="$line; input: $a"
    done
  fi
  summary+=("$line")
done

printf '%s\n' "${summary[@]}"
exit "$failed"
