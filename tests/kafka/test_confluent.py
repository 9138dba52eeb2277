"""Kafka clients nobody at Ferry wrote: confluent-kafka (librdkafka) and kafka-python."""

import json
import threading
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def http_json(url, body=None, method=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method or ("POST" if body is not None else "GET"),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def http_values(ferry, topic, partitions):
    out = []
    for p in range(partitions):
        offset = 0
        while True:
            page = http_json(f"{ferry.http}/v1/topics/{topic}/partitions/{p}/records?offset={offset}&max_records=1000")
            if not page["records"]:
                break
            out.extend(page["records"])
            offset = page["next_offset"]
    return out


def create(ferry, name, partitions):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    fs[name].result(10)


def test_admin_creates_and_deletes_topics(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    fs = admin.create_topics([NewTopic("made-by-admin", num_partitions=3, replication_factor=1,
                                       config={"retention.ms": "3600000"})])
    fs["made-by-admin"].result(10)
    topic = http_json(f"{ferry.http}/v1/topics/made-by-admin")
    assert topic["partitions"] == 3 and topic["retention_ms"] == 3600000
    md = admin.list_topics(timeout=10)
    assert len(md.topics["made-by-admin"].partitions) == 3
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, "made-by-admin")
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"
    # Asking for replicas a single node does not have is refused with Kafka's error.
    bad = admin.create_topics([NewTopic("replicated", num_partitions=1, replication_factor=3)])
    try:
        bad["replicated"].result(10)
        raise AssertionError("replication factor 3 should be refused")
    except Exception as e:  # KafkaException
        assert "INVALID_REPLICATION_FACTOR" in str(e) or "replication" in str(e).lower()
    admin.delete_topics(["made-by-admin"])["made-by-admin"].result(10)
    assert "made-by-admin" not in [t["name"] for t in http_json(f"{ferry.http}/v1/topics")["topics"]]


def test_an_idempotent_producer_with_compression_writes_each_record_once(ferry):
    create(ferry, "idem", 3)
    for codec in ["zstd", "lz4", "gzip", "snappy"]:
        p = Producer({"bootstrap.servers": ferry.kafka, "enable.idempotence": True,
                      "compression.type": codec, "linger.ms": 5})
        for i in range(500):
            p.produce("idem", key=f"k{i % 17}", value=f"{codec}-{i}", headers=[("codec", codec.encode())])
        assert p.flush(20) == 0
    values = [r for r in http_values(ferry, "idem", 3)]
    assert len(values) == 2000
    import base64
    texts = sorted(base64.b64decode(r["value"]["base64"]).decode() for r in values)
    assert len(set(texts)) == 2000
    assert any(r["headers"].get("codec") == "zstd" for r in values)


def consume_all(consumer, want, timeout):
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        got.append(m.value().decode())
    return got


def test_a_group_of_three_rebalances_when_one_leaves_and_loses_nothing(ferry):
    create(ferry, "work", 6)
    conf = {"bootstrap.servers": ferry.kafka, "group.id": "workers", "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "enable.auto.commit": False}
    consumers = [Consumer(dict(conf, **{"client.id": f"c{i}"})) for i in range(3)]
    assigned = {i: [] for i in range(3)}
    for i, c in enumerate(consumers):
        c.subscribe(["work"], on_assign=lambda _c, parts, i=i: assigned.__setitem__(i, [p.partition for p in parts]))
    # Everyone polls until the group settles with all six partitions spread over three.
    deadline = time.time() + 30
    while time.time() < deadline and sorted(sum(assigned.values(), [])) != list(range(6)):
        for c in consumers:
            c.poll(0.1)
    assert sorted(sum(assigned.values(), [])) == list(range(6)), assigned
    assert all(len(v) == 2 for v in assigned.values()), assigned

    p = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(300):
        p.produce("work", key=f"k{i}", value=f"first-{i}")
    p.flush(10)
    seen = set()
    deadline = time.time() + 30
    while len(seen) < 300 and time.time() < deadline:
        for c in consumers:
            m = c.poll(0.05)
            if m is not None and not m.error():
                seen.add(m.value().decode())
                c.commit(message=m, asynchronous=False)
    assert len(seen) == 300

    # One member leaves: the other two take over its partitions and nothing is lost.
    consumers[2].close()
    for i in range(300):
        p.produce("work", key=f"k{i}", value=f"second-{i}")
    p.flush(10)
    deadline = time.time() + 40
    second = set()
    while len(second) < 300 and time.time() < deadline:
        for c in consumers[:2]:
            m = c.poll(0.05)
            if m is not None and not m.error():
                second.add(m.value().decode())
                c.commit(message=m, asynchronous=False)
    assert len(second) == 300, f"got {len(second)} of 300 after the rebalance"
    assert sorted(assigned[0] + assigned[1]) == list(range(6)), assigned
    for c in consumers[:2]:
        c.close()
    admin = AdminClient({"bootstrap.servers": ferry.kafka})  # kept alive until the answer
    described = admin.describe_consumer_groups(["workers"])["workers"].result(10)
    assert described.group_id == "workers" and len(described.members) == 0


def test_committed_offsets_survive_a_ferry_restart(ferry):
    create(ferry, "resume", 2)
    p = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(100):
        p.produce("resume", value=f"r{i}", partition=i % 2)
    p.flush(10)
    conf = {"bootstrap.servers": ferry.kafka, "group.id": "resumers", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = Consumer(conf)
    c.subscribe(["resume"])
    got = consume_all(c, 60, 30)
    c.commit(asynchronous=False)
    positions = {tp.partition: tp.offset for tp in c.committed([TopicPartition("resume", 0), TopicPartition("resume", 1)], 10)}
    c.close()
    assert sum(positions.values()) >= 60

    ferry.restart()
    c = Consumer(conf)
    c.subscribe(["resume"])
    rest = consume_all(c, 100 - sum(positions.values()), 30)
    c.close()
    # Resumed exactly where the group committed: together, every record once.
    assert len(rest) == 100 - sum(positions.values())
    assert sorted(set(got[: sum(positions.values())]) | set(rest)) == sorted(f"r{i}" for i in range(100)) or \
        len(set(got) | set(rest)) == 100


def test_kafka_python_produces_and_consumes(ferry):
    from kafka import KafkaConsumer, KafkaProducer
    create(ferry, "kp", 1)
    prod = KafkaProducer(bootstrap_servers=ferry.kafka)
    for i in range(20):
        prod.send("kp", key=b"k", value=f"py-{i}".encode(), headers=[("h", b"v")])
    prod.flush(10)
    prod.close()
    cons = KafkaConsumer("kp", bootstrap_servers=ferry.kafka, group_id="py", auto_offset_reset="earliest",
                         consumer_timeout_ms=5000)
    values = [m.value.decode() for m in cons]
    cons.close()
    assert values == [f"py-{i}" for i in range(20)]
    # And the HTTP API reads the same records.
    recs = http_values(ferry, "kp", 1)
    assert recs[3]["key"] == "k" and recs[3]["headers"] == {"h": "v"}


def test_a_member_that_dies_without_leaving_is_dropped_after_its_session_timeout(ferry):
    import subprocess
    import sys
    create(ferry, "lease", 4)
    conf = {"bootstrap.servers": ferry.kafka, "group.id": "mortal", "auto.offset.reset": "earliest",
            "session.timeout.ms": 3000, "heartbeat.interval.ms": 300}
    # A member in another process, killed with SIGKILL once it holds partitions.
    script = ("import sys, time\nfrom confluent_kafka import Consumer\n"
              f"c = Consumer({conf!r})\n"
              "c.subscribe(['lease'], on_assign=lambda c, p: print('assigned', len(p), flush=True))\n"
              "while True: c.poll(0.1)\n")
    doomed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    survivor = Consumer(conf)
    assigned = []
    survivor.subscribe(["lease"], on_assign=lambda _c, parts: assigned.__setitem__(slice(None), [p.partition for p in parts]))
    deadline = time.time() + 20
    while time.time() < deadline and len(assigned) != 2:
        survivor.poll(0.1)
    assert len(assigned) == 2, f"split between two members first: {assigned}"
    doomed.kill()
    doomed.wait()
    t = time.time()
    while time.time() < t + 20 and len(assigned) != 4:
        survivor.poll(0.1)
    took = time.time() - t
    survivor.close()
    assert sorted(assigned) == [0, 1, 2, 3], assigned
    assert took >= 2.0, f"not before the 3 s session timeout ran out (took {took:.1f} s)"


def test_partitions_grow_groups_are_listed_and_deleted_and_offsets_are_found_by_time(ferry):
    from confluent_kafka.admin import NewPartitions
    create(ferry, "admin2", 1)
    admin = AdminClient({"bootstrap.servers": ferry.kafka})  # kept alive until the answers
    admin.create_partitions([NewPartitions("admin2", 3)])["admin2"].result(10)
    assert http_json(f"{ferry.http}/v1/topics/admin2")["partitions"] == 3
    shrink = admin.create_partitions([NewPartitions("admin2", 2)])["admin2"]
    try:
        shrink.result(10)
        raise AssertionError("shrinking must be refused")
    except Exception as e:
        assert "INVALID_PARTITIONS" in str(e) or "partitions" in str(e).lower()

    # Records at known times; the first at or after a time is found.
    p = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(10):
        p.produce("admin2", value=f"t{i}", partition=0, timestamp=1_700_000_000_000 + i * 1000)
    p.flush(10)
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "timers", "enable.auto.commit": False})
    found = c.offsets_for_times([TopicPartition("admin2", 0, 1_700_000_004_500)], 10)
    assert found[0].offset == 5
    c.assign([TopicPartition("admin2", 0, 0)])
    assert consume_all(c, 10, 20) == [f"t{i}" for i in range(10)]
    c.commit(asynchronous=False)
    c.close()

    groups = admin.list_consumer_groups().result(10)
    assert "timers" in [g.group_id for g in groups.valid]
    admin.delete_consumer_groups(["timers"])["timers"].result(10)
    groups = admin.list_consumer_groups().result(10)
    assert "timers" not in [g.group_id for g in groups.valid]


def test_a_committed_offset_past_the_end_is_kept_and_the_consumer_resets_by_its_policy(ferry):
    # What a group sees after a topic's unsynced tail was lost (durability `never`): its
    # committed offset lies past the partition's end. Kafka keeps the commit; a fetch
    # from it is OFFSET_OUT_OF_RANGE and the client resets by `auto.offset.reset`.
    create(ferry, "lost", 1)
    p = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(10):
        p.produce("lost", value=f"r{i}", partition=0)
    p.flush(10)
    tp = TopicPartition("lost", 0, 1000)
    for group, reset in (("early", "earliest"), ("late", "latest")):
        c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": reset})
        c.commit(offsets=[tp], asynchronous=False)
        assert c.committed([TopicPartition("lost", 0)], 10)[0].offset == 1000
        c.close()
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "early", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["lost"])
    assert consume_all(c, 10, 30) == [f"r{i}" for i in range(10)]
    c.close()
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "late", "enable.auto.commit": False,
                  "auto.offset.reset": "latest"})
    c.subscribe(["lost"])
    # Wait for the assignment and the reset, then produce: only the new record comes.
    deadline = time.time() + 30
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    for _ in range(6):
        c.poll(0.5)
    p.produce("lost", value="after", partition=0)
    p.flush(10)
    assert consume_all(c, 1, 30) == ["after"]
    c.close()


# --- Topic settings over Kafka: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs ---

def config_admin(ferry):
    return AdminClient({"bootstrap.servers": ferry.kafka})


def described(admin, topic, **kw):
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([res], **kw)[res].result(10)


def source(entry):
    return getattr(entry.source, "value", entry.source)


def kafka_error(future):
    """The KafkaError a refused admin future carries."""
    from confluent_kafka import KafkaException
    try:
        future.result(10)
    except KafkaException as e:
        return e.args[0]
    raise AssertionError("the change should have been refused")


def alter(admin, topic, validate_only=False, **settings):
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config=settings)
    return admin.alter_configs([res], validate_only=validate_only)[res]


def edit(admin, topic, ops, validate_only=False):
    """IncrementalAlterConfigs with (name, value, operation) triples."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    entries = [ConfigEntry(n, v, incremental_operation=getattr(AlterConfigOpType, op)) for n, v, op in ops]
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    return admin.incremental_alter_configs([res], validate_only=validate_only)[res]


def test_alter_configs_replaces_a_topics_settings_and_describe_shows_where_each_comes_from(ferry):
    from confluent_kafka.admin import ConfigSource
    create(ferry, "cfg", 1)
    admin = config_admin(ferry)
    before = described(admin, "cfg")
    default_retention = before["retention.ms"].value
    assert source(before["retention.ms"]) == ConfigSource.DEFAULT_CONFIG.value
    assert before["retention.ms"].is_default and not before["retention.ms"].is_read_only

    alter(admin, "cfg", **{"retention.ms": "3600000", "max.message.bytes": "2048"}).result(10)
    after = described(admin, "cfg")  # librdkafka asks for synonyms itself
    assert after["retention.ms"].value == "3600000"
    assert source(after["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not after["retention.ms"].is_default
    # The broker's default stands behind the topic's own value.
    assert "log.retention.ms" in after["retention.ms"].synonyms
    assert after["retention.ms"].synonyms["log.retention.ms"].value == default_retention
    assert after["max.message.bytes"].value == "2048"
    # The HTTP API sees the same topic settings.
    topic = http_json(f"{ferry.http}/v1/topics/cfg")
    assert topic["retention_ms"] == 3600000 and topic["max_record_bytes"] == 2048

    # AlterConfigs is the whole set: what it leaves out returns to the default.
    alter(admin, "cfg", **{"retention.bytes": "10000000"}).result(10)
    again = described(admin, "cfg")
    assert again["retention.bytes"].value == "10000000"
    assert again["retention.ms"].value == default_retention
    assert source(again["retention.ms"]) == ConfigSource.DEFAULT_CONFIG.value
    assert source(again["max.message.bytes"]) == ConfigSource.DEFAULT_CONFIG.value

    # Refusals reach the client with Kafka's codes and change nothing.
    from confluent_kafka import KafkaError
    for bad in ({"max.message.bytes": "ten"}, {"max.message.bytes": "10"}, {"retention.ms": "0"},
                {"cleanup.policy": "shred"}, {"min.insync.replicas": "2"}, {"no.such.setting": "1"}):
        err = kafka_error(alter(admin, "cfg", **bad))
        assert err.code() == KafkaError.INVALID_CONFIG, (bad, err)
    assert described(admin, "cfg")["retention.bytes"].value == "10000000"
    err = kafka_error(alter(admin, "no-such-topic", **{"retention.ms": "1000"}))
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    # validate_only checks and leaves the topic as it is.
    alter(admin, "cfg", validate_only=True, **{"retention.ms": "1000"}).result(10)
    assert described(admin, "cfg")["retention.ms"].value == default_retention
    assert kafka_error(alter(admin, "cfg", validate_only=True, **{"retention.ms": "x"})).code() == \
        KafkaError.INVALID_CONFIG


def test_incremental_alter_configs_sets_deletes_appends_and_validates_only(ferry):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import ConfigSource
    create(ferry, "inc", 1)
    admin = config_admin(ferry)
    default_max = described(admin, "inc")["max.message.bytes"].value
    edit(admin, "inc", [("max.message.bytes", "4096", "SET"), ("retention.bytes", "9000000", "SET")]).result(10)
    # A second edit keeps what the first set (unlike AlterConfigs).
    edit(admin, "inc", [("retention.ms", "7200000", "SET")]).result(10)
    d = described(admin, "inc")
    assert (d["max.message.bytes"].value, d["retention.bytes"].value, d["retention.ms"].value) == \
        ("4096", "9000000", "7200000")
    assert source(d["retention.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    edit(admin, "inc", [("max.message.bytes", None, "DELETE")]).result(10)
    d = described(admin, "inc")
    assert d["max.message.bytes"].value == default_max
    assert source(d["max.message.bytes"]) == ConfigSource.DEFAULT_CONFIG.value
    assert d["retention.bytes"].value == "9000000"

    edit(admin, "inc", [("retention.ms", "1000", "SET")], validate_only=True).result(10)
    assert described(admin, "inc")["retention.ms"].value == "7200000"

    # APPEND and SUBTRACT: list settings only; cleanup.policy cannot become empty or
    # take an unknown policy (tests/kafka/test_compaction.py appends "compact").
    edit(admin, "inc", [("cleanup.policy", "delete", "APPEND")]).result(10)
    for ops in ([("cleanup.policy", "shred", "APPEND")], [("cleanup.policy", "delete", "SUBTRACT")],
                [("retention.ms", "5", "APPEND")], [("max.message.bytes", "abc", "SET")],
                [("max.message.bytes", "100000000", "SET")]):
        err = kafka_error(edit(admin, "inc", ops))
        assert err.code() == KafkaError.INVALID_CONFIG, (ops, err)
    d = described(admin, "inc")
    assert d["cleanup.policy"].value == "delete" and d["retention.ms"].value == "7200000"


def test_a_lowered_max_message_bytes_refuses_the_next_larger_produce(ferry):
    from confluent_kafka import KafkaError
    create(ferry, "small", 1)
    admin = config_admin(ferry)
    outcomes = []

    def send(value):
        p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 0})
        p.produce("small", value=value, on_delivery=lambda err, _m: outcomes.append(err))
        assert p.flush(20) == 0

    send(b"x" * 5000)
    assert outcomes == [None]
    edit(admin, "small", [("max.message.bytes", "2048", "SET")]).result(10)
    send(b"x" * 5000)
    assert outcomes[1] is not None and outcomes[1].code() == KafkaError.MSG_SIZE_TOO_LARGE, outcomes
    send(b"x" * 500)
    assert outcomes[2] is None, outcomes


def test_lowered_retention_removes_old_records_at_the_next_retention_check(tmp_path):
    from conftest import Ferry
    f = Ferry(str(tmp_path), extra=["--retention-check-ms", "200"]).start()
    try:
        admin = config_admin(f)
        admin.create_topics([NewTopic("aging", num_partitions=1, replication_factor=1,
                                      config={"segment.bytes": "4096"})])["aging"].result(10)
        p = Producer({"bootstrap.servers": f.kafka, "linger.ms": 0})
        hour_ago = int(time.time() * 1000) - 3_600_000
        for i in range(40):
            p.produce("aging", value=b"v" * 400, partition=0, timestamp=hour_ago + i)
            p.flush(10)
        part = http_json(f"{f.http}/v1/topics/aging")
        time.sleep(1)  # a few retention checks under the default seven days: nothing goes
        assert http_json(f"{f.http}/v1/topics/aging")["partition_stats"][0]["earliest"] == 0, part
        edit(admin, "aging", [("retention.ms", "60000", "SET")]).result(10)
        deadline = time.time() + 10
        earliest = 0
        while time.time() < deadline and earliest == 0:
            earliest = http_json(f"{f.http}/v1/topics/aging")["partition_stats"][0]["earliest"]
            time.sleep(0.2)
        assert earliest > 0, "sealed segments older than the new retention were deleted"
        c = Consumer({"bootstrap.servers": f.kafka, "group.id": "aging-reader"})
        low, high = c.get_watermark_offsets(TopicPartition("aging", 0), timeout=10)
        c.close()
        assert (low, high) == (earliest, 40)
    finally:
        f.stop()


def test_committed_leader_epochs_are_kept_and_listed(ferry):
    from confluent_kafka import ConsumerGroupTopicPartitions
    create(ferry, "epochs", 2)
    admin = config_admin(ferry)
    wanted = [TopicPartition("epochs", 0, 5, leader_epoch=2), TopicPartition("epochs", 1, 7)]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("ep", wanted)])["ep"].result(10)

    def listed():
        a = config_admin(ferry)
        got = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ep")])["ep"].result(10)
        return {tp.partition: (tp.offset, tp.leader_epoch) for tp in got.topic_partitions}

    assert listed() == {0: (5, 2), 1: (7, None)}
    ferry.restart()
    assert listed() == {0: (5, 2), 1: (7, None)}, "kept on disk"


def test_offset_delete_keeps_the_offsets_of_topics_an_active_member_reads(ferry):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka import errors as kerrors
    create(ferry, "od-read", 1)
    create(ferry, "od-other", 1)
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "od", "enable.auto.commit": False,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
    c.subscribe(["od-read"])
    deadline = time.time() + 20
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    assert c.assignment()
    c.commit(offsets=[TopicPartition("od-read", 0, 2), TopicPartition("od-other", 0, 3)], asynchronous=False)

    admin = KafkaAdminClient(bootstrap_servers=ferry.kafka)
    try:
        out = admin.delete_group_offsets("od", [KTP("od-read", 0), KTP("od-other", 0), KTP("od-nope", 0)])
        assert out[KTP("od-read", 0)] is kerrors.GroupSubscribedToTopicError, out
        assert out[KTP("od-other", 0)] is kerrors.NoError, out
        assert out[KTP("od-nope", 0)] is kerrors.UnknownTopicOrPartitionError, out
        left = c.committed([TopicPartition("od-read", 0), TopicPartition("od-other", 0)], 10)
        assert [tp.offset for tp in left] == [2, -1001], left  # -1001: no committed offset

        c.close()  # the group is empty now: its offsets may all go
        out = admin.delete_group_offsets("od", [KTP("od-read", 0)])
        assert out[KTP("od-read", 0)] is kerrors.NoError, out
        try:
            admin.delete_group_offsets("no-such-group", [KTP("od-read", 0)])
            raise AssertionError("an unknown group must be refused")
        except kerrors.GroupIdNotFoundError:
            pass
    finally:
        admin.close()


def test_a_consumer_with_small_fetch_limits_reads_every_record_of_many_batches_across_partitions(ferry):
    # Fetch answers must stay within fetch.max.bytes (KIP-74): librdkafka drops the
    # connection on an answer larger than receive.message.max.bytes, which is set here
    # to the least it may be (fetch.max.bytes + 512), so one oversized answer loses it.
    create(ferry, "small-fetches", 4)
    p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 2, "batch.size": 12000})
    want = set()
    for i in range(3000):
        value = f"{i:06d}-" + "x" * 900
        p.produce("small-fetches", key=str(i), value=value, partition=i % 4)
        want.add(value)
    assert p.flush(30) == 0
    errors = []
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "small-fetches",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.max.bytes": 30000, "max.partition.fetch.bytes": 14000,
                  "message.max.bytes": 14000, "receive.message.max.bytes": 30512, "fetch.wait.max.ms": 100,
                  "error_cb": errors.append})
    c.subscribe(["small-fetches"])
    got = set()
    deadline = time.time() + 60
    while len(got) < len(want) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            continue
        got.add(m.value().decode())
    c.close()
    assert not errors, errors
    assert got == want


def test_producing_to_an_invalid_topic_name_fails_at_once(ferry):
    for name in ["bad topic!", "..", "x" * 250]:
        md = AdminClient({"bootstrap.servers": ferry.kafka}).list_topics(topic=name, timeout=10)
        assert md.topics[name].error.code() == KafkaError.TOPIC_EXCEPTION, md.topics[name].error
    reports = []
    p = Producer({"bootstrap.servers": ferry.kafka, "message.timeout.ms": 60000})
    started = time.time()
    p.produce("bad topic!", value=b"v", on_delivery=lambda err, msg: reports.append((err, time.time())))
    assert p.flush(30) == 0
    [(err, at)] = reports
    assert err is not None and err.code() == KafkaError.TOPIC_EXCEPTION, err
    assert at - started < 5, f"failed after {at - started:.1f} s, not at once"
    assert "bad topic!" not in [t["name"] for t in http_json(f"{ferry.http}/v1/topics")["topics"]]


def test_producing_to_an_invalid_topic_name_fails_at_once_with_auto_create(tmp_path):
    from conftest import Ferry
    f = Ferry(str(tmp_path), extra=["--kafka-auto-create-topics"]).start()
    try:
        reports = []
        p = Producer({"bootstrap.servers": f.kafka, "message.timeout.ms": 60000})
        started = time.time()
        for topic in ["bad topic!", "fine-topic"]:
            p.produce(topic, value=b"v", on_delivery=lambda err, msg: reports.append((msg.topic(), err)))
        assert p.flush(30) == 0
        assert time.time() - started < 5
        errs = dict(reports)
        assert errs["bad topic!"].code() == KafkaError.TOPIC_EXCEPTION, errs
        assert errs["fine-topic"] is None, errs
        names = [t["name"] for t in http_json(f"{f.http}/v1/topics")["topics"]]
        assert names == ["fine-topic"]
    finally:
        f.stop()


def test_a_log_append_time_topic_stamps_records_with_the_brokers_time_over_kafka_and_http(ferry):
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
    from confluent_kafka.admin import ConfigResource
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    fs = admin.create_topics([
        NewTopic("stamped", num_partitions=1, replication_factor=1,
                 config={"message.timestamp.type": "LogAppendTime", "compression.type": "producer"}),
        NewTopic("as-produced", num_partitions=1, replication_factor=1,
                 config={"message.timestamp.type": "CreateTime"}),
    ])
    for f in fs.values():
        f.result(10)
    res = ConfigResource(ConfigResource.Type.TOPIC, "stamped")
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["message.timestamp.type"].value == "LogAppendTime"
    assert configs["compression.type"].value == "producer"
    assert http_json(f"{ferry.http}/v1/topics/stamped")["timestamp_type"] == "log_append_time"

    produced_at = 1_000_000  # 1970: far from the broker's time
    reports = []
    before = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": ferry.kafka, "compression.type": "lz4", "linger.ms": 5})
    for topic in ["stamped", "as-produced"]:
        for i in range(20):
            p.produce(topic, value=f"{topic}-{i}", timestamp=produced_at,
                      on_delivery=lambda err, msg: reports.append((err, msg.topic(), msg.timestamp())))
    assert p.flush(20) == 0
    http_json(f"{ferry.http}/v1/topics/stamped/records",
              {"records": [{"value": "over-http", "timestamp": produced_at}]})
    after = int(time.time() * 1000)
    assert all(err is None for err, _, _ in reports), reports
    # The produce answer carries the append time (log_append_time_ms).
    for _, topic, (kind, ts) in reports:
        if topic == "stamped":
            assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (kind, ts)
        else:
            assert ts == produced_at or ts == -1, (kind, ts)

    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "stamps", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("stamped", 0, 0), TopicPartition("as-produced", 0, 0)])
    seen = {}
    deadline = time.time() + 20
    while len(seen) < 41 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        seen[m.value().decode()] = (m.topic(), m.timestamp())
    c.close()
    assert len(seen) == 41
    for value, (topic, (kind, ts)) in seen.items():
        if topic == "stamped":
            assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (value, kind, ts)
        else:
            assert (kind, ts) == (TIMESTAMP_CREATE_TIME, produced_at), (value, kind, ts)
    # HTTP readers see the broker's time too, for Kafka's records and HTTP's alike.
    records = http_values(ferry, "stamped", 1)
    assert len(records) == 21
    assert all(before <= r["timestamp"] <= after for r in records), records
    assert all(r["timestamp"] == produced_at for r in http_values(ferry, "as-produced", 1))


def test_topic_configs_ferry_does_not_honour_are_refused_with_invalid_config(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    refused = {
        "gzipped": {"compression.type": "gzip"},
        "two-isr": {"min.insync.replicas": "2"},
        "preallocated": {"preallocate": "true"},
        "bad-ts-type": {"message.timestamp.type": "BrokerTime"},
    }
    fs = admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1, config=c)
                              for n, c in refused.items()])
    for name, f in fs.items():
        try:
            f.result(10)
            raise AssertionError(f"{name} should be refused")
        except KafkaException as e:
            err = e.args[0]
            assert err.code() == KafkaError.INVALID_CONFIG, err
            key = next(iter(refused[name]))
            assert key in err.str(), err.str()
    assert "producer" in str(fs["gzipped"].exception())
    assert not [t for t in http_json(f"{ferry.http}/v1/topics")["topics"] if t["name"] in refused]


def poll_all(consumers, seconds, until=None):
    """Polls every consumer in turn for `seconds`, or until `until()` holds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for c in consumers:
            c.poll(0.05)
        if until is not None and until():
            return True
    return until() if until is not None else True


class Events:
    """What the rebalance callbacks of one consumer saw."""

    def __init__(self):
        self.assigned = []   # partitions held now
        self.log = []        # ("assign" | "revoke", [partitions])
        self.errors = []

    def on_assign(self, _c, parts):
        self.log.append(("assign", sorted(p.partition for p in parts)))
        self.assigned = sorted(p.partition for p in parts)

    def on_revoke(self, _c, parts):
        self.log.append(("revoke", sorted(p.partition for p in parts)))

    def on_error(self, e):
        self.errors.append(e)


def static_member(ferry, instance, events):
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "statics", "group.instance.id": instance,
                  "client.id": instance, "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "error_cb": events.on_error})
    c.subscribe(["static6"], on_assign=events.on_assign, on_revoke=events.on_revoke)
    return c


def test_a_static_member_that_restarts_within_its_session_gets_its_partitions_back_without_a_rebalance(ferry):
    create(ferry, "static6", 6)
    events = {i: Events() for i in "abc"}
    members = {i: static_member(ferry, f"static-{i}", events[i]) for i in "abc"}

    def spread():
        owned = sum((events[i].assigned for i in "abc"), [])
        return sorted(owned) == list(range(6)) and all(len(events[i].assigned) == 2 for i in "abc")

    assert poll_all(members.values(), 30, spread), {i: e.log for i, e in events.items()}
    poll_all(members.values(), 1.5)  # nothing more is under way
    before = {i: list(events[i].log) for i in "ab"}
    held = events["c"].assigned

    # c stops (a static member sends no LeaveGroup) and starts again 2 s later.
    members["c"].close()
    poll_all([members["a"], members["b"]], 2)
    events["c2"] = Events()
    members["c2"] = static_member(ferry, "static-c", events["c2"])
    assert poll_all([members["a"], members["b"], members["c2"]], 15, lambda: events["c2"].assigned), \
        "the restarted member got no partitions"
    assert events["c2"].assigned == held, f"{events['c2'].assigned} instead of {held}"
    poll_all([members["a"], members["b"], members["c2"]], 3)
    assert {i: events[i].log for i in "ab"} == before, "the others rebalanced"

    # DescribeGroups shows the instance ids.
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    described = admin.describe_consumer_groups(["statics"])["statics"].result(10)
    assert sorted(m.group_instance_id for m in described.members) == ["static-a", "static-b", "static-c"]
    assert str(described.state).endswith("STABLE")

    # A second live process with the same instance id takes over and fences the first.
    events["c3"] = Events()
    members["c3"] = static_member(ferry, "static-c", events["c3"])
    fenced = None
    deadline = time.time() + 15
    while time.time() < deadline and (fenced is None or not events["c3"].assigned):
        for name in ["a", "b", "c3"]:
            members[name].poll(0.05)
        m = members["c2"].poll(0.05)
        if m is not None and m.error() and m.error().code() == KafkaError._FATAL:
            fenced = m.error()
    assert events["c3"].assigned == held
    # librdkafka makes FENCED_INSTANCE_ID a fatal error of the consumer, which its next
    # poll returns (as _FATAL, naming the cause).
    assert fenced is not None, "the old process was not fenced"
    assert "fenced by other consumer with same group.instance.id" in fenced.str(), fenced.str()
    assert {i: events[i].log for i in "ab"} == before, "the others rebalanced"

    # Stopped for longer than its session: the group rebalances and a and b take over.
    members["c3"].close()
    stopped = time.time()
    assert poll_all([members["a"], members["b"]], 25,
                    lambda: sorted(events["a"].assigned + events["b"].assigned) == list(range(6))), \
        {i: events[i].log for i in "ab"}
    took = time.time() - stopped
    assert took >= 8, f"rebalanced after {took:.1f} s, before the 10 s session ran out"
    members["c2"].close()
    for name in "ab":
        members[name].close()


def test_cooperative_sticky_members_joining_one_by_one_keep_their_partitions_and_lose_no_record(ferry):
    create(ferry, "coop6", 6)
    produced = []
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 5, "enable.idempotence": True})
        n = 0
        while not stop.is_set():
            p.produce("coop6", key=f"k{n}", value=f"v{n}")
            produced.append(f"v{n}")
            n += 1
            p.poll(0)
            time.sleep(0.002)
        assert p.flush(20) == 0

    writer = threading.Thread(target=produce)
    writer.start()
    consumed = []
    consumers, events = [], []

    def join_one(i):
        ev = Events()
        c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "coop", "client.id": f"coop{i}",
                      "partition.assignment.strategy": "cooperative-sticky", "auto.offset.reset": "earliest",
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "error_cb": ev.on_error})

        def on_assign(consumer, parts):
            ev.log.append(("assign", sorted(p.partition for p in parts)))
            ev.assigned = sorted(set(ev.assigned) | {p.partition for p in parts})
            consumer.incremental_assign(parts)

        def on_revoke(consumer, parts):
            ev.log.append(("revoke", sorted(p.partition for p in parts)))
            ev.assigned = sorted(set(ev.assigned) - {p.partition for p in parts})
            consumer.incremental_unassign(parts)

        c.subscribe(["coop6"], on_assign=on_assign, on_revoke=on_revoke)
        consumers.append(c)
        events.append(ev)

    def poll_consume(seconds, until):
        deadline = time.time() + seconds
        while time.time() < deadline:
            for c in consumers:
                m = c.poll(0.02)
                if m is not None and not m.error():
                    consumed.append(m.value().decode())
            if until():
                return True
        return False

    def settled(n):
        owned = [set(e.assigned) for e in events]
        share = {6 // n, -(-6 // n)}
        return (sorted(sum((e.assigned for e in events), [])) == list(range(6))
                and all(len(o) in share for o in owned))

    try:
        rebalance_one_by_one(events, join_one, poll_consume, settled)
    finally:
        stop.set()
        writer.join()
    assert poll_consume(30, lambda: set(produced) <= set(consumed)), \
        f"{len(set(produced) - set(consumed))} of {len(produced)} records never consumed"
    assert len(produced) > 500
    for c in consumers:
        c.close()


def rebalance_one_by_one(events, join_one, poll_consume, settled):
    """Three members join one at a time; after each join the group settles quickly
    and only the partitions the newcomer takes move."""
    for n in range(1, 4):
        before = [set(e.assigned) for e in events]
        marks = [len(e.log) for e in events]
        join_one(n - 1)
        t = time.time()
        assert poll_consume(30, lambda: settled(n)), [e.log for e in events]
        took = time.time() - t
        assert took < (12 if n == 1 else 6), f"member {n} settled after {took:.1f} s"
        poll_consume(1.5, lambda: False)  # nothing more moves
        assert settled(n), [e.log for e in events]
        # Members kept what they had and gave up only what the newcomer took.
        for old, ev, mark in zip(before, events, marks):
            revoked = set(sum((parts for kind, parts in ev.log[mark:] if kind == "revoke"), []))
            added = set(sum((parts for kind, parts in ev.log[mark:] if kind == "assign"), []))
            assert not added, f"an old member was given {added}"
            assert revoked == old - set(ev.assigned) and set(ev.assigned) <= old, ev.log
        if n > 1:
            moved = sum(len(old) - len(e.assigned) for old, e in zip(before, events))
            assert moved == len(events[-1].assigned), [e.log for e in events]
        assert all(not e.errors for e in events), [e.errors for e in events]
