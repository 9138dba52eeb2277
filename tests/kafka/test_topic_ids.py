"""Topic ids with confluent-kafka (librdkafka): a topic deleted and created again under
its name has a new id, and a producer that knew the old topic notices."""

import json
import time
import urllib.request

from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic


def http_json(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def uuid_text(u):
    """confluent-kafka's Uuid as the hyphenated text Ferry's HTTP API shows."""
    msb = u.get_most_significant_bits() & (2**64 - 1)
    lsb = u.get_least_significant_bits() & (2**64 - 1)
    h = f"{msb:016x}{lsb:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def create(admin, name, partitions):
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)


def described_id(admin, name):
    return uuid_text(admin.describe_topics(TopicCollection([name]))[name].result(10).topic_id)


def test_the_admin_client_sees_the_topic_id_ferry_shows_over_http(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    create(admin, "with-id", 2)
    shown = http_json(f"{ferry.http}/v1/topics/with-id")["topic_id"]
    assert described_id(admin, "with-id") == shown
    admin.delete_topics(["with-id"])["with-id"].result(10)
    create(admin, "with-id", 2)
    again = http_json(f"{ferry.http}/v1/topics/with-id")["topic_id"]
    assert again != shown
    assert described_id(admin, "with-id") == again


def test_a_producer_stops_using_partitions_a_recreated_topic_no_longer_has(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    create(admin, "shrunk", 10)
    producer = Producer({"bootstrap.servers": ferry.kafka, "linger.ms": 5,
                         "topic.metadata.refresh.interval.ms": 500,
                         "message.timeout.ms": 20000})
    failed, delivered = [], []

    def report(err, msg):
        (failed if err else delivered).append((err, msg.partition() if not err else None))

    # The producer learns 10 partitions and uses them all.
    for i in range(200):
        producer.produce("shrunk", key=f"k{i}", value=b"before", on_delivery=report)
    assert producer.flush(20) == 0
    assert not failed and {p for _, p in delivered} == set(range(10))

    old_id = described_id(admin, "shrunk")
    admin.delete_topics(["shrunk"])["shrunk"].result(10)
    create(admin, "shrunk", 3)
    assert described_id(admin, "shrunk") != old_id
    # Past the producer's metadata refresh, it sees the new id and its 3 partitions.
    time.sleep(2)
    delivered.clear()
    for i in range(300):
        producer.produce("shrunk", key=f"k{i}", value=b"after", on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failed == [], f"{len(failed)} records failed, e.g. {failed[:3]}"
    assert len(delivered) == 300
    assert {p for _, p in delivered} <= {0, 1, 2}
    counts = [http_json(f"{ferry.http}/v1/topics/shrunk")["partition_stats"][p]["latest"] for p in range(3)]
    assert sum(counts) == 300
