"""Kafka produce over TLS against plaintext, on the same binary in one run (kcat, i.e.
librdkafka from C, built with OpenSSL by Debian: Ferry's own tree has no OpenSSL, so
ferry-bench's Kafka client cannot speak TLS).

    python3 bench/kafka_tls.py --ferry target/release/ferry --mib 256 --rounds 3

Two servers on one machine, one plaintext and one with `--tls-cert` (a certificate made
here with trustme), each producing the same file of 1 KiB records with kcat (acks=all,
linger.ms=5, batch.size=1 MiB, no compression) to a topic of 4 partitions with
durability "always"; the rounds alternate between them, and each round's ratio is
TLS over plaintext. A SASL_SSL run with SCRAM-SHA-512 (`--auth`) is measured too. The
server's own CPU time per MB produced (from /proc) separates Ferry's cost of TLS from the
client's, which shares the machine.
"""

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time

import trustme

# bench/kafka.py, beside this file (first on the path when run as a script).
from kafka import start, write_records


def kcat(kafka, security, args, **kw):
    return subprocess.run(["kcat", "-b", kafka, *security, *args], check=True, **kw)


def cpu_seconds(pid):
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(proc, kafka, security, topic, lines):
    """Seconds the produce took, and the server's and kcat's CPU seconds in that time."""
    kcat(kafka, security, ["-L", "-t", topic], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = cpu_seconds(proc.pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    kcat(kafka, security, ["-P", "-t", topic, "-X", "acks=all", "-X", "linger.ms=5", "-X", "batch.size=1048576",
                           "-X", "queue.buffering.max.kbytes=1048576", "-l", lines], stderr=subprocess.DEVNULL)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return took, cpu_seconds(proc.pid) - cpu, client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="target/release/ferry")
    ap.add_argument("--mib", type=int, default=256, help="MiB produced per round and system")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="ferry-bench-kafka-tls-") as d:
        n = a.mib * 1024
        lines = write_records(d, n)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca_pem, cert_pem, key_pem = (os.path.join(d, x) for x in ("ca.pem", "cert.pem", "key.pem"))
        ca.cert_pem.write_to_path(ca_pem)
        for blob in cert.cert_chain_pems:
            blob.write_to_path(cert_pem, append=True)
        cert.private_key_pem.write_to_path(key_pem)
        secured = os.path.join(d, "sasl")
        subprocess.run([a.ferry, "user", "create", "bench", "--password", "bench-pw", "--data-dir", secured],
                       check=True, capture_output=True)
        tls = ["--tls-cert", cert_pem, "--tls-key", key_pem, "--tls-listeners", "kafka"]
        systems = {
            "plaintext": (["--kafka-auto-create-topics"], []),
            "TLS": (["--kafka-auto-create-topics", *tls], ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={ca_pem}"]),
            "SASL_SSL SCRAM-SHA-512": (["--kafka-auto-create-topics", "--auth", "--super-users", "User:bench", *tls],
                                       ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={ca_pem}",
                                        "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=bench",
                                        "-X", "sasl.password=bench-pw"]),
        }
        servers = {}
        try:
            for name, (extra, _) in systems.items():
                data = secured if name.startswith("SASL") else os.path.join(d, name)
                servers[name] = start(a.ferry, data, "always", extra)
            secs = {name: [] for name in systems}
            cpus = {name: [] for name in systems}
            clients = {name: [] for name in systems}
            for r in range(a.rounds):
                for name, (_, security) in systems.items():
                    proc, kafka = servers[name]
                    took, cpu, client = produce(proc, kafka, security, f"bench-{r}", lines)
                    secs[name].append(took)
                    cpus[name].append(cpu)
                    clients[name].append(client)
            mb = n * 1024 / 1e6
            plain = [mb / s for s in secs["plaintext"]]
            print(f"Kafka produce with kcat, {a.mib} MiB of 1 KiB records per round, acks=all, durability always, "
                  f"{a.rounds} rounds alternating between the systems:")
            print()
            print("| listener | MB/s per round | median MB/s | median of per-round ratio to plaintext | server CPU ms per MB | kcat CPU ms per MB |")
            print("|---|---|---:|---:|---:|---:|")
            for name in systems:
                rates = [mb / s for s in secs[name]]
                ratios = [x / p for x, p in zip(rates, plain)]
                cpu_per_mb = statistics.median(c * 1000 / mb for c in cpus[name])
                client_per_mb = statistics.median(c * 1000 / mb for c in clients[name])
                print(f"| {name} | {', '.join(f'{x:.0f}' for x in rates)} | {statistics.median(rates):.0f} | "
                      f"{100 * statistics.median(ratios):.0f} % | {cpu_per_mb:.2f} | {client_per_mb:.2f} |")
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(20)


if __name__ == "__main__":
    main()
