#!/usr/bin/env bash
# Push subscriptions benchmark of docs/benchmarks.md: deliveries per second to a local
# endpoint next to wrk on the same endpoint, and memory behind an open breaker.
# Installs wrk from Debian when missing. Extra arguments go to `ferry-bench push`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk
fi
cargo build --release --locked -p ferry -p ferry-bench
./target/release/ferry-bench push "$@"
