#!/usr/bin/env bash
# The Kafka-protocol benchmark of docs/benchmarks.md (librdkafka via confluent-kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
cargo build --release --locked -p ferry
python3 bench/kafka.py --ferry target/release/ferry "$@"
