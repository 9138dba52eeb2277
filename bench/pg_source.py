"""Postgres sources: capture throughput and end-to-end lag of Ferry, against the ceiling
set in the same run by Postgres's own `pg_recvlogical` reading the same changes from a
second slot of the same publication.

    pip install 'psycopg[binary]' confluent-kafka   # bench/kafka.py, whose start-up it shares, imports the latter
    cargo build --release -p ferry
    python3 bench/pg_source.py --ferry target/release/ferry            # about 5 minutes
    python3 bench/pg_source.py --changes 100000 --seconds 5            # a quick look

Without `--pg-url` it starts its own PostgreSQL with scripts/postgres.sh (port
`--pg-port`, default 55433, data under /tmp) and stops it at the end.

Phase 1, catch-up. A source `bench` (snapshot "never") and a slot `ceiling` are made, the
source is paused, and `--changes` row changes are committed in transactions of 100: 80
inserts of a row with a 100-character text value, then 10 updates and 10 deletes of rows
inserted earlier in the same transaction. A marker row ends the load. Then each reader
catches up alone:
  - pg_recvlogical (pgoutput, proto_version 1, the source's publication) writing to a
    pipe that this script drains; timed from its start to the marker's bytes;
  - Ferry, timed from `POST /v1/sources/bench/resume` until the topic holds every record
    of the load (one per change, plus a tombstone per delete, plus the marker).
Rounds alternate the order (`--rounds`, default 2) since the machine is shared.

Phase 2, lag, `--lag-rounds` runs of each reader, alternating, each after a checkpoint
and a sync. A writer commits single-row inserts at `--rate` per second for `--seconds`.
  - Ferry (resumed; the run starts once Postgres's walsender has read the WAL again up
    to its end, which it does from the slot's restart position after every reconnect):
    a reader long-polls the topic (wait_ms 1000); a record's lag is the time it was read
    minus `value.source.ts_ms` (the commit time in whole milliseconds, so lags read up
    to 1 ms high).
  - pg_recvlogical (Ferry paused, a new slot) writing to a pipe that this script parses:
    a commit's lag is the time its message was read minus the commit time the message
    carries (microseconds).

The CPU time of each reader and of the walsender serving it comes from /proc; `--perf
FILE` records Ferry with `perf record` during the first catch-up.
"""

import argparse
import http.client
import json
import os
import signal
import struct
import subprocess
import tempfile
import threading
import time

# bench/kafka.py, beside this file (first on the path when run as a script).
from kafka import serve

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "bench"
TOPIC = "bench.public.t"
TXN_CHANGES = 100
PG_EPOCH_UNIX_S = 946684800  # 2000-01-01 in Unix seconds


# -- processes -----------------------------------------------------------------------

def start_ferry(ferry, data):
    """Starts `ferry serve` on free ports; its process and HTTP address."""
    proc, addr = serve(ferry, data, echo_warnings=True)
    return proc, addr["http_addr"]


def cpu_seconds(pid):
    """User + system CPU seconds the process has used (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid):
    """CPU seconds of each thread of the process, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        out[tid] = cpu_seconds(f"{pid}/task/{tid}")
    return out


class Http:
    """One kept-alive HTTP/1.1 connection to Ferry."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        headers = {"content-type": "application/json"} if data else {}
        for attempt in range(2):
            try:
                self.conn.request(method, path, data, headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, raw
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise

    def json(self, method, path, body=None, ok=(200, 201)):
        status, raw = self.call(method, path, body)
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw)


def topic_end(api):
    """Records the topic holds (the sum of its partitions' `latest`), 0 before it exists."""
    status, raw = api.call("GET", f"/v1/topics/{TOPIC}")
    if status == 404:
        return 0
    parts = json.loads(raw)["partitions"]
    n = parts if isinstance(parts, int) else len(parts)
    total = 0
    for p in range(n):
        r = api.json("GET", f"/v1/topics/{TOPIC}/partitions/{p}/records?offset=0&max_records=1&max_bytes=1")
        total += r["latest"]
    return total


def partitions(api):
    parts = api.json("GET", f"/v1/topics/{TOPIC}")["partitions"]
    return parts if isinstance(parts, int) else len(parts)


def source_status(api):
    return api.json("GET", f"/v1/sources/{SOURCE}")


def wait_idle(api, quiet_s=0.5, timeout=120):
    """Waits until the topic has not grown for `quiet_s` (the source has caught up)."""
    deadline = time.monotonic() + timeout
    last, since = topic_end(api), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = topic_end(api)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise RuntimeError("the source did not go idle")


def wait_sent(pg, slot, timeout=120):
    """Waits until the slot's walsender has read the WAL written so far: after a
    reconnect it reads again from the slot's restart position, skipping what was
    confirmed, and changes committed meanwhile wait behind that."""
    target = pg.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = pg.execute("SELECT r.sent_lsn >= %s FROM pg_stat_replication r "
                         "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
                         (target, slot)).fetchone()
        if row and row[0]:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the walsender of slot {slot} did not reach {target}")


def wait_state(api, state, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = source_status(api)["status"]
        if s["state"] == state:
            return
        time.sleep(0.05)
    raise RuntimeError(f"source not {state} after {timeout}s: {s}")


# -- Postgres ------------------------------------------------------------------------

def slot_pid(pg, slot):
    row = pg.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return row[0] if row else None


def new_slot(pg, slot):
    for _ in range(50):
        pid = slot_pid(pg, slot)
        if pid is None:
            break
        pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.1)
    pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def load(pg, changes, marker):
    """Commits `changes` row changes in transactions of 100 (80 inserts, 10 updates, 10
    deletes), then a marker row. Runs inside Postgres (a DO block that commits), so the
    client costs nothing. Returns (seconds, expected Ferry records)."""
    txns = max(1, changes // TXN_CHANGES)
    t = time.perf_counter()
    pg.execute(f"""
        DO $$
        DECLARE last bigint;
        BEGIN
          FOR i IN 1..{txns} LOOP
            INSERT INTO t (v, n)
              SELECT substr(repeat(md5(i::text || '-' || g::text), 4), 1, 100), g
              FROM generate_series(1, 80) g;
            last := currval('t_id_seq');
            UPDATE t SET n = n + 1000 WHERE id BETWEEN last - 79 AND last - 70;
            DELETE FROM t WHERE id BETWEEN last - 69 AND last - 60;
            COMMIT;
          END LOOP;
        END $$""")
    pg.execute("INSERT INTO t (v, n) VALUES (%s, -1)", (marker,))
    secs = time.perf_counter() - t
    # One record per change, a tombstone after each delete, and the marker.
    return secs, txns * TXN_CHANGES + txns * 10 + 1, txns * TXN_CHANGES


def recvlogical(url, slot, publication, extra=()):
    return subprocess.Popen(["pg_recvlogical", "-d", url, "-S", slot, "--start", "-o", "proto_version=1",
                             "-o", f"publication_names={publication}", "-f", "-", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- phase 1 -------------------------------------------------------------------------

def catch_up_ceiling(url, pg, marker):
    """pg_recvlogical from the slot's start to the marker: seconds and CPU seconds."""
    needle = marker.encode()
    t = time.perf_counter()
    proc = recvlogical(url, "ceiling", f"ferry_{SOURCE}")
    fd = proc.stdout.fileno()
    tail = b""
    total = 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            raise RuntimeError("pg_recvlogical ended early: " + proc.stderr.read().decode())
        total += len(chunk)
        if needle in tail + chunk:
            break
        tail = chunk[-len(needle):]
    secs = time.perf_counter() - t
    sender = slot_pid(pg, "ceiling")
    cpu = {"client": cpu_seconds(proc.pid), "walsender": cpu_seconds(sender) if sender else 0.0}
    stop(proc)
    return secs, cpu, total


def catch_up_ferry(api, pg, ferry_pid, expected, perf=None):
    """Resumes the source and waits until the topic holds `expected` more records
    (recording Ferry with `perf record` into the file `perf` if given)."""
    base = topic_end(api)
    recorder = None
    if perf:
        recorder = subprocess.Popen(["perf", "record", "-F", "199", "--call-graph", "dwarf", "-p", str(ferry_pid), "-o", perf],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    cpu0 = cpu_seconds(ferry_pid)
    threads0 = thread_cpu_seconds(ferry_pid)
    t = time.perf_counter()
    api.json("POST", f"/v1/sources/{SOURCE}/resume")
    sender = None
    deadline = time.monotonic() + 3600
    while topic_end(api) < base + expected:
        if sender is None:
            sender = slot_pid(pg, f"ferry_{SOURCE}")
        if time.monotonic() > deadline:
            raise RuntimeError("Ferry did not catch up within an hour")
        time.sleep(0.02)
    secs = time.perf_counter() - t
    sender = sender or slot_pid(pg, f"ferry_{SOURCE}")
    threads = thread_cpu_seconds(ferry_pid)
    busiest = max(threads[k] - threads0.get(k, 0.0) for k in threads)
    cpu = {"client": cpu_seconds(ferry_pid) - cpu0, "walsender": cpu_seconds(sender) if sender else 0.0,
           "busiest_thread": busiest}
    if recorder:
        stop(recorder, 120)
    return secs, cpu


# -- phase 2 -------------------------------------------------------------------------

def writer(url, rate, seconds, out, tag):
    """Commits single-row inserts at `rate` per second for `seconds`, their values
    starting with `tag`."""
    with psycopg.connect(url, autocommit=True) as c:
        value = (tag + "-" + "y" * 100)[:100]
        n = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            c.execute("INSERT INTO t (v, n) VALUES (%s, %s)", (value, i), prepare=True)
        out["sent"] = n
        out["seconds"] = time.perf_counter() - t0


def percentiles(lags):
    """p50, p99 and max of lags in the order they were read, and the worst lag in the
    first tenth of the run against the rest (a stall after a start shows there)."""
    if not lags:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    s = sorted(lags)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    tenth = max(1, len(lags) // 10)
    return {"p50": pick(0.50), "p99": pick(0.99), "max": s[-1], "count": len(s),
            "max_first_tenth": max(lags[:tenth]), "max_rest": max(lags[tenth:], default=None)}


def quiet_disk(pg):
    """A checkpoint and a sync, so that a lag run does not pay for earlier writes."""
    pg.execute("CHECKPOINT")
    os.sync()
    time.sleep(1)


def lag_ferry(api_addr, ferry_pid, url, rate, seconds):
    tag = f"lag-{os.urandom(4).hex()}"
    api = Http(api_addr)
    n_parts = partitions(api)
    starts = []
    for p in range(n_parts):
        starts.append(api.json("GET", f"/v1/topics/{TOPIC}/partitions/{p}/records?offset=0&max_records=1&max_bytes=1")["latest"])
    lags = []
    lock = threading.Lock()
    done = threading.Event()

    def read(p, offset):
        conn = Http(api_addr)
        while not done.is_set():
            status, raw = conn.call("GET", f"/v1/topics/{TOPIC}/partitions/{p}/records"
                                           f"?offset={offset}&max_records=1000&wait_ms=1000")
            now_ms = time.time() * 1000
            r = json.loads(raw)
            got = [now_ms - rec["value"]["source"]["ts_ms"] for rec in r["records"]
                   if isinstance(rec.get("value"), dict) and rec["value"].get("op") == "c"
                   and rec["value"]["after"]["v"].startswith(tag)]
            with lock:
                lags.extend(got)
            offset = r["next_offset"]

    readers = [threading.Thread(target=read, args=(p, starts[p]), daemon=True) for p in range(n_parts)]
    for r in readers:
        r.start()
    out = {}
    cpu0 = cpu_seconds(ferry_pid)
    writer(url, rate, seconds, out, tag)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len(lags) >= out["sent"]:
                break
        time.sleep(0.05)
    cpu = cpu_seconds(ferry_pid) - cpu0
    done.set()
    for r in readers:
        r.join(3)
    res = percentiles(lags)
    res.update(sent=out["sent"], rate=out["sent"] / out["seconds"], reader_cpu_s=cpu)
    return res


class Incomplete(Exception):
    pass


def parse_pgoutput(buf, pos):
    """One pgoutput message (proto 1) and the newline pg_recvlogical puts after it, from
    buf[pos:]: (type, commit time in µs or None, next position), or None if incomplete."""
    def cstring(i):
        j = buf.find(b"\0", i)
        if j < 0:
            raise Incomplete
        return j + 1

    def int_at(fmt, i):
        try:
            return struct.unpack_from(fmt, buf, i)[0]
        except struct.error:
            raise Incomplete

    try:
        kind = buf[pos:pos + 1]
        i = pos + 1
        commit_us = None
        if kind == b"":
            raise Incomplete
        elif kind == b"B":
            i += 20
        elif kind == b"C":
            commit_us = int_at(">q", i + 17)
            i += 25
        elif kind == b"R":
            i = cstring(cstring(i + 4)) + 1
            ncols = int_at(">h", i)
            i += 2
            for _ in range(ncols):
                i = cstring(i + 1) + 8
        elif kind == b"Y":
            i = cstring(cstring(i + 4))
        elif kind == b"O":
            i = cstring(i + 8)
        elif kind == b"I":
            i += 5
            ncols = int_at(">h", i)
            i += 2
            for _ in range(ncols):
                k = buf[i:i + 1]
                i += 1
                if k in (b"t", b"b"):
                    i += 4 + int_at(">i", i)
                elif k == b"":
                    raise Incomplete
                elif k not in (b"n", b"u"):
                    raise ValueError(f"tuple column kind {k!r}")
        else:
            raise ValueError(f"unexpected pgoutput message {kind!r}")
        if i >= len(buf):
            raise Incomplete
        if buf[i:i + 1] != b"\n":
            raise ValueError("no newline after a pgoutput message")
        return kind, commit_us, i + 1
    except Incomplete:
        return None


def lag_ceiling(url, pg, rate, seconds):
    new_slot(pg, "ceiling")
    proc = recvlogical(url, "ceiling", f"ferry_{SOURCE}")
    lags = []
    done = threading.Event()

    def read():
        fd = proc.stdout.fileno()
        buf = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            now_us = time.time() * 1e6
            buf += chunk
            pos = 0
            while True:
                m = parse_pgoutput(buf, pos)
                if m is None:
                    break
                kind, commit_us, pos = m
                if commit_us is not None:
                    lags.append((now_us - (commit_us + PG_EPOCH_UNIX_S * 1e6)) / 1000)
            buf = buf[pos:]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # connected and streaming
    out = {}
    cpu0 = cpu_seconds(proc.pid)
    writer(url, rate, seconds, out, "lag")
    deadline = time.monotonic() + 10
    while len(lags) < out["sent"] and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = cpu_seconds(proc.pid) - cpu0
    stop(proc)
    reader.join(3)
    res = percentiles(lags)
    res.update(sent=out["sent"], rate=out["sent"] / out["seconds"], reader_cpu_s=cpu)
    return res


# -- main ----------------------------------------------------------------------------

def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default="target/release/ferry")
    ap.add_argument("--pg-url", help="an existing server with wal_level=logical (default: start one)")
    ap.add_argument("--pg-port", type=int, default=55433, help="port of the server this script starts")
    ap.add_argument("--changes", type=int, default=1_000_000, help="row changes per catch-up round")
    ap.add_argument("--rounds", type=int, default=2, help="catch-up rounds (orders alternate)")
    ap.add_argument("--rate", type=float, default=2000, help="commits per second in the lag phase")
    ap.add_argument("--seconds", type=float, default=15, help="length of each lag run")
    ap.add_argument("--lag-rounds", type=int, default=2, help="lag runs of each (orders alternate)")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--perf", metavar="FILE", help="perf record Ferry during the first round's catch-up")
    a = ap.parse_args()

    pg_env = dict(os.environ, FERRY_PG_PORT=str(a.pg_port), FERRY_PG_DIR=f"/tmp/ferry-pg-bench-{a.pg_port}")
    script = os.path.join(HERE, "..", "scripts", "postgres.sh")
    url = a.pg_url or subprocess.run([script], env=pg_env, check=True, capture_output=True,
                                     text=True).stdout.strip()
    proc = None
    try:
        with tempfile.TemporaryDirectory(dir=a.dir, prefix="ferry-bench-pg-") as d, \
                psycopg.connect(url, autocommit=True) as pg:
            pg.execute("DROP TABLE IF EXISTS t")
            pg.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text, n int) WITH (autovacuum_enabled = false)")
            for slot in (f"ferry_{SOURCE}", "ceiling"):
                if slot_pid(pg, slot):
                    pg.execute("SELECT pg_terminate_backend(%s)", (slot_pid(pg, slot),))
                    time.sleep(0.5)
                pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,))
            pg.execute(f"DROP PUBLICATION IF EXISTS ferry_{SOURCE}")
            version = pg.execute("SHOW server_version").fetchone()[0]

            proc, addr = start_ferry(a.ferry, os.path.join(d, "data"))
            api = Http(addr)
            api.json("POST", "/v1/sources", {"name": SOURCE, "url": url, "tables": ["public.t"],
                                             "snapshot": "never"})
            wait_state(api, "streaming")  # the publication and the slot exist
            api.json("POST", f"/v1/sources/{SOURCE}/pause")

            rounds = []
            for r in range(a.rounds):
                ceiling_first = r % 2 == 0
                new_slot(pg, "ceiling")
                marker = f"ferry-bench-end-{r}-{os.urandom(6).hex()}"
                load_s, expected, changes = load(pg, a.changes, marker)
                pg.execute("CHECKPOINT")
                wal = pg.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 "
                                 "FROM pg_replication_slots WHERE slot_name = 'ceiling'").fetchone()[0]
                print(f"round {r + 1}: loaded {changes:,} changes in {load_s:.1f} s ({wal / 1e6:.0f} MB of WAL); "
                      f"{'pg_recvlogical' if ceiling_first else 'Ferry'} first", flush=True)
                res = {"round": r + 1, "order": "ceiling first" if ceiling_first else "ferry first",
                       "changes": changes, "ferry_records": expected, "wal_bytes": wal, "load_s": load_s}
                for who in (("ceiling", "ferry") if ceiling_first else ("ferry", "ceiling")):
                    if who == "ceiling":
                        secs, cpu, out_bytes = catch_up_ceiling(url, pg, marker)
                        res.update(ceiling_s=secs, ceiling_cpu=cpu, ceiling_output_bytes=out_bytes)
                    else:
                        secs, cpu = catch_up_ferry(api, pg, proc.pid, expected, a.perf if r == 0 else None)
                        api.json("POST", f"/v1/sources/{SOURCE}/pause")
                        res.update(ferry_s=secs, ferry_cpu=cpu)
                    print(f"  {who}: {secs:.2f} s, {changes / secs:,.0f} changes/s, CPU s: reader {cpu['client']:.2f} "
                          f"(busiest thread {cpu.get('busiest_thread', cpu['client']):.2f}), "
                          f"walsender {cpu['walsender']:.2f}", flush=True)
                res["ceiling_changes_per_s"] = changes / res["ceiling_s"]
                res["ferry_changes_per_s"] = changes / res["ferry_s"]
                res["ferry_records_per_s"] = expected / res["ferry_s"]
                res["ratio"] = res["ferry_changes_per_s"] / res["ceiling_changes_per_s"]
                rounds.append(res)

            lags = []
            for i in range(a.lag_rounds):
                for who in (("ferry", "ceiling") if i % 2 == 0 else ("ceiling", "ferry")):
                    if who == "ferry":
                        api.json("POST", f"/v1/sources/{SOURCE}/resume")
                        wait_state(api, "streaming")
                        t = time.perf_counter()
                        wait_sent(pg, f"ferry_{SOURCE}")
                        rescan_s = time.perf_counter() - t
                        wait_idle(api)
                        quiet_disk(pg)
                        lag = lag_ferry(addr, proc.pid, url, a.rate, a.seconds)
                        api.json("POST", f"/v1/sources/{SOURCE}/pause")
                    else:
                        quiet_disk(pg)
                        lag = lag_ceiling(url, pg, a.rate, a.seconds)
                    lag.update(system=who, run=i + 1)
                    if who == "ferry":
                        lag["walsender_rescan_s"] = rescan_s
                    print(f"lag, {who}: {lag}", flush=True)
                    lags.append(lag)
            pg.execute("SELECT pg_drop_replication_slot('ceiling')")
            api.call("DELETE", f"/v1/sources/{SOURCE}")

            print()
            print(f"PostgreSQL {version}; {a.changes:,} changes per round in transactions of {TXN_CHANGES} "
                  f"(80 inserts, 10 updates, 10 deletes); Ferry topic durability \"always\".")
            print()
            print("| catch-up | order | pg_recvlogical changes/s | Ferry changes/s (records/s) | Ferry / ceiling "
                  "| CPU s: pg_recvlogical + its walsender | CPU s: Ferry (busiest thread) + its walsender |")
            print("|---|---|---:|---:|---:|---:|---:|")
            for res in rounds:
                cc, fc = res["ceiling_cpu"], res["ferry_cpu"]
                print(f"| round {res['round']} | {res['order']} | {fmt(res['ceiling_changes_per_s'])} "
                      f"| {fmt(res['ferry_changes_per_s'])} ({fmt(res['ferry_records_per_s'])}) "
                      f"| {res['ratio']:.2f} | {cc['client']:.1f} + {cc['walsender']:.1f} "
                      f"| {fc['client']:.1f} ({fc['busiest_thread']:.1f}) + {fc['walsender']:.1f} |")
            print()
            print("| lag, commit to readable | commits/s | received of sent | p50 ms | p99 ms | max ms "
                  "| reader CPU µs per commit |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            names = {"ceiling": "pg_recvlogical (to a pipe)", "ferry": "Ferry (long-poll read)"}
            for l in lags:
                print(f"| {names[l['system']]}, run {l['run']} | {fmt(l['rate'])} | {l['count']} of {l['sent']} | {fmt(l['p50'], 1)} "
                      f"| {fmt(l['p99'], 1)} | {fmt(l['max'], 1)} | {fmt(l['reader_cpu_s'] / max(1, l['sent']) * 1e6)} |")
            print()
            print(json.dumps({"postgres": version, "changes": a.changes, "rounds": rounds,
                              "lag_ms": lags}))
    finally:
        if proc:
            proc.terminate()
            proc.wait(20)
        if not a.pg_url:
            subprocess.run([script, "stop"], env=pg_env, check=False)


if __name__ == "__main__":
    main()
