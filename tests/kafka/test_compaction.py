"""Compacted topics against the real binary with confluent-kafka: only the latest value
of each key (and unexpired tombstones) remain after compaction, at their original
offsets, through Kafka and HTTP reads; a record without a key is refused; kill -9
during compaction loses nothing."""

import json
import signal
import tempfile
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Ferry

KEYS = 20
VERSIONS = 30


@pytest.fixture
def ferry():
    """Ferry whose cleaner checks every 100 ms (the default is every 30 s)."""
    with tempfile.TemporaryDirectory() as d:
        f = Ferry(d, extra=["--retention-check-ms", "100"]).start()
        yield f
        f.stop()


def http_json(url):
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def create_compacted(ferry, topic, **extra):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    config = {"cleanup.policy": "compact", "segment.bytes": "4096",
              "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "86400000",
              **extra}
    admin.create_topics([NewTopic(topic, 1, config=config)])[topic].result(20)
    return admin


def produce_versions(ferry, topic):
    """VERSIONS rounds over KEYS keys; key 0 ends with a tombstone. Returns the offset
    of each key's latest record and what it holds."""
    p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 5, "enable.idempotence": True})
    latest = {}

    def delivered(err, msg):
        assert err is None, err
        latest[msg.key().decode()] = (msg.offset(), msg.value())

    for v in range(VERSIONS):
        for k in range(KEYS):
            p.produce(topic, key=f"k{k}", value=f"k{k}-v{v}".ljust(100, ".").encode(),
                      on_delivery=delivered)
        # One batch per round: segments roll between batches.
        assert p.flush(20) == 0
    p.produce(topic, key="k0", value=None, on_delivery=delivered)
    # Enough unrelated keys to roll the segment holding the last versions.
    for i in range(200):
        p.produce(topic, key=f"filler{i}", value=b"x" * 100, on_delivery=delivered)
        if i % 20 == 19:
            assert p.flush(20) == 0
    assert p.flush(20) == 0
    return latest


def consume_all(ferry, topic, end):
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": f"g-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert not m.error(), m.error()
            got.append((m.offset(), m.key().decode(), m.value()))
            if m.offset() >= end - 1:
                break
    finally:
        c.close()
    return got


def size(ferry, topic):
    return http_json(f"{ferry.http}/v1/topics/{topic}")["partition_stats"][0]["size_bytes"]


def wait_compacted(ferry, topic, before, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if size(ferry, topic) < before * 0.6:
            return
        time.sleep(0.2)
    raise AssertionError("the partition was not compacted")


def check_latest_only(ferry, topic, latest):
    end = http_json(f"{ferry.http}/v1/topics/{topic}")["partition_stats"][0]["latest"]
    got = consume_all(ferry, topic, end)
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets)), "each offset once, in order"
    keyed = {}
    for o, k, v in got:
        keyed.setdefault(k, []).append((o, v))
    for k, (o, v) in latest.items():
        if not k.startswith("k"):
            continue
        # The latest record of each key is there at its own offset...
        assert (o, v) in keyed[k], (k, o)
    # ...and older versions of the keys in compacted segments are gone: what remains
    # of the versioned keys is far less than all that was written.
    versioned = [x for x in got if x[1].startswith("k")]
    assert len(versioned) < KEYS * VERSIONS / 3, len(versioned)
    # The tombstone of k0 is kept (delete.retention.ms is a day).
    assert keyed["k0"][-1] == (latest["k0"][0], None)
    # HTTP reads agree, from offset 0 (a gap) on; a pass of the cleaner between the
    # two reads may remove more, so both are read again until they agree.
    for _ in range(10):
        http = []
        offset = 0
        while offset < end:
            r = http_json(f"{ferry.http}/v1/topics/{topic}/partitions/0/records?offset={offset}&max_records=500")
            http += [(x["offset"], x["key"]) for x in r["records"]]
            if r["next_offset"] <= offset:
                break
            offset = r["next_offset"]
        if [o for o, _ in http] == offsets:
            break
        time.sleep(0.3)
        offsets = [o for o, _, _ in consume_all(ferry, topic, end)]
    assert [o for o, _ in http] == offsets


def test_compaction_keeps_the_latest_value_of_each_key_at_its_offset(ferry):
    topic = "compacted"
    admin = create_compacted(ferry, topic)
    described = admin.describe_configs([ConfigResource("topic", topic)])
    configs = list(described.values())[0].result(20)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["min.cleanable.dirty.ratio"].value == "0.01"
    before_latest = produce_versions(ferry, topic)
    before = size(ferry, topic)
    wait_compacted(ferry, topic, before)
    check_latest_only(ferry, topic, before_latest)


def test_a_record_without_a_key_is_refused_on_a_compacted_topic(ferry):
    create_compacted(ferry, "keyed")
    p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 0})
    errors = []
    p.produce("keyed", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Over HTTP: a problem naming the reason.
    req = urllib.request.Request(f"{ferry.http}/v1/topics/keyed/records",
                                 data=json.dumps({"records": [{"value": "x"}]}).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 422
    problem = json.loads(e.value.read())
    assert problem["type"] == "urn:ferry:problem:key-required", problem
    assert problem["record_index"] == 0 and "key" in problem["detail"], problem


def test_cleanup_policy_changes_through_incremental_alter_configs(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("plain", 1)])["plain"].result(20)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res = ConfigResource("topic", "plain", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    list(admin.incremental_alter_configs([res]).values())[0].result(20)
    t = http_json(f"{ferry.http}/v1/topics/plain")
    assert t["cleanup_policy"] == "compact,delete"
    bad = ConfigResource("topic", "plain", incremental_configs=[
        ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException):
        list(admin.incremental_alter_configs([bad]).values())[0].result(20)


def test_kill_during_compaction_loses_nothing():
    """Ferry killed (SIGKILL) again and again while its cleaner works: after each restart
    every key's latest value is still there, at its offset, once."""
    with tempfile.TemporaryDirectory() as d:
        f = Ferry(d, extra=["--retention-check-ms", "10"]).start()
        try:
            topic = "killed"
            create_compacted(f, topic, **{"segment.bytes": "16384"})
            latest = produce_versions(f, topic)
            for delay in [0.0, 0.02, 0.05, 0.1, 0.2]:
                time.sleep(delay)
                f.proc.send_signal(signal.SIGKILL)
                f.proc.wait(10)
                f.start(kafka_addr=f.kafka)
            deadline = time.time() + 30
            while True:
                try:
                    check_latest_only(f, topic, latest)
                    break
                except AssertionError:
                    # The cleaner may still be finishing after the last restart.
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            f.stop()


def test_a_consumer_group_resumes_across_gaps(ferry):
    """A group commits an offset that compaction then turns into a gap; the next member
    resumes at the next record kept, and its position moves past every gap."""
    topic = "grouped"
    create_compacted(ferry, topic)
    latest = produce_versions(ferry, topic)
    end = http_json(f"{ferry.http}/v1/topics/{topic}")["partition_stats"][0]["latest"]
    # Wait until the cleaner is done: the same records on three reads in a row.
    deadline = time.time() + 30
    reads = []
    while time.time() < deadline:
        reads.append([o for o, _, _ in consume_all(ferry, topic, end)])
        if len(reads) >= 3 and reads[-1] == reads[-2] == reads[-3] and len(reads[-1]) < end:
            break
        time.sleep(0.4)
    kept = reads[-1]
    gaps = [o for o in range(0, end) if o not in set(kept)]
    assert gaps, "compaction left gaps"
    gap = gaps[len(gaps) // 2]
    group = "resumer"
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": group,
                  "auto.offset.reset": "latest", "enable.auto.commit": False})
    c.subscribe([topic])
    deadline = time.time() + 20
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    c.commit(offsets=[TopicPartition(topic, 0, gap)], asynchronous=False)
    c.close()
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": group,
                  "auto.offset.reset": "latest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 20
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if got and got[-1] >= end - 1:
                break
            continue
        assert not m.error(), m.error()
        got.append(m.offset())
    c.commit(asynchronous=False)
    positions = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    assert got == [o for o in kept if o >= gap], "from the gap on, every kept record once"
    assert positions[0].offset == end
    assert latest
