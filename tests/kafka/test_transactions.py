"""Kafka transactions (exactly-once) with confluent-kafka (librdkafka): commit and abort,
read_committed consumers, consume-transform-produce with send_offsets_to_transaction,
zombie fencing, and kill -9 of Ferry in the middle of a transaction."""

import base64
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from test_confluent import create, http_json, http_values


def txn_producer(ferry, txn_id, **extra):
    p = Producer({"bootstrap.servers": ferry.kafka, "transactional.id": txn_id,
                  "transaction.timeout.ms": 60000, "linger.ms": 5, **extra})
    p.init_transactions(20)
    return p


def committed_consumer(ferry, group=None, **extra):
    return Consumer({"bootstrap.servers": ferry.kafka, "group.id": group or f"g-{uuid.uuid4()}",
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                     "enable.auto.commit": False, **extra})


def read_all(ferry, topic, partitions, expect=None, timeout=20, group=None, **extra):
    """Values a read_committed consumer sees, until `expect` of them or quiet for 3 s."""
    c = committed_consumer(ferry, group=group, **extra)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + timeout
    quiet_since = time.time()
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            if expect is None and time.time() - quiet_since > 3:
                break
            continue
        quiet_since = time.time()
        out.append(m.value().decode())
        if expect is not None and len(out) >= expect:
            # Give anything that should not be there a moment to show up.
            extra_deadline = time.time() + 1.5
            while time.time() < extra_deadline:
                m = c.poll(0.3)
                if m is not None and not m.error():
                    out.append(m.value().decode())
            break
    c.close()
    return out


def http_texts(ferry, topic, partitions):
    return [base64.b64decode(r["value"]["base64"]).decode() if isinstance(r["value"], dict) else r["value"]
            for r in http_values(ferry, topic, partitions)]


def test_committed_records_are_seen_and_aborted_ones_never(ferry):
    create(ferry, "tx-basic", 3)
    p = txn_producer(ferry, "basic")
    p.begin_transaction()
    for i in range(30):
        p.produce("tx-basic", key=f"k{i}", value=f"committed-{i}")
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(30):
        p.produce("tx-basic", key=f"k{i}", value=f"aborted-{i}")
    p.flush(20)
    p.abort_transaction(20)
    p.begin_transaction()
    for i in range(10):
        p.produce("tx-basic", key=f"k{i}", value=f"second-{i}")
    p.commit_transaction(20)
    seen = read_all(ferry, "tx-basic", 3, expect=40)
    assert sorted(seen) == sorted([f"committed-{i}" for i in range(30)] + [f"second-{i}" for i in range(10)])
    # HTTP reads see what read_committed consumers see: no markers, no aborted records.
    assert sorted(http_texts(ferry, "tx-basic", 3)) == sorted(seen)
    # A read_uncommitted consumer sees the aborted records too (and no markers).
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "ru", "auto.offset.reset": "earliest",
                  "isolation.level": "read_uncommitted"})
    c.assign([TopicPartition("tx-basic", q, 0) for q in range(3)])
    got = []
    deadline = time.time() + 15
    while len(got) < 70 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    c.close()
    assert len(got) == 70


def test_an_open_transaction_holds_back_read_committed_consumers_until_it_commits(ferry):
    create(ferry, "tx-open", 1)
    plain = Producer({"bootstrap.servers": ferry.kafka})
    plain.produce("tx-open", value="before")
    plain.flush(10)
    p = txn_producer(ferry, "open")
    p.begin_transaction()
    p.produce("tx-open", value="inside")
    p.flush(10)
    plain.produce("tx-open", value="after-open")
    plain.flush(10)
    assert read_all(ferry, "tx-open", 1) == ["before"]
    # The last stable offset is the transaction's first offset.
    c = committed_consumer(ferry)
    low, high = c.get_watermark_offsets(TopicPartition("tx-open", 0), timeout=10)
    c.close()
    assert high == 1
    p.commit_transaction(20)
    assert read_all(ferry, "tx-open", 1, expect=3) == ["before", "inside", "after-open"]


def test_consume_transform_produce_commits_offsets_with_the_transaction(ferry):
    create(ferry, "ctp-in", 2)
    create(ferry, "ctp-out", 2)
    src = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(40):
        src.produce("ctp-in", key=f"k{i}", value=f"v{i}")
    src.flush(10)
    group = "ctp-group"
    c = committed_consumer(ferry, group=group)
    c.subscribe(["ctp-in"])
    p = txn_producer(ferry, "ctp")
    done = 0
    rounds = 0
    deadline = time.time() + 40
    while done < 40 and time.time() < deadline:
        msgs = c.consume(10, 1.0)
        msgs = [m for m in msgs if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce("ctp-out", key=m.key(), value=m.value().decode().upper())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
        if rounds == 0:
            # The first round is aborted: its output never shows, its offsets are not
            # committed, and the records are consumed again.
            p.abort_transaction(20)
            positions = c.committed(c.assignment(), timeout=10)
            for tp in positions:
                c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
        else:
            p.commit_transaction(20)
            done += len(msgs)
        rounds += 1
    assert done == 40
    committed = c.committed([TopicPartition("ctp-in", 0), TopicPartition("ctp-in", 1)], timeout=10)
    assert sum(tp.offset for tp in committed) == 40
    c.close()
    out = read_all(ferry, "ctp-out", 2, expect=40)
    assert sorted(out) == sorted(f"V{i}" for i in range(40))


def test_a_zombie_producer_is_fenced_by_a_new_instance(ferry):
    create(ferry, "tx-zombie", 1)
    old = txn_producer(ferry, "same-id")
    old.begin_transaction()
    old.produce("tx-zombie", value="zombie")
    old.flush(10)
    new = txn_producer(ferry, "same-id")
    new.begin_transaction()
    new.produce("tx-zombie", value="fresh")
    new.commit_transaction(20)
    with pytest.raises(KafkaException) as e:
        old.produce("tx-zombie", value="late")
        old.commit_transaction(20)
    assert e.value.args[0].fatal() or "fenc" in str(e.value).lower()
    # The zombie's open transaction was aborted when the new instance started.
    assert read_all(ferry, "tx-zombie", 1, expect=1) == ["fresh"]


def test_a_transaction_past_its_timeout_is_aborted(ferry):
    create(ferry, "tx-timeout", 1)
    p = Producer({"bootstrap.servers": ferry.kafka, "transactional.id": "slow",
                  "transaction.timeout.ms": 2000})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("tx-timeout", value="too-slow")
    p.flush(10)
    time.sleep(4)
    described = http_json(f"{ferry.http}/v1/topics/tx-timeout")
    assert described is not None
    assert read_all(ferry, "tx-timeout", 1) == []
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_kill_9_mid_transaction_never_shows_its_records_and_new_transactions_work(ferry):
    create(ferry, "tx-crash", 2)
    p = txn_producer(ferry, "crashy")
    p.begin_transaction()
    for i in range(20):
        p.produce("tx-crash", key=f"k{i}", value=f"committed-{i}")
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(20):
        p.produce("tx-crash", key=f"k{i}", value=f"open-{i}")
    p.flush(10)
    ferry.proc.kill()
    ferry.proc.wait(10)
    ferry.start(kafka_addr=ferry.kafka)
    seen = read_all(ferry, "tx-crash", 2, expect=20)
    assert sorted(seen) == sorted(f"committed-{i}" for i in range(20))
    assert not any(v.startswith("open-") for v in http_texts(ferry, "tx-crash", 2))
    q = txn_producer(ferry, "crashy")
    q.begin_transaction()
    q.produce("tx-crash", key="k", value="after-restart")
    q.commit_transaction(20)
    seen = read_all(ferry, "tx-crash", 2, expect=21)
    assert "after-restart" in seen and not any(v.startswith("open-") for v in seen)


def test_kill_9_after_the_commit_was_decided_finishes_the_commit_at_restart(ferry):
    """The coordinator persists PrepareCommit before it writes any marker: a crash
    between the two is modelled by stopping with kill -9 while the transaction is open
    and marking it decided in meta/transactions.json, as the coordinator would have."""
    import json
    import os
    create(ferry, "tx-decided", 2)
    p = txn_producer(ferry, "decided")
    p.begin_transaction()
    for i in range(10):
        p.produce("tx-decided", key=f"k{i}", value=f"decided-{i}")
    p.flush(10)
    ferry.proc.kill()
    ferry.proc.wait(10)
    path = os.path.join(ferry.data_dir, "meta", "transactions.json")
    with open(path) as f:
        state = json.load(f)
    assert state["transactions"]["decided"]["status"] == "ongoing"
    assert len(state["transactions"]["decided"]["partitions"]) >= 1
    state["transactions"]["decided"]["status"] = "prepare_commit"
    with open(path, "w") as f:
        json.dump(state, f)
    ferry.start(kafka_addr=ferry.kafka)
    seen = read_all(ferry, "tx-decided", 2, expect=10)
    assert sorted(seen) == sorted(f"decided-{i}" for i in range(10))
    with open(path) as f:
        assert json.load(f)["transactions"]["decided"]["status"] == "complete_commit"


def test_queue_subscriptions_deliver_committed_records_only(ferry):
    create(ferry, "tx-queue", 1)
    http_json(f"{ferry.http}/v1/subscriptions",
              {"name": "tx-worker", "topic": "tx-queue", "mode": "queue", "start": "earliest"})
    p = txn_producer(ferry, "queue-feeder")
    p.begin_transaction()
    p.produce("tx-queue", value="aborted")
    p.flush(10)
    p.abort_transaction(20)
    p.begin_transaction()
    p.produce("tx-queue", value="committed")
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce("tx-queue", value="still-open")
    p.flush(10)
    pulled = http_json(f"{ferry.http}/v1/subscriptions/tx-worker/pull", {"max_records": 10, "wait_ms": 1000})
    values = [r["value"]["base64"] if isinstance(r["value"], dict) else r["value"] for r in pulled["records"]]
    assert [base64.b64decode(v).decode() for v in values] == ["committed"]
    p.abort_transaction(20)


def test_kafka_python_transactional_producer_commits_and_aborts(ferry):
    kafka = pytest.importorskip("kafka")
    create(ferry, "tx-kp", 1)
    p = kafka.KafkaProducer(bootstrap_servers=ferry.kafka, transactional_id="kafka-python")
    p.init_transactions()
    p.begin_transaction()
    p.send("tx-kp", b"kept")
    p.commit_transaction()
    p.begin_transaction()
    p.send("tx-kp", b"dropped")
    p.flush()
    p.abort_transaction()
    p.close()
    assert read_all(ferry, "tx-kp", 1, expect=1) == ["kept"]


@pytest.mark.parametrize("delay_ms", [0, 3, 10])
def test_kill_9_during_a_commit_shows_all_of_the_transaction_or_none(ferry, delay_ms):
    import threading
    create(ferry, "tx-atomic", 8)
    p = txn_producer(ferry, f"atomic-{delay_ms}")
    p.begin_transaction()
    for i in range(400):
        p.produce("tx-atomic", key=f"k{i}", value=f"v{i}")
    p.flush(10)
    committing = threading.Thread(target=lambda: _swallow(lambda: p.commit_transaction(5)), daemon=True)
    committing.start()
    time.sleep(delay_ms / 1000)
    ferry.proc.kill()
    ferry.proc.wait(10)
    ferry.start(kafka_addr=ferry.kafka)
    seen = read_all(ferry, "tx-atomic", 8)
    assert len(seen) in (0, 400), f"{len(seen)} of 400 records visible"
    assert len(http_texts(ferry, "tx-atomic", 8)) == len(seen)


def _swallow(call):
    try:
        call()
    except KafkaException:
        pass


def test_kafka_python_admin_lists_and_describes_transactions_and_producers(ferry):
    kafka = pytest.importorskip("kafka")
    from kafka.admin import KafkaAdminClient
    create(ferry, "tx-admin", 2)
    p = txn_producer(ferry, "described")
    p.begin_transaction()
    p.produce("tx-admin", value="x", partition=1)
    p.flush(10)
    admin = KafkaAdminClient(bootstrap_servers=ferry.kafka)
    try:
        listed = [t for ts in admin.list_transactions().values() for t in ts]
        mine = [t for t in listed if t.transactional_id == "described"]
        assert len(mine) == 1 and str(mine[0].state.value) == "Ongoing"
        ongoing_long = [t for ts in admin.list_transactions(duration_filter_ms=3_600_000).values() for t in ts]
        assert not ongoing_long
        d = admin.describe_transactions(["described"])["described"]
        assert str(d.state.value) == "Ongoing" and d.transaction_timeout_ms == 60000
        assert {(tp.topic, tp.partition) for tp in d.topic_partitions} == {("tx-admin", 1)}
        assert d.transaction_start_time_ms > 0
        producers = admin.describe_producers([kafka.TopicPartition("tx-admin", 1)])
        states = list(producers.values())[0]
        states = getattr(states, "active_producers", states)
        assert [s.current_transaction_start_offset for s in states] == [0]
        p.commit_transaction(20)
        d = admin.describe_transactions(["described"])["described"]
        assert str(d.state.value) == "CompleteCommit" and not d.topic_partitions
    finally:
        admin.close()
