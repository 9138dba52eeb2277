#!/usr/bin/env bash
# The web console end to end in headless Chromium: starts the real `ferry serve` on free
# ports with a fresh data folder and runs tests/ui/console.test.mjs against it (Debian's
# chromium driven by playwright-core from npm, pinned in tests/ui/package-lock.json).
# Installs what is missing on a fresh Debian machine first: chromium, nodejs/npm, kcat,
# and the npm packages.
#   FERRY_BIN            the binary (default: target/debug/ferry, built if missing)
#   UPDATE_SCREENSHOTS=1 write the screenshots to docs/console/ (default: a temporary
#                        folder, so that a test run leaves the tree as it was)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v kcat >/dev/null || need_apt+=(kcat)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "Installing: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
# npm ci when playwright-core is missing or not the version package.json pins.
pinned="$(node -p "require('./tests/ui/package.json').dependencies['playwright-core']")"
installed="$(node -p "try { require('./tests/ui/node_modules/playwright-core/package.json').version } catch { '' }")"
if [ "$installed" != "$pinned" ]; then
    (cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)
fi

bin="${FERRY_BIN:-$PWD/target/debug/ferry}"
if [ ! -x "$bin" ]; then
    cargo build --locked -p ferry
fi

work="$(mktemp -d)"
server=""
stop() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" && wait "$server" || true
    fi
    rm -rf "$work"
}
trap stop EXIT

"$bin" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
    --push-allow-private --log-format json --log info >"$work/server.log" 2>&1 &
server=$!
addr="" kafka=""
for _ in $(seq 1 100); do
    addr="$(grep -o '"http_addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)"
    kafka="$(grep -o '"kafka_addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "error: ferry serve did not start" >&2; cat "$work/server.log" >&2; exit 1; }

if [ "${UPDATE_SCREENSHOTS:-}" = 1 ]; then
    shots="$PWD/docs/console"
else
    shots="$work/screenshots"
fi
echo "console test: ferry serve on $addr (Kafka $kafka), screenshots to $shots"
status=0
FERRY_URL="http://$addr" FERRY_KAFKA="$kafka" SCREENSHOT_DIR="$shots" \
    timeout 120 node tests/ui/console.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -40 "$work/server.log" >&2
    exit "$status"
fi
kill "$server" && wait "$server" || true

# The console on a server with authentication on: a super user made on the folder first.
"$bin" user create admin --password admin-pw --data-dir "$work/secured" >/dev/null
"$bin" serve --data-dir "$work/secured" --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0 \
    --auth --super-users User:admin --log-format json --log info >"$work/secured.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(grep -o '"http_addr":"[^"]*"' "$work/secured.log" | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/secured.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "error: ferry serve --auth did not start" >&2; cat "$work/secured.log" >&2; exit 1; }
FERRY_URL="http://$addr" FERRY_ADMIN="admin:admin-pw" \
    timeout 60 node tests/ui/console-auth.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -40 "$work/secured.log" >&2
fi
exit "$status"
