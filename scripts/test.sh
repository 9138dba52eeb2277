#!/usr/bin/env bash
# Runs every test Ferry has: unit, property and integration tests through the real
# binary, the kill -9 crash cycles (20), the replay of the fuzz corpora, Postgres
# sources against a real PostgreSQL, shared mode over PostgreSQL and a real
# S3-compatible server (s3s-fs), Kafka
# clients (kcat, confluent-kafka, kafka-python), a real Prometheus and an OTLP trace
# receiver against the real binary, the web console in headless Chromium, a short
# schemathesis run against the OpenAPI document, and a short run of the benchmark tool
# against Ferry and its peers.
# Installs what the tests need on a fresh Debian machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mount >/dev/null || need_apt+=(mount)
command -v kill >/dev/null || need_apt+=(procps)
command -v cc >/dev/null || need_apt+=(gcc)
command -v kcat >/dev/null || need_apt+=(kcat)
# A real Prometheus server scrapes Ferry in tests/metrics (promtool comes with it).
command -v prometheus >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "Installing: ${need_apt[*]}"
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi

# A fresh clone never reuses incremental state: skip writing it (it doubles the target
# folder). Free disk is printed because a full disk is the usual cause of odd link errors.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi
df -h . | tail -1

python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# A real PostgreSQL with logical replication for the source tests (installed when
# missing, started on 127.0.0.1:55432; stopped when the tests end).
FERRY_TEST_POSTGRES_URL="$(scripts/postgres.sh)"
export FERRY_TEST_POSTGRES_URL
# The authority that signed the test server's TLS certificate.
export FERRY_TEST_POSTGRES_CA="/tmp/ferry-pg-${FERRY_PG_PORT:-55432}/ca.crt"
trap 'scripts/postgres.sh stop' EXIT

# A real S3-compatible server for shared mode's tests (crates/ferry-shared, tests/shared):
# s3s-fs keeps objects as files. 0.14.1 is the last release that builds with Ferry's Rust.
if ! command -v s3s-fs >/dev/null; then
    echo "Installing: s3s-fs"
    cargo install --locked s3s-fs --version 0.14.1 --features binary
fi

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads 2
# Kafka clients Ferry did not write, webhook signatures checked by the
# standardwebhooks package, /metrics scraped by a real Prometheus, and OTLP traces
# received with opentelemetry-proto, against the real binary.
FERRY_BIN="$PWD/target/debug/ferry" python3 -m pytest -q -p no:cacheprovider tests/kafka tests/security tests/push tests/metrics tests/traces tests/shared
# The Kafka SASL and ACL tests again with the listener speaking TLS (SASL_SSL).
FERRY_KAFKA_SECURITY=SASL_SSL FERRY_BIN="$PWD/target/debug/ferry" python3 -m pytest -q -p no:cacheprovider tests/security/test_kafka_sasl_acl.py
# The web console in headless Chromium (Debian's chromium, npm playwright-core).
FERRY_BIN="$PWD/target/debug/ferry" scripts/test-ui.sh
# The HTTP API against its OpenAPI document: schemathesis, every phase and check that
# applies, 60 s (the long run: SCHEMATHESIS_SECONDS=1800 scripts/schemathesis.sh).
FERRY_BIN="$PWD/target/debug/ferry" SCHEMATHESIS_SECONDS=60 scripts/schemathesis.sh
# The benchmark tool must keep working: a tiny run of every workload, and a tiny peer
# comparison (Ferry over HTTP and Kafka, NATS, RabbitMQ, Redis) that must not fail.
cargo run --locked -p ferry-bench -- smoke --ferry-bin target/debug/ferry
bench/install-peers.sh
cargo run --locked -p ferry-bench -- peers --ferry-bin target/debug/ferry --strict \
    --seconds 1 --latency-seconds 1 --consume-records 2000 --backlog-records 5000
