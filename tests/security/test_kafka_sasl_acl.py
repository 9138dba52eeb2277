"""Kafka clients against a Ferry that requires authentication: SASL (SCRAM-SHA-512,
SCRAM-SHA-256, PLAIN) with confluent-kafka and kcat, refusals, and ACLs managed and
enforced through the Kafka protocol."""

import base64
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBindingFilter, AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from kafka_security import (ADMIN, ADMIN_PASSWORD, CLUSTER, GROUP, TOPIC, USERS, Op,  # noqa: F401
                            admin, grant, kafka_config, kcat_args, secure, tls_files)

ALICE = ("alice", USERS["alice"])


def create_topic(admin, name, partitions=1):
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)


def produce(config, topic, values, timeout=15):
    """Produces `values`; returns the delivery errors (empty when all were acknowledged)."""
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    p = Producer({**config, "message.timeout.ms": int(timeout * 1000) - 1000})
    for v in values:
        p.produce(topic, value=v, on_delivery=delivered)
    assert p.flush(timeout) == 0
    return errors


def consume(config, topic, group, count, timeout=15):
    """Reads `count` values from the beginning: (values, the first error seen)."""
    c = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    values, error = [], None
    deadline = time.time() + timeout
    try:
        while len(values) < count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    error = m.error()
                    break
                continue
            values.append(m.value())
        if len(values) == count:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return values, error


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_a_producer_and_a_consumer_authenticate_with_each_mechanism(secure, admin, mechanism):
    topic, group = name("sasl"), name("g")
    create_topic(admin, topic, 2)
    grant(admin, "alice", TOPIC, topic, Op.WRITE)
    grant(admin, "alice", TOPIC, topic, Op.READ)
    grant(admin, "alice", GROUP, group, Op.READ)
    config = kafka_config(secure, *ALICE, mechanism=mechanism)
    sent = [f"{mechanism}-{i}".encode() for i in range(50)]
    assert produce(config, topic, sent) == []
    got, error = consume(config, topic, group, len(sent))
    assert error is None
    assert sorted(got) == sorted(sent)


def test_kcat_produces_and_consumes_with_scram(secure, admin):
    topic = name("kcat")
    create_topic(admin, topic)
    grant(admin, "bob", TOPIC, topic, Op.ALL)
    args = kcat_args(secure, "bob", USERS["bob"])
    subprocess.run(["kcat", *args, "-P", "-t", topic], input=b"one\ntwo\nthree\n",
                   check=True, timeout=30)
    out = subprocess.run(["kcat", *args, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, check=True, timeout=30)
    assert out.stdout.split() == [b"one", b"two", b"three"]


@pytest.mark.parametrize("user,password", [("alice", "wrong-password"), ("nobody", "whatever")])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_wrong_password_or_an_unknown_user_is_refused(secure, admin, user, password, mechanism):
    errors = []
    p = Producer(kafka_config(secure, user, password, mechanism=mechanism,
                              error_cb=errors.append))
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert errors, "the client saw no error"
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    assert "Authentication failed" in errors[0].str()
    # The server is still there for everyone else, and counts the refusal.
    assert admin.list_topics(timeout=10).topics is not None
    if mechanism == "PLAIN" and user == "nobody":
        metrics = http_get(secure, "/metrics", ADMIN, ADMIN_PASSWORD)
        assert 'api="SaslAuthenticate",code="58"' in metrics


def http_get(ferry, path, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(ferry.http + path, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def kafka_request(api_key, version, correlation_id, body=b""):
    client = b"raw"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client)) + client
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def read_frame(sock):
    def exactly(n):
        out = b""
        while len(out) < n:
            try:
                chunk = sock.recv(n - len(out))
            except (ConnectionError, ssl.SSLError):
                return None
            if not chunk:
                return None
            out += chunk
        return out
    size = exactly(4)
    return None if size is None else exactly(struct.unpack(">i", size)[0])


def test_an_unauthenticated_client_gets_nothing_but_api_versions(secure):
    host, port = secure.kafka.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        s = raw
        if secure.ca_file:
            s = ssl.create_default_context(cafile=secure.ca_file).wrap_socket(raw, server_hostname=host)
        s.sendall(kafka_request(18, 0, 1))  # ApiVersions v0
        answer = read_frame(s)
        assert answer is not None and struct.unpack(">ih", answer[:6]) == (1, 0)
        s.sendall(kafka_request(3, 1, 2, struct.pack(">i", -1)))  # Metadata v1, all topics
        assert read_frame(s) is None, "Metadata before authentication must close the connection"


def test_produce_is_denied_until_write_is_allowed(secure, admin):
    topic = name("write")
    create_topic(admin, topic)
    grant(admin, "alice", TOPIC, topic, Op.DESCRIBE)
    config = kafka_config(secure, *ALICE)
    errors = produce(config, topic, [b"no"])
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    grant(admin, "alice", TOPIC, topic, Op.WRITE)
    assert produce(config, topic, [b"yes"]) == []


def test_consume_is_denied_until_read_is_allowed(secure, admin):
    topic, group = name("read"), name("g")
    create_topic(admin, topic)
    assert produce(kafka_config(secure, ADMIN, ADMIN_PASSWORD), topic, [b"a", b"b"]) == []
    grant(admin, "alice", TOPIC, topic, Op.DESCRIBE)
    grant(admin, "alice", GROUP, group, Op.READ)
    config = kafka_config(secure, *ALICE)
    got, error = consume(config, topic, group, 2)
    assert got == [] and error is not None
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    grant(admin, "alice", TOPIC, topic, Op.READ)
    got, error = consume(config, topic, group, 2)
    assert error is None and got == [b"a", b"b"]


def test_joining_a_group_is_denied_until_read_on_the_group_is_allowed(secure, admin):
    topic, group = name("join"), name("g")
    create_topic(admin, topic)
    assert produce(kafka_config(secure, ADMIN, ADMIN_PASSWORD), topic, [b"x"]) == []
    grant(admin, "alice", TOPIC, topic, Op.READ)
    config = kafka_config(secure, *ALICE)
    got, error = consume(config, topic, group, 1)
    assert got == [] and error is not None
    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error
    grant(admin, "alice", GROUP, group, Op.READ)
    got, error = consume(config, topic, group, 1)
    assert error is None and got == [b"x"]


def test_creating_and_deleting_topics_are_denied_until_allowed(secure, admin):
    topic = name("made")
    alice = AdminClient(kafka_config(secure, *ALICE))
    with pytest.raises(KafkaException) as e:
        create_topic(alice, topic)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(admin, "alice", TOPIC, "made-", Op.CREATE, pattern=ResourcePatternType.PREFIXED)
    create_topic(alice, topic)
    with pytest.raises(KafkaException) as e:
        alice.delete_topics([topic])[topic].result(10)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(admin, "alice", TOPIC, topic, Op.DELETE)
    alice.delete_topics([topic])[topic].result(10)
    assert topic not in admin.list_topics(timeout=10).topics


def test_metadata_lists_only_the_topics_a_principal_may_describe(secure, admin):
    visible, hidden = name("visible"), name("hidden")
    create_topic(admin, visible)
    create_topic(admin, hidden)
    grant(admin, "alice", TOPIC, visible, Op.DESCRIBE)
    alice = AdminClient(kafka_config(secure, *ALICE))
    topics = alice.list_topics(timeout=10).topics
    assert visible in topics and hidden not in topics
    assert {visible, hidden} <= set(admin.list_topics(timeout=10).topics)
    # Asked for by name, the hidden topic answers TOPIC_AUTHORIZATION_FAILED.
    md = alice.list_topics(topic=hidden, timeout=10)
    assert md.topics[hidden].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acls_are_created_described_and_deleted_through_the_admin_client(secure, admin):
    topic = name("acl")
    binding = grant(admin, "alice", TOPIC, topic, Op.READ)
    grant(admin, "bob", GROUP, "team-", Op.READ, pattern=ResourcePatternType.PREFIXED)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  Op.ANY, AclPermissionType.ANY)
    listed = admin.describe_acls(everything).result(10)
    assert binding in listed and len(listed) == 2
    only_topic = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None,
                                  None, Op.ANY, AclPermissionType.ANY)
    assert admin.describe_acls(only_topic).result(10) == [binding]
    # They survive a restart.
    secure.restart()
    admin = AdminClient(kafka_config(secure, ADMIN, ADMIN_PASSWORD))
    assert binding in admin.describe_acls(everything).result(10)
    deleted = admin.delete_acls([only_topic])[only_topic].result(10)
    assert deleted == [binding]
    assert binding not in admin.describe_acls(everything).result(10)
    # A user other than the super user may not manage ACLs: creating one is refused, and
    # describing shows nothing (librdkafka does not raise DescribeAcls' top-level
    # CLUSTER_AUTHORIZATION_FAILED; it returns no bindings).
    assert admin.describe_acls(everything).result(10) != []
    alice = AdminClient(kafka_config(secure, *ALICE))
    with pytest.raises(KafkaException) as e:
        grant(alice, "alice", TOPIC, topic, Op.ALL)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert alice.describe_acls(everything).result(10) == []


def test_scram_users_are_managed_through_the_admin_client(secure, admin):
    carol = UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"carol-secret")
    admin.alter_user_scram_credentials([carol])["carol"].result(10)
    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(10)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 4096)]
    everyone = admin.describe_user_scram_credentials().result(10)
    assert {"admin", "alice", "bob", "carol"} <= set(everyone)
    # carol logs in with SCRAM-SHA-256 (and not SCRAM-SHA-512, which she has no credential for).
    ok = AdminClient(kafka_config(secure, "carol", "carol-secret", mechanism="SCRAM-SHA-256"))
    assert ok.list_topics(timeout=10) is not None
    # Unknown users, and iterations Kafka would not accept, are refused one by one.
    with pytest.raises(KafkaException) as e:
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(10)
    assert e.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    weak = UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000), b"dave-secret")
    with pytest.raises(KafkaException) as e:
        admin.alter_user_scram_credentials([weak])["dave"].result(10)
    assert e.value.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL
    # Deleting carol's only credential removes her.
    gone = UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_256)
    admin.alter_user_scram_credentials([gone])["carol"].result(10)
    with pytest.raises(KafkaException) as e:
        admin.describe_user_scram_credentials(["carol"])["carol"].result(10)
    assert e.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    # Only a principal with Alter on the cluster may change credentials.
    alice = AdminClient(kafka_config(secure, *ALICE))
    with pytest.raises(KafkaException) as e:
        alice.alter_user_scram_credentials([carol])["carol"].result(10)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    grant(admin, "alice", CLUSTER, "kafka-cluster", Op.ALTER)
    alice.alter_user_scram_credentials([carol])["carol"].result(10)
