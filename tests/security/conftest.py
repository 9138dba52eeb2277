"""Fixtures for the security tests (helpers in kafka_security.py)."""

import tempfile

import pytest
from confluent_kafka.admin import AdminClient

from kafka_security import (ADMIN, ADMIN_PASSWORD, SERVER_FLAGS, USERS, Ferry, create_admin,
                            kafka_config, upsertions)


@pytest.fixture
def secure():
    """Ferry with --auth, super user `admin`, deny by default, and users alice and bob
    (made by the admin over Kafka)."""
    with tempfile.TemporaryDirectory() as d:
        create_admin(d)
        f = Ferry(d, extra=SERVER_FLAGS).start()
        try:
            admin = AdminClient(kafka_config(f, ADMIN, ADMIN_PASSWORD))
            for fut in admin.alter_user_scram_credentials(upsertions(USERS)).values():
                fut.result(10)
            yield f
        finally:
            f.stop()


@pytest.fixture
def admin(secure):
    return AdminClient(kafka_config(secure, ADMIN, ADMIN_PASSWORD))
