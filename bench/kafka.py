"""Kafka-protocol benchmark of Ferry with librdkafka (confluent-kafka), against the
disk's own sequential bandwidth measured in the same run.

    ./scripts/bench-kafka.sh            # builds release, then runs this (about 2 minutes)
    python3 bench/kafka.py --ferry target/release/ferry --mib 1024

Workloads:
  - produce with kcat (librdkafka from C): 1 GiB of 1 KiB records read from a file,
    acks=all, batching on (linger.ms=5, batch.size=1 MiB), no compression, durability
    "always" (every batch is fsynced before it is acknowledged);
  - produce with confluent-kafka (librdkafka from Python), same settings: the Python
    loop that calls produce() is the limit here, shown for comparison;
  - consume: one consumer reading everything back from the beginning;
  - connections: N idle client connections (ApiVersions done), and the server's
    resident memory before and after, as bytes per connection.
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def disk_seq_mb_s(folder, mib):
    path = os.path.join(folder, "disk-seq")
    chunk = b"\x5a" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    t = time.perf_counter()
    for _ in range(mib):
        os.write(fd, chunk)
    os.fdatasync(fd)
    secs = time.perf_counter() - t
    os.close(fd)
    os.unlink(path)
    return mib * 1048576 / secs / 1e6


def serve(ferry, data, args=(), echo_warnings=False):
    """Starts `ferry serve` on free ports with `args`; its process and the fields of its
    "Ferry is ready." log line (`http_addr`, `kafka_addr`, ...)."""
    proc = subprocess.Popen([ferry, "serve", "--data-dir", data, "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0",
                             "--log-format", "json", "--log", "warn,ferry::serve=info", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    addr = {}
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            try:
                f = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if f.get("message") == "Ferry is ready.":
                addr.update(f)
                ready.set()
            elif echo_warnings and (f.get("level") in ("WARN", "ERROR") or "error" in f):
                print("ferry:", line.strip())

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(30), "ferry did not start"
    return proc, addr


def start(ferry, data, durability, extra=()):
    """Starts `ferry serve` on free ports; its process and Kafka address."""
    proc, addr = serve(ferry, data, ["--durability", durability, *extra])
    return proc, addr["kafka_addr"]


def write_records(folder, n):
    """kcat's input: `n` lines of 1 KiB (newline included), synced; its path."""
    lines = os.path.join(folder, "records.txt")
    with open(lines, "wb") as f:
        line = b"x" * 1023 + b"\n"
        for _ in range(n):
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    return lines


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def api_versions_frame():
    body = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 5) + b"bench"
    return struct.pack(">i", len(body)) + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="target/release/ferry")
    ap.add_argument("--mib", type=int, default=1024, help="MiB to produce")
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--durability", default="always", choices=["always", "interval", "never"],
                    help="the benchmark topic's durability (never: the client's own ceiling)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="ferry-bench-kafka-") as d:
        # kcat's input, written and synced first so that its write-back does not compete
        # with the measurements.
        n = a.mib * 1024
        lines = write_records(d, n)
        os.sync()
        disk = disk_seq_mb_s(d, 1024)
        proc, kafka = start(a.ferry, os.path.join(d, "data"), a.durability)
        try:
            admin = AdminClient({"bootstrap.servers": kafka})
            admin.create_topics([NewTopic("bench", num_partitions=4, replication_factor=1)])["bench"].result(10)
            admin.create_topics([NewTopic("bench-kcat", num_partitions=4, replication_factor=1)])["bench-kcat"].result(10)
            t = time.perf_counter()
            subprocess.run(["kcat", "-P", "-b", kafka, "-t", "bench-kcat", "-X", "acks=all", "-X", "linger.ms=5",
                            "-X", "batch.size=1048576", "-X", "queue.buffering.max.kbytes=1048576", "-l", lines],
                           check=True, stderr=subprocess.DEVNULL)
            kcat_s = time.perf_counter() - t
            os.unlink(lines)
            value = b"\x42" * 1024
            p = Producer({"bootstrap.servers": kafka, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                          "queue.buffering.max.kbytes": 1 << 20, "queue.buffering.max.messages": 1_000_000,
                          "compression.type": "none"})
            t = time.perf_counter()
            for i in range(n):
                while True:
                    try:
                        p.produce("bench", value=value, partition=i % 4)
                        break
                    except BufferError:
                        p.poll(0.001)
            assert p.flush(120) == 0
            produce_s = time.perf_counter() - t
            c = Consumer({"bootstrap.servers": kafka, "group.id": "bench", "enable.auto.commit": False,
                          "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20})
            c.assign([TopicPartition("bench", i, 0) for i in range(4)])
            got = 0
            t = time.perf_counter()
            while got < n:
                msgs = c.consume(10000, 1.0)
                got += sum(1 for m in msgs if not m.error())
            consume_s = time.perf_counter() - t
            c.close()
            # The disk again: ratios use the faster of the two samples, so a slow moment
            # of a shared disk never flatters Ferry.
            disk_after = disk_seq_mb_s(d, 1024)
            disk_before, disk = disk, max(disk, disk_after)
            before = rss_kib(proc.pid)
            host, port = kafka.rsplit(":", 1)
            socks = []
            for _ in range(a.connections):
                s = socket.create_connection((host, int(port)))
                s.sendall(api_versions_frame())
                s.recv(65536)
                socks.append(s)
            time.sleep(0.5)
            after = rss_kib(proc.pid)
            for s in socks:
                s.close()
            mb = n * 1024 / 1e6
            print(f"Disk (same run): sequential write {disk_before:.0f} MB/s before and {disk_after:.0f} MB/s after the runs "
                  f"(1 MiB writes, one fdatasync at the end); ratios use {disk:.0f} MB/s.")
            print()
            print("| Kafka protocol, librdkafka | records | MB/s | records/s | of disk sequential |")
            print("|---|---|---|---|---|")
            print(f"| produce with kcat, acks=all, 1 KiB, durability {a.durability} | {n} | {mb / kcat_s:.0f} | {n / kcat_s:.0f} | {100 * mb / kcat_s / disk:.0f} % |")
            print(f"| produce with confluent-kafka (Python-bound), acks=all, 1 KiB, durability {a.durability} | {n} | {mb / produce_s:.0f} | {n / produce_s:.0f} | {100 * mb / produce_s / disk:.0f} % |")
            print(f"| consume from the beginning | {n} | {mb / consume_s:.0f} | {n / consume_s:.0f} | |")
            print()
            print(f"Server RSS with {a.connections} idle connections: {after / 1024:.1f} MiB (was {before / 1024:.1f} MiB): "
                  f"{(after - before) * 1024 / a.connections / 1024:.1f} KiB per connection.")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
