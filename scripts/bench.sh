#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, in one run on this machine (about 3 minutes).
# Extra arguments go to `ferry-bench all` (e.g. --seconds 10 --recovery-mib 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ferry -p ferry-bench
./target/release/ferry-bench all "$@"
