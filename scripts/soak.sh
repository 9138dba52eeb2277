#!/usr/bin/env bash
# The long crash soak: 1,000 kill -9 cycles under concurrent producers (about 15 minutes);
# the log is checked against every acknowledgement every 100 restarts and at the end.
# FERRY_CRASH_CYCLES overrides the count; FERRY_CRASH_SEED replays a failing run.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_CRASH_CYCLES="${FERRY_CRASH_CYCLES:-1000}" FERRY_CRASH_VERIFY_EVERY="${FERRY_CRASH_VERIFY_EVERY:-100}" cargo test --release --locked -p ferry --test crash -- --nocapture
