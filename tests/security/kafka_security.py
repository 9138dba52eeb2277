"""Fixtures and helpers for the Kafka security tests: a Ferry that requires
authentication, and Kafka client settings for its users.

Every client config comes from `kafka_config` (and kcat's from `kcat_args`), so the same
tests run over TLS: FERRY_KAFKA_SECURITY=SASL_SSL starts the server with certificates
made by trustme and points every client at their CA.
"""

import importlib.util
import os
import pathlib
import subprocess
import tempfile

import pytest

from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialUpsertion)

_spec = importlib.util.spec_from_file_location(
    "ferry_tests_conftest", pathlib.Path(__file__).resolve().parents[1] / "conftest.py")
_top = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_top)
BIN, Ferry = _top.BIN, _top.Ferry

SECURITY_PROTOCOL = os.environ.get("FERRY_KAFKA_SECURITY", "SASL_PLAINTEXT")

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret"
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
SERVER_FLAGS = ["--auth", "--super-users", f"User:{ADMIN}", "--acl-default", "deny"]


def kafka_config(ferry, user, password, mechanism="SCRAM-SHA-512", **extra):
    """Settings for a confluent-kafka client authenticating as `user`."""
    config = {
        "bootstrap.servers": ferry.kafka,
        "security.protocol": SECURITY_PROTOCOL,
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if getattr(ferry, "ca_file", None):
        config["ssl.ca.location"] = ferry.ca_file
    config.update(extra)
    return config


def kcat_args(ferry, user, password, mechanism="SCRAM-SHA-256"):
    """kcat's options for the same settings."""
    args = ["-b", ferry.kafka, "-X", f"security.protocol={SECURITY_PROTOCOL}",
            "-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={user}",
            "-X", f"sasl.password={password}"]
    if getattr(ferry, "ca_file", None):
        args += ["-X", f"ssl.ca.location={ferry.ca_file}"]
    return args


def upsertions(users):
    return [UserScramCredentialUpsertion(name, ScramCredentialInfo(m, 8192), pw.encode())
            for name, pw in users.items()
            for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]


def create_admin(data_dir):
    """Creates the super user in a data folder no server uses (`ferry user create`)."""
    subprocess.run([BIN, "user", "create", ADMIN, "--password", ADMIN_PASSWORD,
                    "--data-dir", data_dir], check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_files():
    """With SASL_SSL: a CA and the server's certificate for 127.0.0.1 (else `None`)."""
    if SECURITY_PROTOCOL != "SASL_SSL":
        yield None
        return
    import trustme
    with tempfile.TemporaryDirectory() as d:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        paths = {n: os.path.join(d, n) for n in ("ca.pem", "server.pem", "server-key.pem")}
        ca.cert_pem.write_to_path(paths["ca.pem"])
        for blob in server.cert_chain_pems:
            blob.write_to_path(paths["server.pem"], append=True)
        server.private_key_pem.write_to_path(paths["server-key.pem"])
        yield paths


@pytest.fixture
def secure(tls_files):
    """Ferry with --auth, super user `admin`, deny by default, and users alice and bob
    (made by the admin over Kafka's AlterUserScramCredentials); over TLS with SASL_SSL."""
    with tempfile.TemporaryDirectory() as d:
        create_admin(d)
        flags = list(SERVER_FLAGS)
        if tls_files:
            flags += ["--tls-cert", tls_files["server.pem"], "--tls-key", tls_files["server-key.pem"],
                      "--tls-listeners", "kafka"]
        f = Ferry(d, extra=flags).start()
        f.ca_file = tls_files and tls_files["ca.pem"]
        try:
            admin = AdminClient(kafka_config(f, ADMIN, ADMIN_PASSWORD))
            for fut in admin.alter_user_scram_credentials(upsertions(USERS)).values():
                fut.result(10)
            yield f
        finally:
            f.stop()


@pytest.fixture
def admin(secure):
    """An AdminClient of the super user."""
    return AdminClient(kafka_config(secure, ADMIN, ADMIN_PASSWORD))


def grant(admin, user, resource_type, name, operation, pattern=ResourcePatternType.LITERAL,
          permission=AclPermissionType.ALLOW):
    binding = AclBinding(resource_type, name, pattern, f"User:{user}", "*", operation, permission)
    for f in admin.create_acls([binding]).values():
        f.result(10)
    return binding


TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
Op = AclOperation
