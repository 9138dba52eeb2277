#!/usr/bin/env bash
# Ferry against NATS JetStream, RabbitMQ and Redis Streams, every workload on every
# system in one run on this machine (docs/benchmarks.md, "Ferry against its peers").
# Installs the peers when missing, builds the release binaries, runs `ferry-bench peers`,
# and writes docs/bench/<date>-peers.md, docs/bench/<date>-peers.svg and the peers
# section of docs/benchmarks.md. With the default backlog of 10,000,000 records it
# takes about an hour and needs about 12 GiB of free disk and 14 GiB of free memory
# (Redis keeps its backlog in memory).
#
#   bench/run-peers.sh                              # everything
#   bench/run-peers.sh --backlog-records 1000000    # a shorter run
#   bench/run-peers.sh --systems ferry-kafka,nats   # some systems only
#
# Extra arguments go to `ferry-bench peers` (see `ferry-bench peers --help`); the data
# folder is target/bench-data unless FERRY_BENCH_DIR names another.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/install-peers.sh
cargo build --release --locked -p ferry -p ferry-bench
date=$(date -u +%F)
dir=${FERRY_BENCH_DIR:-$PWD/target/bench-data}
mkdir -p "$dir" docs/bench
./target/release/ferry-bench --dir "$dir" peers \
    --out "docs/bench/$date-peers.md" --chart "docs/bench/$date-peers.svg" \
    --doc docs/benchmarks.md "$@"
echo "Wrote docs/bench/$date-peers.md, docs/bench/$date-peers.svg and docs/benchmarks.md"
