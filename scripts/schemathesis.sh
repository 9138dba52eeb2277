#!/usr/bin/env bash
# Runs schemathesis (tests/requirements.txt; this script installs nothing) against the
# OpenAPI document a fresh `ferry serve` serves: every phase, every check that applies
# (tests/schemathesis.toml says which do not and why). Fails on any finding, on any
# 5xx, and on a 5xx the server did not log with its cause.
#   SCHEMATHESIS_SECONDS       time budget (default 60; the long run: 1800)
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation (default: schemathesis's own)
#   SCHEMATHESIS_SEED          replay a run
#   FERRY_BIN                  the binary (default: target/debug/ferry, built if missing)
#   SCHEMATHESIS_REPORT_DIR    where the JUnit report and the server's log are kept
#                              (default: target/schemathesis)
# Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${SCHEMATHESIS_SECONDS:-60}"
bin="${FERRY_BIN:-$PWD/target/debug/ferry}"
if [ ! -x "$bin" ]; then
    cargo build --locked -p ferry
fi
command -v schemathesis >/dev/null || {
    echo "error: schemathesis is not installed: python3 -m pip install -r tests/requirements.txt" >&2
    exit 1
}

work="$(mktemp -d)"
report="${SCHEMATHESIS_REPORT_DIR:-$PWD/target/schemathesis}"
mkdir -p "$report"
server=""
stop() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" && wait "$server" || true
    fi
    cp "$work/server.log" "$report/server.log" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT

"$bin" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
    --log-format json --log info >"$work/server.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(grep -o '"http_addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "error: ferry serve did not start" >&2; cat "$work/server.log" >&2; exit 1; }
echo "schemathesis: ferry serve on $addr, ${seconds}s"

args=(--max-time "$seconds" --no-color --report junit --report-dir "$report")
[ -n "${SCHEMATHESIS_MAX_EXAMPLES:-}" ] && args+=(--max-examples "$SCHEMATHESIS_MAX_EXAMPLES")
[ -n "${SCHEMATHESIS_SEED:-}" ] && args+=(--seed "$SCHEMATHESIS_SEED")
status=0
schemathesis --config-file tests/schemathesis.toml run "http://$addr/v1/openapi.json" "${args[@]}" "$@" || status=$?

# Every 5xx answer must be in the log with its cause; none is expected at all.
logged=$(grep -c 'HTTP request failed with a server error' "$work/server.log" || true)
if [ "$logged" -gt 0 ]; then
    echo "error: the server answered $logged request(s) with 5xx:" >&2
    grep 'HTTP request failed with a server error' "$work/server.log" >&2
    status=1
fi
if ! kill -0 "$server" 2>/dev/null; then
    echo "error: ferry serve died during the run" >&2
    tail -20 "$work/server.log" >&2
    status=1
fi
exit "$status"
