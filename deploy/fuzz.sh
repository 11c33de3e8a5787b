#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) with cargo-fuzz and libFuzzer.
# Not part of CI's default path: ./deploy/fuzz.sh [seconds-per-target] [target...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on a stable toolchain it runs with
# RUSTC_BOOTSTRAP=1 and without a sanitizer (Rust code is memory-safe; we hunt panics,
# overflows and hangs). Crashes land in tests/fuzz/artifacts/<target>/; new inputs in a
# scratch corpus, so tests/fuzz/corpus/ stays small (add an input there by hand when it proves something).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(stripe_signature webhook_payload usage_batch job_envelope); fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Beside the main build's, ignored by git, so the instrumented dependencies are built once.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/fuzz}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== $t: ${secs}s"
  # Debug assertions on: an arithmetic overflow is a crash, as in the test build.
  cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none --debug-assertions "$t" "$scratch/$t" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=5 -print_final_stats=1 2>&1 | grep -E "^(#|Done|stat::number_of_executed_units|==|thread|SUMMARY)|panicked|overflow" | tail -n 6
done
