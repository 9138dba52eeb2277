"""The next-generation consumer group protocol (KIP-848) with confluent-kafka's
`group.protocol=consumer`: Ferry assigns the partitions; members share them, a member
that leaves hands its partitions to the others, committed offsets resume."""

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def consumer(ferry, group, **extra):
    c = Consumer({"bootstrap.servers": ferry.kafka, "group.id": group,
                  "group.protocol": "consumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **extra})
    c.subscribe(["shared"])
    return c


def produce(ferry, n, start=0):
    p = Producer({"bootstrap.servers": ferry.kafka})
    for i in range(start, start + n):
        p.produce("shared", key=f"k{i}", value=f"v{i}".encode())
    assert p.flush(20) == 0


def poll_until(consumers, seconds, done):
    """Polls every consumer until `done(seen)` or the time runs out; seen: per consumer."""
    seen = [[] for _ in consumers]
    deadline = time.time() + seconds
    while time.time() < deadline and not done(seen):
        for i, c in enumerate(consumers):
            m = c.poll(0.1)
            if m is not None and not m.error():
                seen[i].append((m.partition(), m.offset(), m.value()))
    return seen


def test_two_members_share_a_topic_and_one_takes_all_when_the_other_leaves(ferry):
    admin = AdminClient({"bootstrap.servers": ferry.kafka})
    admin.create_topics([NewTopic("shared", num_partitions=6, replication_factor=1)])["shared"].result(10)

    # Both members first hold their share: a member that joined alone holds every
    # partition until the other joins, and may read from all of them meanwhile.
    a, b = consumer(ferry, "g848"), consumer(ferry, "g848")
    deadline = time.time() + 30
    while time.time() < deadline:
        for c in (a, b):
            c.poll(0.1)
        held = [{tp.partition for tp in c.assignment()} for c in (a, b)]
        if held[0] and held[1] and not (held[0] & held[1]) and held[0] | held[1] == set(range(6)):
            break
    assert held[0] and held[1] and not (held[0] & held[1]), held
    produce(ferry, 60)
    seen = poll_until([a, b], 40, lambda s: len(s[0]) + len(s[1]) >= 60 and s[0] and s[1])
    assert len(seen[0]) + len(seen[1]) == 60, (len(seen[0]), len(seen[1]))
    pa = {p for p, _, _ in seen[0]}
    pb = {p for p, _, _ in seen[1]}
    assert pa and pb and not (pa & pb), (pa, pb)
    assert pa | pb == set(range(6))
    a.commit(asynchronous=False)
    b.commit(asynchronous=False)

    # Ferry describes the group with both members and their assignments.
    described = admin.describe_consumer_groups(["g848"])["g848"].result(10)
    assert len(described.members) == 2
    # Described by ConsumerGroupDescribe: a group of the consumer protocol.
    assert str(getattr(described, "type", "CONSUMER")).endswith("CONSUMER"), described.type

    # b leaves; a takes every partition and reads what comes next.
    b.close()
    produce(ferry, 60, start=60)
    seen = poll_until([a], 40, lambda s: len(s[0]) >= 60)
    assert len(seen[0]) == 60
    assert {p for p, _, _ in seen[0]} == set(range(6))
    a.commit(asynchronous=False)
    a.close()

    # Committed offsets resume: a new member reads only what was produced after.
    produce(ferry, 12, start=120)
    c = consumer(ferry, "g848")
    seen = poll_until([c], 40, lambda s: len(s[0]) >= 12)
    c.close()
    assert sorted(v for _, _, v in seen[0]) == sorted(f"v{i}".encode() for i in range(120, 132))
