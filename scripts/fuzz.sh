#!/usr/bin/env bash
# Runs each fuzz target (FUZZ_TARGETS, default all) for the given seconds (default 600)
# on the nightly toolchain (or, without one, on stable with RUSTC_BOOTSTRAP=1, which
# lets cargo-fuzz use the sanitizer flags), then minimises the corpora in fuzz/corpus/,
# which CI replays on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets="${FUZZ_TARGETS:-batch_decode segment_recovery kafka_request subscription_journal group_assignment traceparent sasl_plain sasl_scram pgoutput_decode}"
toolchain=(+nightly)
if ! rustup run nightly true >/dev/null 2>&1; then
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi
for target in $targets; do
    cargo "${toolchain[@]}" fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$secs" -max_len=65536
    cargo "${toolchain[@]}" fuzz cmin "$target" "fuzz/corpus/$target"
done
