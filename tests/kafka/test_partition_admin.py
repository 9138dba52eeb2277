"""Kafka admin odds and ends against the real binary, with clients nobody at Ferry wrote:
DeleteRecords, DescribeLogDirs, DescribeProducers, ElectLeaders, OffsetForLeaderEpoch,
replica assignments and authorized operations."""

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import (Consumer, ElectionType, KafkaError, KafkaException, Producer,
                             TopicCollection, TopicPartition)
from confluent_kafka.admin import (AclOperation, AdminClient, NewPartitions, NewTopic,
                                   OffsetSpec)


def http_json(url):
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def produce(ferry, topic, n, partition=0, **config):
    p = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 0, **config})
    for i in range(n):
        p.produce(topic, value=f"v{i}".ljust(200, "."), partition=partition)
        if i % 10 == 9:
            p.flush(10)
    assert p.flush(20) == 0


def first_offset(ferry, topic, group=None, assign_at=None, timeout=20):
    """The offset of the first record a consumer gets (earliest reset)."""
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": group or f"g-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        if assign_at is None:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, 0, assign_at)])
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert not m.error(), m.error()
            return m.offset()
        raise AssertionError("no record")
    finally:
        c.close()


def failed_with(future, code):
    with pytest.raises(KafkaException) as e:
        future.result(10)
    assert e.value.args[0].code() == code, e.value


def test_delete_records_moves_the_start_for_consumers_http_and_survives_kill_9(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("dr", num_partitions=1, replication_factor=1,
                                  config={"segment.bytes": "4096"})])["dr"].result(10)
    produce(ferry, "dr", 100)
    segments_before = http_json(f"{ferry.http}/v1/topics/dr")["partition_stats"][0]["segments"]
    # A queue subscription made before the deletion, at the beginning.
    post_json(f"{ferry.http}/v1/subscriptions",
              {"name": "dr-worker", "topic": "dr", "mode": "queue", "start": "earliest"})
    tp = TopicPartition("dr", 0, 40)
    deleted = admin.delete_records([tp])[tp].result(10)
    assert deleted.low_watermark == 40
    # Kafka's view: the low watermark moved; ListOffsets earliest says so.
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "wm"})
    assert c.get_watermark_offsets(TopicPartition("dr", 0), timeout=10) == (40, 100)
    c.close()
    earliest = admin.list_offsets({TopicPartition("dr", 0): OffsetSpec.earliest()})
    assert next(iter(earliest.values())).result(10).offset == 40
    # A new group starts at the new start; a consumer placed below it resets there.
    assert first_offset(ferry, "dr") == 40
    assert first_offset(ferry, "dr", assign_at=5) == 40
    # HTTP: the partition starts at 40, a read below it is refused, a read from it works.
    stats = http_json(f"{ferry.http}/v1/topics/dr")["partition_stats"][0]
    assert stats["earliest"] == 40
    assert stats["segments"] < segments_before, "whole segments below the start are deleted"
    page = http_json(f"{ferry.http}/v1/topics/dr/partitions/0/records?offset=40&max_records=5")
    assert page["records"][0]["offset"] == 40
    with pytest.raises(urllib.error.HTTPError):
        http_json(f"{ferry.http}/v1/topics/dr/partitions/0/records?offset=10&max_records=5")
    # The subscription skips what was deleted.
    pulled = post_json(f"{ferry.http}/v1/subscriptions/dr-worker/pull", {"max_records": 1, "wait_ms": 0})
    assert pulled["records"][0]["offset"] == 40
    # Past the high watermark: OFFSET_OUT_OF_RANGE, nothing moves.
    past = TopicPartition("dr", 0, 101)
    failed_with(admin.delete_records([past])[past], KafkaError.OFFSET_OUT_OF_RANGE)
    # After kill -9 the start is where it was.
    ferry.proc.kill()
    ferry.proc.wait(10)
    ferry.start(kafka_addr=ferry.kafka)
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "wm"})
    assert c.get_watermark_offsets(TopicPartition("dr", 0), timeout=10) == (40, 100)
    c.close()
    assert first_offset(ferry, "dr") == 40
    # -1 (OFFSET_END) deletes up to the high watermark.
    end = TopicPartition("dr", 0, -1)
    assert admin.delete_records([end])[end].result(10).low_watermark == 100
    produce(ferry, "dr", 1)
    assert first_offset(ferry, "dr") == 100


def test_a_group_whose_committed_offset_was_deleted_resumes_at_the_new_start(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("drg", num_partitions=1, replication_factor=1)])["drg"].result(10)
    produce(ferry, "drg", 30)
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "behind",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("drg", 0, 10)], asynchronous=False)
    c.close()
    tp = TopicPartition("drg", 0, 25)
    assert admin.delete_records([tp])[tp].result(10).low_watermark == 25
    # The committed 10 is below the start: the client resets by auto.offset.reset.
    assert first_offset(ferry, "drg", group="behind") == 25


def poll_one(c, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is not None:
            assert not m.error(), m.error()
            return m
    raise AssertionError("no record")


def test_a_consumer_validating_positions_by_leader_epoch_reads_on(ferry):
    """librdkafka validates a position that carries a leader epoch (assign, seek) with
    OffsetForLeaderEpoch before it fetches; Ferry's answer must let it go on, also from
    below a start moved by DeleteRecords."""
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("ep", num_partitions=1, replication_factor=1)])["ep"].result(10)
    produce(ferry, "ep", 20)
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": "epochs",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("ep", 0, 5, leader_epoch=0)])
        m = poll_one(c)
        assert (m.offset(), m.leader_epoch()) == (5, 0)
        c.seek(TopicPartition("ep", 0, 12, leader_epoch=0))
        assert poll_one(c).offset() == 12
        tp = TopicPartition("ep", 0, 15)
        assert admin.delete_records([tp])[tp].result(10).low_watermark == 15
        c.seek(TopicPartition("ep", 0, 3, leader_epoch=0))
        assert poll_one(c).offset() == 15
    finally:
        c.close()
    metrics = urllib.request.urlopen(f"{ferry.http}/metrics").read().decode()
    asked = [line for line in metrics.splitlines()
             if 'api="OffsetForLeaderEpoch"' in line and "duration_seconds_count" in line]
    assert asked and float(asked[0].split()[-1]) >= 2, asked
    assert 'kafka_request_errors_total{api="OffsetForLeaderEpoch"' not in metrics


def test_elect_leaders_finds_nothing_to_elect_on_one_node(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("el", num_partitions=2, replication_factor=1)])["el"].result(10)
    result = admin.elect_leaders(ElectionType.PREFERRED,
                                 [TopicPartition("el", 0), TopicPartition("el", 1),
                                  TopicPartition("nope", 0)]).result(10)
    errors = {(tp.topic, tp.partition): e.code() if e else None for tp, e in result.items()}
    assert errors[("el", 0)] == KafkaError.ELECTION_NOT_NEEDED
    assert errors[("el", 1)] == KafkaError.ELECTION_NOT_NEEDED
    assert errors[("nope", 0)] == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_topics_and_partitions_take_an_assignment_to_this_node_only(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("ra", num_partitions=3, replication_factor=-1, replica_assignment=[[0], [0], [0]])])["ra"].result(10)
    assert len(admin.list_topics(timeout=10).topics["ra"].partitions) == 3
    bad = admin.create_topics([NewTopic("ra-bad", num_partitions=2, replication_factor=-1, replica_assignment=[[0], [1]])])["ra-bad"]
    with pytest.raises(KafkaException) as e:
        bad.result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert "one node" in e.value.args[0].str()
    admin.create_partitions([NewPartitions("ra", 5, replica_assignment=[[0], [0]])])["ra"].result(10)
    assert len(admin.list_topics(timeout=10).topics["ra"].partitions) == 5
    failed_with(admin.create_partitions([NewPartitions("ra", 6, replica_assignment=[[2]])])["ra"],
                KafkaError.INVALID_REPLICA_ASSIGNMENT)


TOPIC_OPS = {AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
             AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
             AclOperation.ALTER_CONFIGS}


def test_authorized_operations_without_authentication_are_everything(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("ops", num_partitions=1, replication_factor=1)])["ops"].result(10)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert cluster.cluster_id == "ferry" and [n.id for n in cluster.nodes] == [0]
    assert {AclOperation.DESCRIBE, AclOperation.ALTER, AclOperation.IDEMPOTENT_WRITE} \
        <= set(cluster.authorized_operations)
    plain = admin.describe_cluster().result(10)
    assert not plain.authorized_operations
    topics = admin.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True)
    assert set(topics["ops"].result(10).authorized_operations) == TOPIC_OPS


def test_describe_log_dirs_and_producers_with_kafka_python(ferry):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("ld", num_partitions=2, replication_factor=1)])["ld"].result(10)
    produce(ferry, "ld", 10, partition=1, **{"enable.idempotence": True})
    ka = KafkaAdminClient(bootstrap_servers=ferry.kafka)
    try:
        [broker] = ka.describe_log_dirs()
        [log_dir] = broker["log_dirs"]
        assert broker["broker"] == 0 and log_dir["error_code"] == 0
        assert os.path.realpath(log_dir["log_dir"]) == os.path.realpath(ferry.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        [topic] = [t for t in log_dir["topics"] if t["name"] == "ld"]
        sizes = {p["partition_index"]: p["partition_size"] for p in topic["partitions"]}
        stats = http_json(f"{ferry.http}/v1/topics/ld")["partition_stats"]
        assert sizes == {s["partition"]: s["size_bytes"] for s in stats}
        assert sizes[1] > 0 and sizes[0] == 0
        assert all(p["offset_lag"] == 0 and not p["is_future_key"] for p in topic["partitions"])
        producers = ka.describe_producers([KTP("ld", 1), KTP("ld", 0)])
        states = {tp.partition: s.active_producers for tp, s in producers.items()}
        assert states[0] == []
        [state] = states[1]
        assert (state.producer_epoch, state.last_sequence) == (0, 9), state
        assert state.producer_id >= 0 and state.last_timestamp > 0
        assert (state.coordinator_epoch, state.current_transaction_start_offset) == (-1, -1)
    finally:
        ka.close()
