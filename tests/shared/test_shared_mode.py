"""Shared mode through the real binary: several `ferry serve` nodes over one Postgres
database and one S3-compatible bucket (tests/shared/cluster.py), with HTTP and Kafka
clients spread over them. Nodes are killed with SIGKILL and come back with their data
folder deleted; the object store and Postgres go away and come back."""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import ROOT, cluster, metadata_url, psql_value, s3  # noqa: F401 (fixtures)


def call(base, method, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for_topic(node, name, seconds=10):
    """A topic made on another node is seen within the refresh period (1 s)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if call(node.http, "GET", f"/v1/topics/{name}")[0] == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not seen on {node.http}")


def read_partition(node, topic, partition):
    """Every record of a partition as (offset, key, value), read over HTTP."""
    out, offset = [], 0
    while True:
        status, got = call(node.http, "GET",
                           f"/v1/topics/{topic}/partitions/{partition}/records?offset={offset}&max_records=1000")
        assert status == 200, got
        for r in got["records"]:
            out.append((r["offset"], r["key"], r["value"]))
        # (No progress before the end: the rest waits behind an open transaction.)
        if got["next_offset"] >= got["latest"] or got["next_offset"] == offset:
            return out
        offset = got["next_offset"]


def test_nodes_share_topics_and_records_over_http_and_kafka(cluster):
    a, b, c = cluster.add(), cluster.add(), cluster.add()
    status, t = call(a.http, "POST", "/v1/topics", {"name": "orders", "partitions": 3})
    assert status == 201, t
    assert call(a.http, "POST", "/v1/topics", {"name": "orders"})[0] == 409
    wait_for_topic(b, "orders")
    wait_for_topic(c, "orders")
    status, got = call(b.http, "POST", "/v1/topics/orders/records",
                       {"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(30)]})
    assert status == 200, got
    # An idempotent Kafka producer on the third node; a Kafka reader on the first.
    p = Producer({"bootstrap.servers": c.kafka, "enable.idempotence": True})
    for i in range(30, 60):
        p.produce("orders", key=f"k{i}", value=json.dumps({"n": i}).encode())
    assert p.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": a.kafka, "group.id": "unused",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition("orders", p, 0) for p in range(3)])
    seen = defaultdict(list)
    deadline = time.time() + 30
    while sum(len(v) for v in seen.values()) < 60 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen[m.partition()].append((m.offset(), m.key().decode()))
    consumer.close()
    assert sorted(k for v in seen.values() for _, k in v) == sorted(f"k{i}" for i in range(60))
    for partition, records in seen.items():
        offsets = [o for o, _ in records]
        assert offsets == list(range(len(offsets))), f"partition {partition}: dense, in order"
        # The same records, at the same offsets, over HTTP from another node.
        over_http = [(o, k) for o, k, _ in read_partition(b, "orders", partition)]
        assert over_http == records
    # Keys land on the same partition whichever node and protocol routed them.
    for partition, records in seen.items():
        for _, k in records:
            assert k in {key for _, key in seen[partition]}
    # The node that took the HTTP produce wrote objects, and says so.
    with urllib.request.urlopen(b.http + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    written = [line for line in metrics.splitlines() if line.startswith("ferry_shared_objects_written_total ")]
    assert written and float(written[0].split()[1]) >= 1, written
    # Kafka and HTTP agree on every partition's end, from every node.
    for node in (a, b, c):
        status, d = call(node.http, "GET", "/v1/topics/orders")
        assert status == 200
        assert sum(p["latest"] for p in d["partition_stats"]) == 60


def test_what_shared_mode_does_not_do_yet_is_refused_clearly(cluster):
    a = cluster.add()
    call(a.http, "POST", "/v1/topics", {"name": "t", "partitions": 1})
    status, p = call(a.http, "PATCH", "/v1/topics/t", {"retention_ms": 1000})
    assert (status, p["type"]) == (501, "urn:ferry:problem:not-in-shared-mode")
    status, p = call(a.http, "POST", "/v1/topics", {"name": "c", "cleanup_policy": "compact"})
    assert (status, p["type"]) == (501, "urn:ferry:problem:not-in-shared-mode")


def test_two_nodes_appending_to_one_partition_give_dense_offsets(cluster):
    a, b = cluster.add(), cluster.add()
    call(a.http, "POST", "/v1/topics", {"name": "one", "partitions": 1})
    wait_for_topic(b, "one")
    acked = {}

    def produce(node, tag):
        for i in range(40):
            status, got = call(node.http, "POST", "/v1/topics/one/records",
                               {"records": [{"value": f"{tag}{i}-{j}"} for j in range(3)]})
            assert status == 200, got
            for j, o in enumerate(got["offsets"]):
                acked[f"{tag}{i}-{j}"] = o["offset"]

    threads = [threading.Thread(target=produce, args=(n, t)) for n, t in ((a, "a"), (b, "b"), (a, "c"), (b, "d"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_partition(b, "one", 0)
    assert [o for o, _, _ in records] == list(range(480)), "offsets dense, none lost"
    assert {v: o for o, _, v in records} == acked, "each record once, where its answer said"


def committed_values(node, topic, partition):
    """The values a read_committed reader gets from a partition (HTTP reads stop at the
    last stable offset and skip aborted transactions' records), decoded: values that
    are not JSON come as base64."""
    return [base64.b64decode(v["base64"]).decode() if isinstance(v, dict) else v
            for _, _, v in read_partition(node, topic, partition)]


def test_kill_9_nodes_mid_load_loses_no_acknowledged_record(cluster):
    nodes = [cluster.add(), cluster.add(), cluster.add()]
    call(nodes[0].http, "POST", "/v1/topics", {"name": "load", "partitions": 4})
    call(nodes[0].http, "POST", "/v1/topics", {"name": "txns", "partitions": 2})
    for n in nodes[1:]:
        wait_for_topic(n, "load")
        wait_for_topic(n, "txns")
    acked = {}  # value -> (partition, offset)
    lock = threading.Lock()
    stop = threading.Event()
    # A queue subscription drained through every node in turn while nodes die.
    status, sub = call(nodes[1].http, "POST", "/v1/subscriptions",
                       {"name": "drain", "topic": "load", "start": "earliest"})
    assert status == 201, sub
    delivered, done, again = set(), set(), []

    def drain_once(node):
        status, got = call(node.http, "POST", "/v1/subscriptions/drain/pull",
                           {"max_records": 100, "wait_ms": 100}, timeout=15)
        if status != 200:
            return
        values = [r["key"] for r in got["records"]]  # each record's key is its value
        with lock:
            again.extend(v for v in values if v in done)
            delivered.update(values)
        ids = [r["lease_id"] for r in got["records"]]
        if ids:
            status, _ = call(node.http, "POST", "/v1/subscriptions/drain/ack",
                             {"lease_ids": ids}, timeout=15)
            if status == 200:
                with lock:
                    done.update(values)

    def consumer():
        i = 0
        while not stop.is_set():
            try:
                drain_once(nodes[i % 3])
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
            i += 1

    def http_producer(tag):
        i = 0
        while not stop.is_set():
            node = nodes[i % 3]
            value = f"h{tag}-{i}"
            i += 1
            try:
                status, got = call(node.http, "POST", "/v1/topics/load/records",
                                   {"records": [{"key": value, "value": value}]}, timeout=10)
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)  # the node is down: try the next
                continue
            if status == 200:
                o = got["offsets"][0]
                with lock:
                    acked[value] = (o["partition"], o["offset"])
            else:
                time.sleep(0.05)

    def kafka_producer(tag):
        # Bootstrapped at every node: the client moves on when one dies.
        p = Producer({"bootstrap.servers": ",".join(n.kafka for n in nodes),
                      "enable.idempotence": True, "message.timeout.ms": 60000,
                      "linger.ms": 5})

        def done(err, msg):
            if err is None:
                with lock:
                    acked[msg.value().decode()] = (msg.partition(), msg.offset())

        i = 0
        while not stop.is_set():
            value = f"k{tag}-{i}"
            i += 1
            p.produce("load", key=value, value=value, on_delivery=done)
            p.poll(0)
            time.sleep(0.002)
        assert p.flush(90) == 0, "every Kafka record is acknowledged in the end"

    committed, uncertain = set(), set()  # transaction numbers

    def txn_producer():
        # Transactions of 5 records while nodes die (their coordinator among them): a
        # read_committed reader sees each whole or not at all, a committed one once.
        def make():
            p = Producer({"bootstrap.servers": ",".join(n.kafka for n in nodes),
                          "transactional.id": "soak", "transaction.timeout.ms": 30000,
                          "message.timeout.ms": 30000, "linger.ms": 5,
                          "reconnect.backoff.max.ms": 1000})
            p.init_transactions(60)
            return p

        p, n = None, 0
        while not stop.is_set():
            try:
                if p is None:
                    p = make()
                p.begin_transaction()
                for i in range(5):
                    p.produce("txns", key=str(n), value=f"t{n}-{i}")
                p.commit_transaction(60)
                with lock:
                    committed.add(n)
            except KafkaException as e:
                with lock:
                    uncertain.add(n)
                try:
                    if p is not None and e.args[0].txn_requires_abort():
                        p.abort_transaction(60)
                    else:
                        # A new instance aborts what this one left open, or finishes
                        # a commit that was decided.
                        p = None
                except KafkaException:
                    p = None
            n += 1

    threads = [threading.Thread(target=http_producer, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=kafka_producer, args=(t,)) for t in range(2)]
    threads.append(threading.Thread(target=txn_producer))
    threads.append(threading.Thread(target=consumer))
    for t in threads:
        t.start()
    # Three rounds; scripts/soak-shared.sh keeps killing for FERRY_SHARED_SOAK_SECONDS.
    soak = float(os.environ.get("FERRY_SHARED_SOAK_SECONDS", "0"))
    started = time.time()
    try:
        round_ = 0
        while round_ < 3 or time.time() - started < soak:
            time.sleep(1.5)
            victim = round_ % 3
            cluster.kill9(victim)
            time.sleep(1)
            cluster.restart_fresh(victim)
            round_ += 1
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert len(acked) > 200, f"only {len(acked)} records acknowledged"
    stored = defaultdict(list)
    for partition in range(4):
        for offset, key, _ in read_partition(nodes[1], "load", partition):
            stored[key].append((partition, offset))
    for value, where in acked.items():
        assert stored.get(value) == [where], f"{value}: acknowledged at {where}, stored at {stored.get(value)}"
    # Nothing twice, acknowledged or not (an HTTP request cut by a kill may be stored
    # without its answer; it was not retried).
    assert all(len(w) == 1 for w in stored.values())
    # The subscription delivered every stored record (at least once: a lease cut by a
    # kill comes again), and none again after its ack was answered.
    deadline = time.time() + 60
    while set(stored) - delivered:
        assert time.time() < deadline, f"{len(set(stored) - delivered)} records never delivered"
        try:
            drain_once(nodes[0])
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    assert not again, f"delivered again after an answered ack: {again[:5]}"
    # Transactions: whole or not at all, each record once, every committed one there.
    seen = defaultdict(list)
    for partition in range(2):
        for value in committed_values(nodes[2], "txns", partition):
            seen[int(value[1:].split("-")[0])].append(value)
    print(f"{len(committed)} transactions committed, {len(uncertain)} failed or unknown, "
          f"{len(seen)} seen")
    assert len(committed) > 5, f"only {len(committed)} transactions committed"
    for n, values in seen.items():
        assert sorted(values) == [f"t{n}-{i}" for i in range(5)], f"transaction {n}: {values}"
        assert n in committed or n in uncertain, f"transaction {n} was never sent"
    missing = committed - set(seen)
    assert not missing, f"committed transactions not seen: {sorted(missing)[:5]}"
    # In order per partition for each Kafka producer (idempotent, one sequence each).
    for tag in range(2):
        for partition in range(4):
            mine = sorted((o, int(v.split("-")[1])) for v, ws in stored.items()
                          for p, o in ws if p == partition and v.startswith(f"k{tag}-"))
            numbers = [n for _, n in mine]
            assert numbers == sorted(numbers), f"producer {tag}, partition {partition}"


def test_an_object_store_outage_fails_produce_clearly_and_service_resumes(cluster):
    a = cluster.add()
    call(a.http, "POST", "/v1/topics", {"name": "t", "partitions": 1})
    assert call(a.http, "POST", "/v1/topics/t/records", {"records": [{"value": "before"}]})[0] == 200
    cluster.s3.stop()
    started = time.time()
    status, p = call(a.http, "POST", "/v1/topics/t/records", {"records": [{"value": "lost"}]}, timeout=60)
    assert status == 503, p
    assert p["type"] == "urn:ferry:problem:unavailable"
    assert "object store" in p["detail"], p
    assert time.time() - started < 30, "the error comes within the store's retries"
    cluster.s3.start()
    status, got = call(a.http, "POST", "/v1/topics/t/records", {"records": [{"value": "after"}]})
    assert status == 200, got
    assert [v for _, _, v in read_partition(a, "t", 0)] == ["before", "after"]


def test_a_postgres_restart_fails_produce_clearly_and_service_resumes(cluster):
    a = cluster.add()
    call(a.http, "POST", "/v1/topics", {"name": "t", "partitions": 2})
    status, sub = call(a.http, "POST", "/v1/subscriptions", {"name": "s", "topic": "t", "start": "earliest"})
    assert status == 201, sub
    acked, failed = [], []
    consumed, pull_failed = set(), []
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            status, got = call(a.http, "POST", "/v1/subscriptions/s/pull",
                               {"max_records": 50, "wait_ms": 100}, timeout=30)
            if status != 200:
                pull_failed.append(got)
                time.sleep(0.05)
                continue
            ids = [r["lease_id"] for r in got["records"]]
            if not ids:
                continue
            status, r = call(a.http, "POST", "/v1/subscriptions/s/ack", {"lease_ids": ids}, timeout=30)
            if status == 200:
                consumed.update(r_["value"] for r_ in got["records"])
            else:
                pull_failed.append(r)

    def produce():
        i = 0
        while not stop.is_set():
            status, got = call(a.http, "POST", "/v1/topics/t/records",
                               {"records": [{"key": str(i), "value": f"v{i}"}]}, timeout=30)
            if status == 200:
                acked.append((f"v{i}", got["offsets"][0]["partition"], got["offsets"][0]["offset"]))
            else:
                failed.append(got)
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=produce)
    t.start()
    c = threading.Thread(target=consume)
    c.start()
    time.sleep(1)
    port = urllib.parse.urlparse(cluster.metadata_url).port
    subprocess.run([os.path.join(ROOT, "scripts/postgres.sh"), "restart"], check=True,
                   env=dict(os.environ, FERRY_PG_PORT=str(port)))
    time.sleep(3)
    stop.set()
    t.join(60)
    c.join(60)
    after = len(acked)
    status, _ = call(a.http, "POST", "/v1/topics/t/records", {"records": [{"value": "last"}]})
    assert status == 200, "service resumes by itself"
    assert after > 0
    for p in failed:
        assert p["type"] == "urn:ferry:problem:unavailable", p
        assert "metadata database" in p["detail"], p
    stored = {v: (p, o) for p in range(2) for o, _, v in read_partition(a, "t", p)}
    for value, partition, offset in acked:
        assert stored.get(value) == (partition, offset), value
    # The subscription failed clearly while Postgres was away, and goes on by itself:
    # every acknowledged record is delivered (at least once).
    print(f"{len(pull_failed)} pulls or acks refused while Postgres restarted")
    for p in pull_failed:
        assert p["type"] == "urn:ferry:problem:unavailable", p
    deadline = time.time() + 30
    while not {v for v, _, _ in acked} <= consumed:
        assert time.time() < deadline, f"{len({v for v, _, _ in acked} - consumed)} records not delivered"
        status, got = call(a.http, "POST", "/v1/subscriptions/s/pull", {"max_records": 100, "wait_ms": 200})
        assert status == 200, got
        ids = [r["lease_id"] for r in got["records"]]
        if ids:
            assert call(a.http, "POST", "/v1/subscriptions/s/ack", {"lease_ids": ids})[0] == 200
        consumed.update(r["value"] for r in got["records"])


def test_deleting_records_and_retention_move_the_start_for_every_node(cluster):
    a, b = cluster.add("--retention-check-ms", "200"), cluster.add()
    call(a.http, "POST", "/v1/topics", {"name": "t", "partitions": 1, "retention_ms": 60000})
    call(a.http, "POST", "/v1/topics", {"name": "d", "partitions": 1})
    wait_for_topic(b, "t")
    wait_for_topic(b, "d")
    # Ten minutes old, then new: retention takes the old ones away.
    old = int(time.time() * 1000) - 600_000
    assert call(b.http, "POST", "/v1/topics/t/records",
                {"records": [{"value": f"old{i}", "timestamp": old} for i in range(5)]})[0] == 200
    assert call(b.http, "POST", "/v1/topics/t/records",
                {"records": [{"value": f"new{i}"} for i in range(5)]})[0] == 200
    deadline = time.time() + 10
    while time.time() < deadline:
        status, got = call(b.http, "GET", "/v1/topics/t/partitions/0/records?offset=5")
        if got.get("earliest") == 5:
            break
        time.sleep(0.2)
    assert got["earliest"] == 5, got
    assert [r["value"] for r in got["records"]] == [f"new{i}" for i in range(5)]
    status, p = call(b.http, "GET", "/v1/topics/t/partitions/0/records?offset=0")
    assert (status, p["type"]) == (416, "urn:ferry:problem:offset-out-of-range"), p
    # Deleting records on one node moves the start for the other at once.
    assert call(a.http, "POST", "/v1/topics/d/records",
                {"records": [{"value": i} for i in range(10)]})[0] == 200
    status, got = call(a.http, "POST", "/v1/topics/d/partitions/0/delete-records", {"before_offset": 7})
    assert (status, got["earliest"], got["latest"]) == (200, 7, 10), got
    status, got = call(b.http, "GET", "/v1/topics/d/partitions/0/records?offset=7")
    assert status == 200 and [r["offset"] for r in got["records"]][0] == 7, got
    assert call(b.http, "GET", "/v1/topics/d/partitions/0/records?offset=3")[0] == 416
    status, p = call(b.http, "POST", "/v1/topics/d/partitions/0/delete-records", {"before_offset": 11})
    assert (status, p["type"]) == (416, "urn:ferry:problem:offset-out-of-range"), p


def test_metadata_lists_the_live_nodes_and_replicated_topics_are_accepted(cluster):
    nodes = [cluster.add(), cluster.add(), cluster.add()]
    admin = AdminClient({"bootstrap.servers": nodes[0].kafka})
    # Kafka Streams, Connect and many tools ask for three replicas.
    futures = admin.create_topics([NewTopic("replicated", num_partitions=6, replication_factor=3)])
    futures["replicated"].result(15)
    deadline = time.time() + 10
    while time.time() < deadline:
        md = AdminClient({"bootstrap.servers": nodes[2].kafka}).list_topics(timeout=10)
        if len(md.brokers) == 3 and "replicated" in md.topics:
            break
        time.sleep(0.2)
    assert len(md.brokers) == 3, md.brokers
    ports = sorted(int(n.kafka.rsplit(":", 1)[1]) for n in nodes)
    assert sorted(b.port for b in md.brokers.values()) == ports
    parts = md.topics["replicated"].partitions
    assert len({p.leader for p in parts.values()}) > 1, "partitions spread over the nodes"
    assert all(len(p.replicas) == 3 and p.leader == p.replicas[0] for p in parts.values())
    # A node that is gone leaves the list once its beats stop (6 s).
    cluster.kill9(1)
    deadline = time.time() + 20
    while time.time() < deadline:
        md = AdminClient({"bootstrap.servers": nodes[0].kafka}).list_topics(timeout=10)
        if len(md.brokers) == 2:
            break
        time.sleep(0.5)
    assert len(md.brokers) == 2, md.brokers
    # Producing through any node still reaches every partition.
    p = Producer({"bootstrap.servers": nodes[0].kafka, "enable.idempotence": True})
    for i in range(60):
        p.produce("replicated", key=str(i), value=b"x")
    assert p.flush(30) == 0


def coordinator_of(nodes, group):
    """The index in `nodes` of the node coordinating `group`, as Kafka's admin API tells."""
    admin = AdminClient({"bootstrap.servers": ",".join(n.kafka for n in nodes if n.proc.poll() is None)})
    # NOT_COORDINATOR is retriable: the client asks again, as Kafka clients do.
    deadline = time.time() + 10
    while True:
        try:
            d = admin.describe_consumer_groups([group])[group].result(15)
            break
        except KafkaException as e:
            if e.args[0].code() != 16 or time.time() > deadline:
                raise
            time.sleep(0.2)
    ports = [int(n.kafka.rsplit(":", 1)[1]) for n in nodes]
    return ports.index(d.coordinator.port)


def test_a_consumer_group_continues_on_another_node_after_its_coordinator_is_killed(cluster):
    nodes = [cluster.add(), cluster.add(), cluster.add()]
    call(nodes[0].http, "POST", "/v1/topics", {"name": "work", "partitions": 4})
    for n in nodes[1:]:
        wait_for_topic(n, "work")
    total = 3000
    for start in range(0, total, 500):
        status, got = call(nodes[start // 500 % 3].http, "POST", "/v1/topics/work/records",
                           {"records": [{"key": f"k{i}", "value": f"v{i}"} for i in range(start, start + 500)]})
        assert status == 200, got

    def consumer():
        return Consumer({"bootstrap.servers": ",".join(n.kafka for n in nodes),
                         "group.id": "workers", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500})

    seen = set()
    c = consumer()
    c.subscribe(["work"])
    while len(seen) < 1000:
        m = c.poll(1)
        if m is not None and m.error() is None:
            seen.add(m.value().decode())
    c.commit(asynchronous=False)
    committed_before = {p.partition: p.offset for p in c.committed(
        [TopicPartition("work", p) for p in range(4)], timeout=10)}
    assert sum(max(o, 0) for o in committed_before.values()) >= 1000

    victim = coordinator_of(nodes, "workers")
    cluster.kill9(victim)
    killed = time.time()
    # The group goes on: a commit succeeds again through the node that took the group
    # over, within 10 s, and no committed offset went back.
    recovered = None
    while recovered is None:
        assert time.time() - killed < 30, "the group did not come back"
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            seen.add(m.value().decode())
        try:
            c.commit(asynchronous=False)
            recovered = time.time() - killed
        except KafkaException:
            pass
    print(f"the group came back {recovered:.1f} s after its coordinator was killed")
    assert recovered < 10, f"the group took {recovered:.1f} s to come back"
    survivors = [n for i, n in enumerate(nodes) if i != victim]
    assert coordinator_of(survivors, "workers") in range(2)
    after = {p.partition: p.offset for p in c.committed(
        [TopicPartition("work", p) for p in range(4)], timeout=10)}
    for p, o in committed_before.items():
        assert after[p] >= o, f"partition {p}: committed {o}, then {after[p]}"

    # It reads to the end, and a new member of the group starts where it committed.
    deadline = time.time() + 60
    while len(seen) < total and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            seen.add(m.value().decode())
    # (Values went in as JSON strings over HTTP, so they come out with their quotes.)
    assert seen == {f'"v{i}"' for i in range(total)}
    c.commit(asynchronous=False)
    c.close()
    c2 = consumer()
    got = c2.committed([TopicPartition("work", p) for p in range(4)], timeout=10)
    assert sum(p.offset for p in got) == total, got
    c2.close()

    # Listing over the nodes names the group once. (The admin client asks every broker
    # Metadata lists, and the killed node is listed until its beat is 6 s old.)
    admin = AdminClient({"bootstrap.servers": ",".join(n.kafka for n in survivors)})
    while len(admin.list_topics(timeout=10).brokers) > 2:
        assert time.time() - killed < 15, "the killed node is still listed"
        time.sleep(0.2)
    listed = [g.group_id for g in admin.list_consumer_groups().result(15).valid]
    assert listed.count("workers") == 1, listed
    # Over HTTP, any node lists it and describes it as its coordinator does.
    for n in survivors:
        status, got = call(n.http, "GET", "/v1/groups")
        assert status == 200, got
        assert [g["group"] for g in got["groups"]] == ["workers"], got
        status, got = call(n.http, "GET", "/v1/groups/workers")
        assert status == 200, got
        assert sum(o["committed"] or 0 for o in got["offsets"]) == total, got
    # A node stopping cleanly leaves at once: the last node lists the group and takes
    # it over without waiting for the stopped node's beat to age.
    coordinator = coordinator_of(survivors, "workers")
    survivors[coordinator].stop()
    stopped = time.time()
    last = survivors[1 - coordinator]
    admin = AdminClient({"bootstrap.servers": last.kafka})
    # (The admin client asks every broker Metadata lists; the stopped node is gone from
    # it at the next beat.)
    while len(admin.list_topics(timeout=10).brokers) > 1:
        assert time.time() - stopped < 3, "the stopped node is still listed"
        time.sleep(0.1)
    listed = [g.group_id for g in admin.list_consumer_groups().result(15).valid]
    assert listed == ["workers"], listed
    c3 = Consumer({"bootstrap.servers": last.kafka, "group.id": "workers"})
    got = c3.committed([TopicPartition("work", p) for p in range(4)], timeout=10)
    assert sum(p.offset for p in got) == total, got
    assert time.time() - stopped < 5, "taken over without waiting for the beat to age"
    c3.close()


def metric(node, name):
    with urllib.request.urlopen(node.http + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_small_objects_are_merged_by_one_node_while_reads_stay_the_same(cluster):
    nodes = [cluster.add("--shared-compact-after-ms", "500"),
             cluster.add("--shared-compact-after-ms", "500")]
    call(nodes[0].http, "POST", "/v1/topics", {"name": "small", "partitions": 2})
    wait_for_topic(nodes[1], "small")
    # Many small produce requests: objects shared by both partitions.
    for i in range(120):
        status, got = call(nodes[i % 2].http, "POST", "/v1/topics/small/records",
                           {"records": [{"key": f"k{i}", "value": i, "partition": i % 2},
                                        {"key": f"j{i}", "value": -i, "partition": (i + 1) % 2}]})
        assert status == 200, got
    before = [read_partition(nodes[1], "small", p) for p in range(2)]
    objects = lambda: int(psql_value(cluster.metadata_url,  # noqa: E731
                                     "SELECT count(DISTINCT object_key) FROM ferry_batches"))
    assert objects() >= 100
    # The node holding the compaction lease merges them (it looks every 10 s); only it.
    deadline = time.time() + 30
    while objects() > 4:
        assert time.time() < deadline, f"{objects()} objects still hold the batches"
        time.sleep(0.5)
    merged = [metric(n, "ferry_shared_compacted_batches_total") for n in nodes]
    assert sorted(merged)[0] == 0 and sorted(merged)[1] >= 240, merged
    for node in nodes:
        assert [read_partition(node, "small", p) for p in range(2)] == before
    # Appends go on after the merged ones.
    status, got = call(nodes[0].http, "POST", "/v1/topics/small/records",
                       {"records": [{"value": "late", "partition": 0}]})
    assert status == 200 and got["offsets"][0]["offset"] == 120, got


def test_a_topic_made_on_one_node_is_used_at_once_on_another(cluster):
    a, b = cluster.add(), cluster.add()
    for i in range(5):
        name = f"fresh-{i}"
        status, _ = call(a.http, "POST", "/v1/topics", {"name": name, "partitions": 1})
        assert status == 201
        # No waiting for b's next read of the topics (every second).
        status, got = call(b.http, "POST", f"/v1/topics/{name}/records", {"records": [{"value": i}]})
        assert status == 200, got
        p = Producer({"bootstrap.servers": b.kafka})
        p.produce(name, value=b"k")
        assert p.flush(10) == 0
        status, got = call(a.http, "GET", f"/v1/topics/{name}/partitions/0/records?offset=0")
        assert status == 200 and len(got["records"]) == 2, got


def test_retention_by_size_keeps_the_newest_batches_within_the_limit(cluster):
    a, b = cluster.add("--retention-check-ms", "200"), cluster.add()
    status, _ = call(a.http, "POST", "/v1/topics", {"name": "sized", "partitions": 1, "retention_bytes": 3000})
    assert status == 201
    # 40 batches of about 600 bytes: the newest few fit in 3000 bytes.
    for i in range(40):
        status, got = call(b.http, "POST", "/v1/topics/sized/records",
                           {"records": [{"value": f"{i}-" + "x" * 500}]})
        assert status == 200, got
    # The newest batches that fit, whole: five of about 574 bytes (six would pass 3000).
    deadline = time.time() + 10
    while True:
        status, got = call(b.http, "GET", "/v1/topics/sized/partitions/0/records?offset=39")
        assert status == 200, got
        if got["latest"] - got["earliest"] <= 5:
            break
        assert time.time() < deadline, got
        time.sleep(0.2)
    earliest = got["earliest"]
    assert earliest == 35, got
    status, p = call(b.http, "GET", "/v1/topics/sized/partitions/0/records?offset=0")
    assert (status, p["type"]) == (416, "urn:ferry:problem:offset-out-of-range"), p
    status, got = call(b.http, "GET", f"/v1/topics/sized/partitions/0/records?offset={earliest}")
    kept = [(r["offset"], r["value"]) for r in got["records"]]
    assert [o for o, _ in kept] == list(range(earliest, 40))
    assert kept[-1][1] == "39-" + "x" * 500


def node_ids(cluster):
    """Each node's id in Postgres, by its HTTP port."""
    rows = psql_value(cluster.metadata_url, "SELECT string_agg(node_id || '=' || http_addr, ',') FROM ferry_nodes")
    ids = {}
    for pair in rows.split(","):
        node_id, addr = pair.split("=")
        ids[int(addr.rsplit(":", 1)[1])] = int(node_id)
    return ids


def subscription_owner(cluster, name):
    """The node whose lease serves subscription `name`."""
    owner = int(psql_value(cluster.metadata_url,
                           f"SELECT node_id FROM ferry_leases WHERE kind = 'subscription' AND name = '{name}'"))
    by_port = node_ids(cluster)
    return next(i for i, n in enumerate(cluster.nodes)
                if n.proc.poll() is None and by_port.get(int(n.http.rsplit(":", 1)[1])) == owner)


def pull(node, name, n=50, timeout=30):
    status, got = call(node.http, "POST", f"/v1/subscriptions/{name}/pull",
                       {"max_records": n, "wait_ms": 200}, timeout=timeout)
    return status, got


def test_a_queue_subscription_is_served_by_one_node_and_continues_after_it_is_killed(cluster):
    a, b, c = cluster.add(), cluster.add(), cluster.add()
    assert call(a.http, "POST", "/v1/topics", {"name": "jobs", "partitions": 2})[0] == 201
    wait_for_topic(b, "jobs")
    wait_for_topic(c, "jobs")
    status, sub = call(b.http, "POST", "/v1/subscriptions",
                       {"name": "work", "topic": "jobs", "start": "earliest",
                        "visibility_timeout_ms": 60000})
    assert status == 201, sub
    assert call(c.http, "POST", "/v1/subscriptions", {"name": "work", "topic": "jobs"})[0] == 409
    status, got = call(c.http, "POST", "/v1/topics/jobs/records",
                       {"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(200)]})
    assert status == 200, got
    # Every node answers for the subscription: two of them pass requests on to its owner.
    acked, in_flight = set(), {}
    for node in (a, b, c, a, b, c):
        status, got = pull(node, "work", 20)
        assert status == 200, got
        ids = [r["lease_id"] for r in got["records"]]
        status, ack = call(node.http, "POST", "/v1/subscriptions/work/ack", {"lease_ids": ids})
        assert status == 200, ack
        acked |= {r["key"] for r in got["records"]}
    assert len(acked) == 120, "no record delivered twice while its lease holds"
    # Leased and not acked when the owner dies: delivered again by the next owner.
    status, got = pull(a, "work", 10)
    assert status == 200 and len(got["records"]) == 10, got
    in_flight = {r["key"] for r in got["records"]}
    # One record put off for two minutes: a delay kept in Postgres.
    status, got = pull(b, "work", 1)
    assert status == 200 and len(got["records"]) == 1, got
    delayed = got["records"][0]["key"]
    status, r = call(b.http, "POST", "/v1/subscriptions/work/nack",
                     {"lease_ids": [got["records"][0]["lease_id"]], "delay_ms": 120000})
    assert status == 200, r
    # Every node lists the subscription once, with the owner's numbers.
    for node in (a, b, c):
        status, listed = call(node.http, "GET", "/v1/subscriptions")
        assert status == 200, listed
        assert [s["name"] for s in listed["subscriptions"]] == ["work"], listed
        assert listed["subscriptions"][0]["acked"] == 120, listed
    owner = subscription_owner(cluster, "work")
    others = [n for i, n in enumerate(cluster.nodes) if i != owner]
    cluster.kill9(owner)
    killed = time.time()
    # Another node serves it within 10 s, from the state in Postgres.
    while True:
        status, got = pull(others[0], "work", 50, timeout=15)
        if status == 200:
            break
        assert status == 503, got
        assert time.time() - killed < 10, f"no node served the subscription 10 s after kill -9: {got}"
        time.sleep(0.2)
    took = time.time() - killed
    print(f"subscription served again {took:.1f} s after kill -9")
    seen = [r["key"] for r in got["records"]]
    ids = [r["lease_id"] for r in got["records"]]
    deadline = time.time() + 30
    while len(set(seen)) < 200 - 120 - 1 and time.time() < deadline:
        if ids:
            status, ack = call(others[1].http, "POST", "/v1/subscriptions/work/ack", {"lease_ids": ids})
            assert status == 200, ack
        status, got = pull(others[1], "work", 50)
        assert status == 200, got
        seen += [r["key"] for r in got["records"]]
        ids = [r["lease_id"] for r in got["records"]]
    if ids:
        assert call(others[1].http, "POST", "/v1/subscriptions/work/ack", {"lease_ids": ids})[0] == 200
    assert not (set(seen) & acked), "a record acked before the kill came again"
    assert in_flight <= set(seen), "records leased when the owner died are delivered again"
    assert delayed not in seen, "the delayed record waits"
    assert set(seen) | acked | {delayed} == {f"k{i}" for i in range(200)}
    status, d = call(others[0].http, "GET", "/v1/subscriptions/work")
    assert status == 200, d
    assert d["backlog"] == 1 and d["delayed"] == 1, d
    # The killed node comes back without its disk and serves like the others.
    cluster.restart_fresh(owner)
    status, d = call(cluster.nodes[owner].http, "GET", "/v1/subscriptions/work")
    assert status == 200 and d["delayed"] == 1, d
    assert call(cluster.nodes[owner].http, "DELETE", "/v1/subscriptions/work")[0] == 204
    for node in cluster.nodes:
        assert call(node.http, "GET", "/v1/subscriptions/work")[0] == 404
        assert call(node.http, "GET", "/v1/subscriptions")[1]["subscriptions"] == []
    # As in the local mode: a topic's subscriptions go with it, and a topic that is
    # another subscription's dead-letter topic stays.
    status, d = call(others[0].http, "POST", "/v1/subscriptions",
                     {"name": "again", "topic": "jobs", "dead_letter_topic": "jobs-dead"})
    assert status == 201, d
    status, p = call(others[1].http, "DELETE", "/v1/topics/jobs-dead")
    assert status == 400 and "dead-letter topic of subscription 'again'" in p["detail"], p
    assert call(others[1].http, "DELETE", "/v1/topics/jobs")[0] == 204
    # The node serving it learns at its next beat (each second) that it is gone.
    deadline = time.time() + 5
    while call(others[0].http, "GET", "/v1/subscriptions/again")[0] != 404:
        assert time.time() < deadline, "the subscription went with its topic"
        time.sleep(0.1)


class Endpoint:
    """A webhook endpoint on a free port that answers 200 and notes what came: (partition,
    offset) with the time it came."""

    def __init__(self):
        import http.server
        got = self.got = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                got.append(((int(self.headers["ferry-partition"]), int(self.headers["ferry-offset"])),
                            time.time()))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def distinct(self):
        return {at for at, _ in list(self.got)}

    def stop(self):
        self.server.shutdown()


def test_a_push_subscription_goes_on_from_another_node_after_its_node_is_killed(cluster):
    nodes = [cluster.add("--push-allow-private") for _ in range(3)]
    a, b, c = nodes
    assert call(a.http, "POST", "/v1/topics", {"name": "ev", "partitions": 2})[0] == 201
    wait_for_topic(b, "ev")
    wait_for_topic(c, "ev")
    ep = Endpoint()
    try:
        status, sub = call(b.http, "POST", "/v1/subscriptions",
                           {"name": "hook", "topic": "ev", "start": "earliest", "push": {"url": ep.url}})
        assert status == 201, sub
        assert sub["push"]["secret"].startswith("whsec_"), "the secret is shown once, at creation"
        records = lambda lo, hi: {"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(lo, hi)]}  # noqa: E731
        assert call(c.http, "POST", "/v1/topics/ev/records", records(0, 50))[0] == 200
        deadline = time.time() + 20
        while len(ep.distinct()) < 50:
            assert time.time() < deadline, f"{len(ep.distinct())} of 50 delivered"
            time.sleep(0.1)
        owner = subscription_owner(cluster, "hook")
        survivor = next(n for i, n in enumerate(cluster.nodes) if i != owner)
        cluster.kill9(owner)
        killed = time.time()
        assert call(survivor.http, "POST", "/v1/topics/ev/records", records(50, 100))[0] == 200
        deadline = time.time() + 30
        while len(ep.distinct()) < 100:
            assert time.time() < deadline, f"{len(ep.distinct())} of 100 delivered after kill -9"
            time.sleep(0.1)
        first_new = min(t for _, t in list(ep.got) if t > killed)
        print(f"push delivery went on {first_new - killed:.1f} s after kill -9")
        assert first_new - killed < 10, "another node delivers within 10 s"
        # Every record came, each partition's offsets dense (at least once: some twice).
        by_partition = defaultdict(set)
        for p, o in ep.distinct():
            by_partition[p].add(o)
        assert sum(len(v) for v in by_partition.values()) == 100
        for p, offsets in by_partition.items():
            assert offsets == set(range(len(offsets))), p
        # Pause and resume through any node: the node serving it does it.
        status, d = call(survivor.http, "POST", "/v1/subscriptions/hook/pause")
        assert status == 200 and d["paused"] is True, d
        status, d = call(survivor.http, "POST", "/v1/subscriptions/hook/resume")
        assert status == 200 and d["paused"] is False, d
    finally:
        ep.stop()


def test_dead_letters_and_redrive_work_through_any_node(cluster):
    a, b = cluster.add(), cluster.add()
    assert call(a.http, "POST", "/v1/topics", {"name": "mail", "partitions": 2})[0] == 201
    # Made on the other node at once: it looks the topic up in Postgres.
    status, sub = call(b.http, "POST", "/v1/subscriptions",
                       {"name": "send", "topic": "mail", "start": "earliest", "max_deliveries": 1,
                        "retry": {"strategy": "immediate"}})
    assert status == 201, sub
    assert sub["dead_letter_topic"] == "send-dlq", sub
    assert call(b.http, "POST", "/v1/topics/mail/records",
                {"records": [{"key": f"k{i}", "value": i} for i in range(5)]})[0] == 200
    # Each record fails its one delivery: out of deliveries, it goes to the dead-letter
    # topic (made by the node serving the subscription, in Postgres for every node).
    status, got = pull(b, "send", 10)
    assert status == 200 and len(got["records"]) == 5, got
    status, r = call(b.http, "POST", "/v1/subscriptions/send/nack",
                     {"lease_ids": [x["lease_id"] for x in got["records"]], "error": "no such mailbox"})
    assert status == 200, r
    wait_for_topic(b, "send-dlq")
    deadline = time.time() + 15
    while True:
        dead = read_partition(b, "send-dlq", 0)
        if len(dead) == 5:
            break
        assert time.time() < deadline, dead
        time.sleep(0.2)
    assert sorted(v for _, _, v in dead) == list(range(5))
    status, d = call(b.http, "GET", "/v1/subscriptions/send")
    assert status == 200 and d["dead_lettered"] == 5, d
    # Redrive through the other node: the records come back, to this subscription.
    status, r = call(b.http, "POST", "/v1/subscriptions/send/redrive", {})
    assert (status, r) == (200, {"redriven": 5}), r
    deadline = time.time() + 15
    back = []
    while len(back) < 5:
        assert time.time() < deadline, back
        status, got = pull(a, "send", 10)
        assert status == 200, got
        back += [x["value"] for x in got["records"]]
        ids = [x["lease_id"] for x in got["records"]]
        if ids:
            assert call(a.http, "POST", "/v1/subscriptions/send/ack", {"lease_ids": ids})[0] == 200
    assert sorted(back) == list(range(5))
    assert call(b.http, "POST", "/v1/subscriptions/send/redrive", {})[1] == {"redriven": 0}


def test_an_event_stream_is_passed_on_from_any_node(cluster):
    a, b = cluster.add(), cluster.add()
    assert call(a.http, "POST", "/v1/topics", {"name": "feed", "partitions": 1})[0] == 201
    status, sub = call(a.http, "POST", "/v1/subscriptions",
                       {"name": "watch", "topic": "feed", "start": "earliest"})
    assert status == 201, sub
    owner = subscription_owner(cluster, "watch")
    other = cluster.nodes[1 - owner]
    # The stream is opened on the node that does not serve the subscription; records
    # produced afterwards arrive through it as the serving node leases them.
    stream = urllib.request.urlopen(other.http + "/v1/subscriptions/watch/events?consumer=w", timeout=30)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert call(other.http, "POST", "/v1/topics/feed/records",
                {"records": [{"key": f"k{i}", "value": i} for i in range(5)]})[0] == 200
    got = []
    while len(got) < 5:
        line = stream.readline().decode()
        assert line, "the stream ended"
        if line.startswith("data: "):
            got.append(json.loads(line[len("data: "):]))
    stream.close()
    assert sorted(r["value"] for r in got) == list(range(5))
    ids = [r["lease_id"] for r in got]
    assert call(other.http, "POST", "/v1/subscriptions/watch/ack", {"lease_ids": ids}) == (200, {"acked": 5})


def lease_holder(cluster, kind, name):
    """The index in cluster.nodes of the live node holding lease (kind, name)."""
    owner = int(psql_value(cluster.metadata_url,
                           f"SELECT node_id FROM ferry_leases WHERE kind = '{kind}' AND name = '{name}'"))
    by_port = node_ids(cluster)
    return next(i for i, n in enumerate(cluster.nodes)
                if n.proc.poll() is None and by_port.get(int(n.http.rsplit(":", 1)[1])) == owner)


def txn_producer(nodes, txn_id, timeout_ms=60000):
    # (A reconnection backoff of at most 1 s, so that the failover time measured is
    # Ferry's, not the client's backoff towards the dead node, which grows to 10 s.)
    p = Producer({"bootstrap.servers": ",".join(n.kafka for n in nodes), "transactional.id": txn_id,
                  "transaction.timeout.ms": timeout_ms, "linger.ms": 5,
                  "reconnect.backoff.max.ms": 1000})
    p.init_transactions(30)
    return p


def read_values(node, topic, partitions, committed=True, expect=None, timeout=20):
    """Values a consumer at `node` reads from the start, until `expect` of them (and a
    moment more, for any that should not be there) or quiet for 3 s."""
    c = Consumer({"bootstrap.servers": node.kafka, "group.id": f"reader-{time.time()}",
                  "isolation.level": "read_committed" if committed else "read_uncommitted",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, deadline, quiet = [], time.time() + timeout, time.time()
    while time.time() < deadline:
        m = c.poll(0.3)
        if m is None or m.error():
            if time.time() - quiet > 3 and (expect is None or len(out) >= expect):
                break
            continue
        quiet = time.time()
        out.append(m.value().decode())
    c.close()
    return out


def test_transactions_commit_abort_and_go_on_after_their_coordinator_is_killed(cluster):
    nodes = [cluster.add(), cluster.add(), cluster.add()]
    for name in ("in", "out"):
        call(nodes[0].http, "POST", "/v1/topics", {"name": name, "partitions": 2})
    for n in nodes[1:]:
        wait_for_topic(n, "in")
        wait_for_topic(n, "out")

    # Committed records are seen by read_committed consumers on every node; aborted ones
    # only by read_uncommitted ones.
    p = txn_producer(nodes, "tx")
    p.begin_transaction()
    for i in range(50):
        p.produce("out", key=str(i), value=f"c{i}")
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(30):
        p.produce("out", key=str(i), value=f"a{i}")
    p.flush(30)  # (abort_transaction drops what was not yet sent)
    p.abort_transaction(30)
    for n in nodes:
        assert sorted(read_values(n, "out", 2, expect=50)) == sorted(f"c{i}" for i in range(50))
    uncommitted = read_values(nodes[1], "out", 2, committed=False, expect=80)
    assert sorted(uncommitted) == sorted([f"c{i}" for i in range(50)] + [f"a{i}" for i in range(30)])

    # An open transaction holds read_committed readers at its first record: a record
    # written after it over HTTP waits too, until the transaction commits.
    p.begin_transaction()
    for i in range(10):
        p.produce("out", key="k", partition=0, value=f"o{i}")
    p.flush(30)
    status, got = call(nodes[2].http, "POST", "/v1/topics/out/records",
                       {"records": [{"value": "after", "partition": 0}]})
    assert status == 200, got
    seen = read_values(nodes[2], "out", 2, expect=50, timeout=8)
    assert "after" not in seen and not any(v.startswith("o") for v in seen), seen
    p.commit_transaction(30)
    seen = read_values(nodes[0], "out", 2, expect=61)
    assert sum(v.startswith("o") for v in seen) == 10 and '"after"' in seen, seen

    # Consume, transform, produce: the group's offsets commit with the transaction,
    # though the group's coordinator may be another node than the transaction's.
    for start in range(0, 100, 50):
        call(nodes[start // 50].http, "POST", "/v1/topics/in/records",
             {"records": [{"key": f"k{i}", "value": f"v{i}"} for i in range(start, start + 50)]})
    c = Consumer({"bootstrap.servers": ",".join(n.kafka for n in nodes), "group.id": "etl",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["in"])
    done = 0
    deadline = time.time() + 60
    while done < 100 and time.time() < deadline:
        msgs = c.consume(50, 1)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce("out", key=m.key(), value=b"t-" + m.value())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        done += len(msgs)
    assert done == 100
    c.close()
    for n in nodes:
        c2 = Consumer({"bootstrap.servers": n.kafka, "group.id": "etl"})
        got = c2.committed([TopicPartition("in", q) for q in range(2)], timeout=10)
        assert sum(t.offset for t in got) == 100, got
        c2.close()

    # The coordinator dies in the middle of a transaction: the producer's commit goes
    # through the node that takes the transactional id over, within 10 s.
    p.begin_transaction()
    for i in range(20):
        p.produce("out", key=str(i), value=f"f{i}")
    p.flush(30)
    victim = lease_holder(cluster, "transaction", "tx")
    cluster.kill9(victim)
    killed = time.time()
    p.commit_transaction(60)
    took = time.time() - killed
    print(f"a transaction committed {took:.1f} s after its coordinator was killed")
    assert took < 10, f"the commit took {took:.1f} s"
    survivors = [n for i, n in enumerate(nodes) if i != victim]
    seen = read_values(survivors[0], "out", 2, expect=181)
    assert sum(v.startswith("f") for v in seen) == 20, seen
    assert not any(v.startswith("a") for v in seen)

    # A new instance with the same transactional id, on another node, fences the old one
    # and aborts what it left open.
    p.begin_transaction()
    p.produce("out", key="z", value="zombie")
    p.flush(30)
    fresh = txn_producer(list(reversed(survivors)), "tx")
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    fresh.begin_transaction()
    fresh.produce("out", key="n", value="new")
    fresh.commit_transaction(30)
    seen = read_values(survivors[1], "out", 2, expect=182)
    assert "new" in seen and "zombie" not in seen, seen


ABANDON = """
import sys, time
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": "abandoned",
              "transaction.timeout.ms": 4000})
p.init_transactions(30)
p.begin_transaction()
for i in range(5):
    p.produce("held", value=f"stuck{i}")
p.flush(30)
print("open", flush=True)
time.sleep(600)
"""


def test_a_transaction_whose_producer_and_coordinator_died_is_aborted_at_its_timeout(cluster):
    import sys
    nodes = [cluster.add(), cluster.add()]
    call(nodes[0].http, "POST", "/v1/topics", {"name": "held", "partitions": 1})
    wait_for_topic(nodes[1], "held")
    proc = subprocess.Popen([sys.executable, "-c", ABANDON, ",".join(n.kafka for n in nodes)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
    finally:
        proc.kill()
        proc.wait()
    victim = lease_holder(cluster, "transaction", "abandoned")
    other = nodes[1 - victim]
    status, got = call(other.http, "POST", "/v1/topics/held/records", {"records": [{"value": "later"}]})
    assert status == 200, got
    assert read_values(other, "held", 1, timeout=2) == []
    cluster.kill9(victim)
    # The surviving node takes the transactional id over and aborts it at its timeout:
    # the record after it becomes readable, the transaction's never.
    killed = time.time()
    seen = []
    while '"later"' not in seen:
        assert time.time() - killed < 30, "the abandoned transaction was never aborted"
        seen = read_values(other, "held", 1, expect=1, timeout=3)
    assert seen == ['"later"'], seen
    state = psql_value(cluster.metadata_url,
                       "SELECT status FROM ferry_transactions WHERE txn_id = 'abandoned'")
    assert state == "complete_abort"


def call_as(base, method, path, auth, body=None):
    """`call` with an Authorization header (`auth`: "Basic ..." or "Bearer ...")."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json", "authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def basic(user, password):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_users_tokens_and_acls_are_shared_by_every_node(cluster):
    from conftest import BIN
    flags = ["--auth", "--super-users", "User:admin", "--acl-default", "deny"]

    def first_user(d):
        # Made on the data folder before its node runs; the first node to start puts it
        # in Postgres for every node.
        subprocess.run([BIN, "user", "create", "admin", "--password", "admin-secret-1",
                        "--data-dir", d], check=True, capture_output=True)

    a = cluster.add(*flags, setup=first_user)
    b = cluster.add(*flags)
    admin = basic("admin", "admin-secret-1")
    # The first user works on a node that never saw the folder it was made in.
    status, got = call_as(b.http, "POST", "/v1/topics", admin, {"name": "t", "partitions": 1})
    assert status == 201, got
    # A user made on one node, and an ACL made on the other, hold on both.
    status, got = call_as(a.http, "POST", "/v1/users", admin, {"name": "alice", "password": "alice-secret-1"})
    assert status == 201, got
    status, got = call_as(b.http, "POST", "/v1/acls", admin, {"acls": [
        {"principal": "User:alice", "resource_type": "topic", "resource_name": "t", "operation": "write"}]})
    assert status == 201, got
    alice = basic("alice", "alice-secret-1")
    record = {"records": [{"value": "hi"}]}

    def produce_as(node, auth, expected):
        """Produces until answered `expected` (a change reaches the other nodes within a
        second), or 5 s pass."""
        deadline = time.time() + 5
        while True:
            status, got = call_as(node.http, "POST", "/v1/topics/t/records", auth, record)
            if status == expected or time.time() > deadline:
                return status, got
            time.sleep(0.1)

    for node in (a, b):
        status, got = produce_as(node, alice, 200)
        assert status == 200, (node.http, got)
    # Nothing else is allowed, on either node.
    for node in (a, b):
        status, got = call_as(node.http, "POST", "/v1/topics", alice, {"name": "u"})
        assert status == 403, got
    # A token made on one node authenticates on the other; deleted, it is refused there.
    status, got = call_as(b.http, "POST", "/v1/tokens", admin, {"user": "alice"})
    assert status == 201, got
    token, token_id = got["token"], got["id"]
    bearer = "Bearer " + token
    status, got = produce_as(a, bearer, 200)
    assert status == 200, got
    status, _ = call_as(a.http, "DELETE", f"/v1/tokens/{token_id}", admin)
    assert status == 204
    status, got = produce_as(b, bearer, 401)
    assert status == 401, got
    # A node whose disk is lost comes back knowing every user and ACL.
    cluster.kill9(0)
    cluster.restart_fresh(0)
    status, got = call_as(a.http, "POST", "/v1/topics/t/records", alice, record)
    assert status == 200, got
    status, got = call_as(a.http, "GET", "/v1/users", admin)
    assert status == 200 and sorted(u["name"] for u in got["users"]) == ["admin", "alice"], got


def test_requests_are_passed_on_over_tls_between_nodes_that_serve_https(cluster, tmp_path):
    import ssl
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = tmp_path / "node.pem", tmp_path / "node-key.pem", tmp_path / "ca.pem"
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    # The authority ends the chain file, so that nodes trust each other's certificates.
    ca.cert_pem.write_to_path(str(chain), append=True)
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    flags = ["--tls-cert", str(chain), "--tls-key", str(key), "--tls-listeners", "http"]
    a, b = cluster.add(*flags), cluster.add(*flags)
    context = ssl.create_default_context(cafile=str(ca_file))

    def https(node, method, path, body=None):
        url = node.http.replace("http://", "https://") + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    status, got = https(a, "POST", "/v1/topics", {"name": "jobs", "partitions": 1})
    assert status == 201, got
    status, got = https(a, "POST", "/v1/topics/jobs/records", {"records": [{"value": i} for i in range(10)]})
    assert status == 200, got
    status, got = https(a, "POST", "/v1/subscriptions", {"name": "work", "topic": "jobs", "start": "earliest"})
    assert status == 201, got
    # Whichever node serves it, each node answers: one of them passes the pull on, over TLS.
    owner = subscription_owner(cluster, "work")
    other = (a, b)[1 - owner]
    status, got = https(other, "POST", "/v1/subscriptions/work/pull", {"max_records": 10, "wait_ms": 2000})
    assert status == 200, got
    assert sorted(r["value"] for r in got["records"]) == list(range(10))
    status, got = https(other, "POST", "/v1/subscriptions/work/ack",
                        {"lease_ids": [r["lease_id"] for r in got["records"]]})
    assert status == 200, got
