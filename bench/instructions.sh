#!/usr/bin/env bash
# Instructions the server spends per HTTP request, counted by callgrind (repeatable on a
# noisy machine, unlike seconds): `ferry serve` runs under valgrind while one client
# sends N requests in turn on one connection; the same run with N = 0 is subtracted.
#
#   bench/instructions.sh <ferry binary> produce 1000   # single-record produce
#   bench/instructions.sh <ferry binary> consume 150    # pull 10 records + ack them
#
# Needs valgrind (apt-get install valgrind) and python3.
set -euo pipefail
bin=${1:?usage: bench/instructions.sh <ferry binary> produce|consume N}
workload=${2:?produce or consume}
n=${3:?number of requests}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
case $workload in produce|consume) ;; *) echo "error: workload must be produce or consume" >&2; exit 1;; esac

client=$(mktemp)
trap 'rm -f "$client"' EXIT
cat > "$client" <<'PY'
import http.client, json, sys
port, workload, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
def call(method, path, body=None):
    c.request(method, path, body=json.dumps(body), headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read()
    assert r.status < 300, (r.status, data)
    return json.loads(data) if data else None
call("POST", "/v1/topics", {"name": "t", "partitions": 1})
if workload == "produce":
    for _ in range(n):
        call("POST", "/v1/topics/t/records", {"records": [{"key": "k", "value": "x" * 1000}]})
else:
    for _ in range(20):
        call("POST", "/v1/topics/t/records",
             {"records": [{"key": f"k{j}", "value": "x" * 1000} for j in range(100)]})
    call("POST", "/v1/subscriptions", {"name": "s", "topic": "t", "start": "earliest"})
    for _ in range(n):
        got = call("POST", "/v1/subscriptions/s/pull", {"max_records": 10})
        call("POST", "/v1/subscriptions/s/ack", {"lease_ids": [r["lease_id"] for r in got["records"]]})
PY

# Total instructions of one server run with `count` requests.
run() {
    local count=$1 dir port log pid
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    log="$dir/valgrind.log"
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin" serve \
        --data-dir "$dir/data" --http-addr "127.0.0.1:$port" --kafka-addr 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    python3 "$client" "$port" "$workload" "$count"
    kill -TERM "$pid"; wait "$pid" || true
    grep -oE 'Collected : [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+'
    rm -rf "$dir"
}
base=$(run 0)
total=$(run "$n")
echo "$workload: $(( (total - base) / n )) instructions per request ($n requests; $total total, $base without requests)"
