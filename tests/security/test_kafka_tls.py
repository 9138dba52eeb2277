"""Kafka clients over TLS: SASL_SSL with every mechanism (confluent-kafka and kcat),
mutual TLS whose certificate names the principal, and the HTTP API over HTTPS. The
certificates are made here (trustme) with SANs for 127.0.0.1 and localhost."""

import base64
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
import uuid

import pytest
import trustme
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from conftest import BIN, Ferry

ADMIN = ("admin", "admin-secret")
USERS = {"alice": "alice-secret"}


@pytest.fixture(scope="module")
def pki():
    """A CA, the server's certificate, and a client certificate for CN=alice."""
    with tempfile.TemporaryDirectory() as d:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("alice.clients.example", common_name="alice")
        paths = {name: os.path.join(d, name) for name in ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")}
        ca.cert_pem.write_to_path(paths["ca.pem"])
        for blob in server.cert_chain_pems:
            blob.write_to_path(paths["server.pem"], append=True)
        server.private_key_pem.write_to_path(paths["server-key.pem"])
        for blob in client.cert_chain_pems:
            blob.write_to_path(paths["client.pem"], append=True)
        client.private_key_pem.write_to_path(paths["client-key.pem"])
        yield paths


def make_users(data_dir):
    for name, password in [ADMIN, *USERS.items()]:
        subprocess.run([BIN, "user", "create", name, "--password", password, "--data-dir", data_dir],
                       check=True, capture_output=True)


@pytest.fixture
def tls_ferry(pki):
    """Ferry with authentication on, TLS on both listeners, client certificates requested."""
    with tempfile.TemporaryDirectory() as d:
        make_users(d)
        f = Ferry(d, extra=["--auth", "--super-users", "User:admin",
                            "--tls-cert", pki["server.pem"], "--tls-key", pki["server-key.pem"],
                            "--tls-client-ca", pki["ca.pem"], "--tls-client-auth", "requested"]).start()
        yield f
        f.stop()


def sasl_ssl(f, pki, mechanism, user, password):
    return {"bootstrap.servers": f.kafka, "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
            "sasl.username": user, "sasl.password": password, "ssl.ca.location": pki["ca.pem"]}


def round_trip(config, topic, n=20):
    p = Producer({**config, "acks": "all", "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert p.flush(20) == 0
    c = Consumer({**config, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    try:
        for _ in range(200):
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append(m.value())
            if len(got) == n:
                break
    finally:
        c.close()
    assert got == [f"v{i}".encode() for i in range(n)]


def create_topic(admin_config, topic):
    from confluent_kafka.admin import NewTopic
    a = AdminClient(admin_config)
    for fut in a.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(20)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_sasl_ssl_produce_and_consume_with_every_mechanism(tls_ferry, pki, mechanism):
    topic = f"tls-{mechanism.lower()}"
    config = sasl_ssl(tls_ferry, pki, mechanism, *ADMIN)
    create_topic(config, topic)
    round_trip(config, topic)


def test_a_wrong_password_over_sasl_ssl_is_refused(tls_ferry, pki):
    p = Producer({**sasl_ssl(tls_ferry, pki, "SCRAM-SHA-512", "admin", "wrong"), "message.timeout.ms": 3000})
    errors = []
    p.produce("anything", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    # The server kept serving: the right password still works.
    config = sasl_ssl(tls_ferry, pki, "SCRAM-SHA-512", *ADMIN)
    create_topic(config, "after-wrong")
    round_trip(config, "after-wrong", n=1)


def test_a_client_certificate_names_the_principal(tls_ferry, pki):
    """mTLS alone: User:alice from the certificate's CN, allowed only what alice's ACLs say."""
    admin = sasl_ssl(tls_ferry, pki, "SCRAM-SHA-512", *ADMIN)
    create_topic(admin, "mtls")
    mtls = {"bootstrap.servers": tls_ferry.kafka, "security.protocol": "SSL", "ssl.ca.location": pki["ca.pem"],
            "ssl.certificate.location": pki["client.pem"], "ssl.key.location": pki["client-key.pem"]}
    denied = []
    p = Producer({**mtls, "message.timeout.ms": 5000})
    p.produce("mtls", b"before", on_delivery=lambda err, msg: denied.append(err))
    p.flush(10)
    assert denied and denied[0] is not None and denied[0].code() == 29, denied  # TOPIC_AUTHORIZATION_FAILED
    a = AdminClient(admin)
    for fut in a.create_acls([
        AclBinding(ResourceType.TOPIC, "mtls", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.ALL, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.ALL, AclPermissionType.ALLOW),
    ]).values():
        fut.result(20)
    round_trip(mtls, "mtls")


def test_kcat_over_sasl_ssl_with_scram(tls_ferry, pki):
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is installed by scripts/test.sh"
    common = ["-b", tls_ferry.kafka, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-256",
              "-X", f"sasl.username={ADMIN[0]}", "-X", f"sasl.password={ADMIN[1]}", "-X", f"ssl.ca.location={pki['ca.pem']}"]
    create_topic(sasl_ssl(tls_ferry, pki, "SCRAM-SHA-256", *ADMIN), "kcat-tls")
    subprocess.run([kcat, *common, "-P", "-t", "kcat-tls", "-K:"], input="a:one\nb:two\n", text=True, check=True, timeout=30)
    out = subprocess.run([kcat, *common, "-C", "-t", "kcat-tls", "-e", "-f", "%k=%s\\n", "-o", "beginning"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert out.split() == ["a=one", "b=two"]
    wrong = [a if a != f"sasl.password={ADMIN[1]}" else "sasl.password=nope" for a in common]
    r = subprocess.run([kcat, *wrong, "-L", "-m", "5"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0


def test_https_with_basic_and_with_a_client_certificate(tls_ferry, pki):
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])
    url = tls_ferry.http.replace("http://", "https://") + "/v1/whoami"
    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"admin:admin-secret").decode()})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert json.load(r)["principal"] == "User:admin"
    ctx.load_cert_chain(pki["client.pem"], pki["client-key.pem"])
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert json.load(r)["principal"] == "User:alice"
    # Plain HTTP on the TLS port gets no answer, and the server goes on.
    with pytest.raises(Exception):
        urllib.request.urlopen(tls_ferry.http + "/healthz", timeout=5)
    with urllib.request.urlopen(tls_ferry.http.replace("http://", "https://") + "/healthz", context=ctx, timeout=10) as r:
        assert r.status == 200
