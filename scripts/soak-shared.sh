#!/usr/bin/env bash
# The long shared-mode run: three nodes over a real PostgreSQL and s3s-fs under HTTP and
# Kafka producers, one node killed with kill -9 every 2.5 s and restarted with its data
# folder deleted, for FERRY_SHARED_SOAK_SECONDS (default 600); then every acknowledged
# record must be stored exactly once, in order per producer and partition.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_TEST_POSTGRES_URL="$(scripts/postgres.sh)"
export FERRY_TEST_POSTGRES_URL
trap 'scripts/postgres.sh stop' EXIT
if ! command -v s3s-fs >/dev/null; then
    echo "Installing: s3s-fs"
    cargo install --locked s3s-fs --version 0.14.1 --features binary
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
cargo build --locked -p ferry
FERRY_SHARED_SOAK_SECONDS="${FERRY_SHARED_SOAK_SECONDS:-600}" FERRY_BIN="$PWD/target/debug/ferry" \
    python3 -m pytest -q -p no:cacheprovider tests/shared -k kill_9
