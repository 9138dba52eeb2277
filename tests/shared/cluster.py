"""Shared mode's real components for its tests: a PostgreSQL (FERRY_TEST_POSTGRES_URL, started by
scripts/test.sh) with a fresh database per test, and a real S3-compatible server
(s3s-fs, installed by scripts/test.sh) per test on a free port over a temporary
folder. Without them the tests are skipped, except under CI, where they fail."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/conftest.py
from conftest import Ferry  # noqa: E402

BUCKET = "ferry-test"
ACCESS_KEY, SECRET_KEY = "ferry", "ferry-secret"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _missing(what):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: scripts/test.sh provides it")
    pytest.skip(f"{what} is missing")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """s3s-fs on a free port; stop() and start() keep its folder (an outage)."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.proc = None
        os.makedirs(os.path.join(root, BUCKET), exist_ok=True)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["s3s-fs", "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, self.root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert time.time() < deadline, "s3s-fs did not start"
                time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def objects(self):
        out = []
        for d, _, files in os.walk(os.path.join(self.root, BUCKET)):
            out += [os.path.join(d, f) for f in files if f.endswith(".batches")]
        return out


def psql(url, sql):
    u = urllib.parse.urlparse(url)
    env = dict(os.environ, PGPASSWORD=urllib.parse.unquote(u.password or ""))
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.hostname, "-p", str(u.port or 5432),
         "-U", urllib.parse.unquote(u.username or "postgres"), u.path.lstrip("/") or "postgres",
         "-c", sql],
        check=True, env=env, stdout=subprocess.DEVNULL)


def psql_value(url, sql):
    """The single value a query answers, as text."""
    u = urllib.parse.urlparse(url)
    env = dict(os.environ, PGPASSWORD=urllib.parse.unquote(u.password or ""))
    out = subprocess.run(
        ["psql", "-qtA", "-v", "ON_ERROR_STOP=1", "-h", u.hostname, "-p", str(u.port or 5432),
         "-U", urllib.parse.unquote(u.username or "postgres"), u.path.lstrip("/") or "postgres",
         "-c", sql],
        check=True, env=env, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def s3():
    if shutil.which("s3s-fs") is None:
        _missing("s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked)")
    with tempfile.TemporaryDirectory() as root:
        server = S3(root).start()
        yield server
        server.stop()


@pytest.fixture
def metadata_url():
    base = os.environ.get("FERRY_TEST_POSTGRES_URL")
    if not base:
        _missing("FERRY_TEST_POSTGRES_URL (scripts/postgres.sh)")
    name = "ferry_shared_" + uuid.uuid4().hex[:12]
    psql(base, f"CREATE DATABASE {name}")
    u = urllib.parse.urlparse(base)
    yield urllib.parse.urlunparse(u._replace(path="/" + name))
    psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Cluster:
    """Nodes of shared mode over one database and one bucket; each node has its own
    data folder, which may be deleted while it is down."""

    def __init__(self, metadata_url, s3):
        self.metadata_url = metadata_url
        self.s3 = s3
        self.dirs = []
        self.nodes = []
        os.environ.update({
            "AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
        })

    def add(self, *extra, setup=None):
        """Starts a node; `setup(data_dir)` runs on its data folder first."""
        d = tempfile.mkdtemp(prefix="ferry-node-")
        self.dirs.append(d)
        if setup is not None:
            setup(d)
        node = Ferry(d, extra=["--metadata-url", self.metadata_url,
                               "--object-store-url", f"s3://{BUCKET}/cluster", *extra]).start()
        self.nodes.append(node)
        return node

    def kill9(self, i):
        node = self.nodes[i]
        node.proc.kill()
        node.proc.wait(10)

    def restart_fresh(self, i):
        """Starts node i again after deleting its data folder (its disk is lost)."""
        node = self.nodes[i]
        shutil.rmtree(node.data_dir)
        os.makedirs(node.data_dir)
        return node.start(kafka_addr=node.kafka)

    def stop(self):
        for n in self.nodes:
            n.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            os.environ.pop(k, None)


@pytest.fixture
def cluster(metadata_url, s3):
    c = Cluster(metadata_url, s3)
    yield c
    c.stop()
