"""Authorized operations (Metadata, DescribeCluster) and the ACLs of the partition admin
APIs, against a Ferry that requires authentication."""

import pytest
from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic

from kafka_security import (ADMIN, ADMIN_PASSWORD, CLUSTER, TOPIC, USERS, Op,  # noqa: F401
                            admin, grant, kafka_config, secure, tls_files)

ALICE = ("alice", USERS["alice"])


def alice_admin(secure):
    return AdminClient(kafka_config(secure, *ALICE))


def test_authorized_operations_are_what_the_acls_grant(secure, admin):
    admin.create_topics([NewTopic("ops", num_partitions=1, replication_factor=1)])["ops"].result(10)
    grant(admin, "alice", TOPIC, "ops", Op.READ)
    grant(admin, "alice", TOPIC, "ops", Op.DESCRIBE)
    grant(admin, "alice", CLUSTER, "kafka-cluster", Op.DESCRIBE)
    alice = alice_admin(secure)
    topic = alice.describe_topics(TopicCollection(["ops"]),
                                  include_authorized_operations=True)["ops"].result(10)
    assert set(topic.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    cluster = alice.describe_cluster(include_authorized_operations=True).result(10)
    assert set(cluster.authorized_operations) == {AclOperation.DESCRIBE}
    # The super user may do everything there is.
    everything = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert {AclOperation.ALTER, AclOperation.CREATE, AclOperation.IDEMPOTENT_WRITE} \
        <= set(everything.authorized_operations)


def test_partition_admin_apis_need_their_acls(secure, admin):
    admin.create_topics([NewTopic("locked", num_partitions=1, replication_factor=1)])["locked"].result(10)
    grant(admin, "alice", TOPIC, "locked", Op.DESCRIBE)
    alice = alice_admin(secure)
    tp = TopicPartition("locked", 0, -1)
    with pytest.raises(KafkaException) as e:
        alice.delete_records([tp])[tp].result(10)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        alice.elect_leaders(ElectionType.PREFERRED, [TopicPartition("locked", 0)]).result(10)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    grant(admin, "alice", TOPIC, "locked", Op.DELETE)
    assert alice.delete_records([tp])[tp].result(10).low_watermark == 0
