#!/usr/bin/env bash
# The long Postgres source crash run: 1,000,000 committed row changes while Ferry is
# killed with kill -9 three times, its replication connection is cut and Postgres is
# restarted; every change must arrive once, in commit order (a few minutes).
# FERRY_SOURCE_CRASH_CHANGES overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_TEST_POSTGRES_URL="$(scripts/postgres.sh)"
export FERRY_TEST_POSTGRES_URL
trap 'scripts/postgres.sh stop' EXIT
FERRY_SOURCE_CRASH_CHANGES="${FERRY_SOURCE_CRASH_CHANGES:-1000000}" \
    cargo test --release --locked -p ferry --test sources_crash -- --nocapture
