#!/usr/bin/env bash
# Runs each fuzz target (FUZZ_TARGETS, default all) for the given seconds (default 600) on the nightly toolchain,
# then minimises the corpora in fuzz/corpus/, which CI replays on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets="${FUZZ_TARGETS:-batch_decode segment_recovery kafka_request subscription_journal}"
for target in $targets; do
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$secs" -max_len=65536
    cargo +nightly fuzz cmin "$target" "fuzz/corpus/$target"
done
