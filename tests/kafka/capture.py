"""Records byte-exact Kafka requests from real clients, as golden fixtures for the
request decoder (crates/ferry-kafka/tests/golden.rs).

    python3 tests/kafka/capture.py        # needs target/debug/ferry, kcat, confluent-kafka, kafka-python
    python3 tests/kafka/capture.py static # only the static-membership sessions, keeping the rest

The binary is FERRY_BIN when set, as for the tests.

It starts Ferry advertising a recording proxy, drives kcat, confluent-kafka and
kafka-python through typical sessions, and keeps the first request of each API and
version per client in crates/ferry-kafka/tests/fixtures/<client>/<api>-v<version>.bin
(the frame without its 4-byte length).
"""

import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/ferry-kafka/tests/fixtures"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/conftest.py
from conftest import BIN, Ferry  # noqa: E402

API_NAMES = {0: "produce", 1: "fetch", 2: "list_offsets", 3: "metadata", 8: "offset_commit", 9: "offset_fetch",
             10: "find_coordinator", 11: "join_group", 12: "heartbeat", 13: "leave_group", 14: "sync_group",
             15: "describe_groups", 16: "list_groups", 18: "api_versions", 19: "create_topics", 20: "delete_topics",
             22: "init_producer_id", 32: "describe_configs", 33: "alter_configs", 37: "create_partitions",
             42: "delete_groups", 44: "incremental_alter_configs", 47: "offset_delete",
             21: "delete_records", 23: "offset_for_leader_epoch", 35: "describe_log_dirs", 43: "elect_leaders",
             60: "describe_cluster", 61: "describe_producers"}


class Proxy:
    def __init__(self, upstream):
        self.upstream = upstream
        self.client = "none"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            host, port = self.upstream.rsplit(":", 1)
            u = socket.create_connection((host, int(port)))
            threading.Thread(target=self.pump_requests, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c), daemon=True).start()

    def pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pump_requests(self, src, dst):
        buf = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack(">i", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    self.save(buf[4:4 + n])
                    buf = buf[4 + n:]
        except OSError:
            pass

    def save(self, frame):
        key, version = struct.unpack(">hh", frame[:4])
        name = API_NAMES.get(key, f"api{key}")
        path = OUT / self.client / f"{name}-v{version}.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(frame)


def config_session(b):
    """Settings and group offsets changed by confluent-kafka and kafka-python."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic("golden3", 1, 1)])["golden3"].result(10)
    res = ConfigResource(ConfigResource.Type.TOPIC, "golden3", set_config={"retention.ms": "3600000"})
    admin.alter_configs([res])[res].result(10)
    res = ConfigResource(ConfigResource.Type.TOPIC, "golden3", incremental_configs=[
        ConfigEntry("max.message.bytes", "4096", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([res])[res].result(10)
    c = Consumer({"bootstrap.servers": b, "group.id": "og"})
    c.commit(offsets=[TopicPartition("golden3", 0, 1)], asynchronous=False)
    c.close()
    return admin


def offset_delete_session(b):
    from kafka import KafkaAdminClient, TopicPartition
    a = KafkaAdminClient(bootstrap_servers=b)
    a.delete_group_offsets("og", [TopicPartition("golden3", 0)])
    a.close()


def partition_admin_session(b):
    """DeleteRecords, ElectLeaders, DescribeCluster and an epoch-validating consumer
    (confluent-kafka); DescribeLogDirs and DescribeProducers (kafka-python)."""
    from confluent_kafka import Consumer, ElectionType, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic("golden4", 1, 1)])["golden4"].result(10)
    tp = TopicPartition("golden4", 0, -1)
    admin.delete_records([tp])[tp].result(10)
    admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("golden4", 0)]).result(10)
    admin.describe_cluster(include_authorized_operations=True).result(10)
    c = Consumer({"bootstrap.servers": b, "group.id": "eg"})
    c.assign([TopicPartition("golden4", 0, 0, leader_epoch=0)])
    t = time.time()
    while time.time() - t < 2:
        c.poll(0.2)
    c.close()
    return admin


def partition_describe_session(b):
    from kafka import KafkaAdminClient, TopicPartition
    a = KafkaAdminClient(bootstrap_servers=b)
    a.describe_log_dirs()
    a.describe_producers([TopicPartition("golden4", 0)])
    a.close()


def static_session(proxy, b):
    """Static members (group.instance.id) of both Python clients: JoinGroup, SyncGroup,
    Heartbeat and OffsetCommit carry the instance id; then a dynamic kafka-python member
    leaves with a LeaveGroup batch."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaConsumer, OffsetAndMetadata
    from kafka import TopicPartition as KafkaTopicPartition
    proxy.client = "confluent-kafka-static"
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic("golden5", 2, 1)])["golden5"].result(10)
    c = Consumer({"bootstrap.servers": b, "group.id": "sg", "group.instance.id": "static-1",
                  "auto.offset.reset": "earliest", "heartbeat.interval.ms": 300})
    c.subscribe(["golden5"])
    t = time.time()
    while time.time() - t < 4:
        c.poll(0.2)
    c.commit(offsets=[TopicPartition("golden5", 0, 1)], asynchronous=False)
    c.close()
    admin.describe_consumer_groups(["sg"])["sg"].result(10)
    proxy.client = "kafka-python-static"
    kc = KafkaConsumer("golden5", bootstrap_servers=b, group_id="spy", group_instance_id="static-2",
                       auto_offset_reset="earliest", consumer_timeout_ms=3000, heartbeat_interval_ms=300)
    list(kc)
    kc.commit({KafkaTopicPartition("golden5", 0): OffsetAndMetadata(1, "", -1)})
    kc.close()  # a static member does not leave
    # A dynamic member does, with LeaveGroup v3+ (a batch of one).
    kc = KafkaConsumer("golden5", bootstrap_servers=b, group_id="dpy", auto_offset_reset="earliest",
                       consumer_timeout_ms=3000)
    list(kc)
    kc.close()


def run(cmd, **kw):
    subprocess.run(cmd, check=False, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def main():
    only_static = sys.argv[1:] == ["static"]
    if only_static:
        for client in ["confluent-kafka-static", "kafka-python-static"]:
            shutil.rmtree(OUT / client, ignore_errors=True)
    else:
        shutil.rmtree(OUT, ignore_errors=True)
    with tempfile.TemporaryDirectory() as d:
        # The proxy must know Ferry's port and Ferry the proxy's: start Ferry on a fixed
        # free port advertising the proxy.
        s = socket.socket(); s.bind(("127.0.0.1", 0)); kport = s.getsockname()[1]; s.close()
        proxy = Proxy(f"127.0.0.1:{kport}")
        f = Ferry(d)
        f.proc = subprocess.Popen([BIN, "serve", "--data-dir", d, "--http-addr", "127.0.0.1:0",
                                   "--kafka-addr", f"127.0.0.1:{kport}", "--kafka-advertised-addr", f"127.0.0.1:{proxy.port}"],
                                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        time.sleep(1)
        b = f"127.0.0.1:{proxy.port}"
        if only_static:
            static_session(proxy, b)
            f.stop()
            print("captured:", sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*-static/*.bin")))
            return

        from confluent_kafka.admin import AdminClient, NewTopic
        proxy.client = "confluent-kafka"
        setup = AdminClient({"bootstrap.servers": b})  # kept alive until the answer
        setup.create_topics([NewTopic("golden", 2, 1)])["golden"].result(10)
        proxy.client = "kcat"
        run(["kcat", "-b", b, "-L"])
        run(["kcat", "-b", b, "-P", "-t", "golden", "-K:", "-z", "gzip", "-H", "h=v"], input=b"k:v1\nk:v2\n")
        run(["kcat", "-b", b, "-C", "-t", "golden", "-o", "beginning", "-e"])
        run(["kcat", "-b", b, "-G", "kcatgroup", "-e", "golden"])

        proxy.client = "confluent-kafka"
        from confluent_kafka import Consumer, Producer
        admin = AdminClient({"bootstrap.servers": b})
        admin.create_topics([NewTopic("golden2", 1, 1)])["golden2"].result(10)
        from confluent_kafka.admin import ConfigResource
        res = ConfigResource(ConfigResource.Type.TOPIC, "golden2")
        admin.describe_configs([res])[res].result(10)
        p = Producer({"bootstrap.servers": b, "enable.idempotence": True, "compression.type": "zstd"})
        p.produce("golden2", key="k", value="v", headers=[("h", b"v")])
        p.flush(10)
        c = Consumer({"bootstrap.servers": b, "group.id": "cg", "auto.offset.reset": "earliest"})
        c.subscribe(["golden2"])
        t = time.time()
        while time.time() - t < 4:
            c.poll(0.2)
        c.commit(asynchronous=False)
        c.close()
        admin.list_consumer_groups().result(10)
        admin.delete_consumer_groups(["cg"])["cg"].result(10)
        admin.delete_topics(["golden2"])["golden2"].result(10)
        config_session(b)
        partition_admin_session(b)

        proxy.client = "kafka-python"
        from kafka import KafkaConsumer, KafkaProducer
        kp = KafkaProducer(bootstrap_servers=b)
        kp.send("golden", b"py").get(10)
        kp.close()
        kc = KafkaConsumer("golden", bootstrap_servers=b, group_id="pyg", auto_offset_reset="earliest", consumer_timeout_ms=3000)
        list(kc)
        kc.close()
        offset_delete_session(b)
        partition_describe_session(b)
        static_session(proxy, b)
        f.stop()
    print("captured:", sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*.bin")))


if __name__ == "__main__":
    main()
