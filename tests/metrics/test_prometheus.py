"""`/metrics` scraped by a real Prometheus server (Debian's `prometheus`), queried with
PromQL after known traffic: a topic's records, a queue subscription's backlog and acks,
a Kafka consumer group's lag (committed by confluent-kafka), a push subscription
whose endpoint fails until its circuit breaker opens, and a Postgres source. `promtool check metrics` must find
nothing to say about the exposition."""

import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Consumer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# A PostgreSQL with logical replication (scripts/test.sh starts one): the test makes a
# Postgres source so that its metrics are scraped too.
POSTGRES = os.environ.get("FERRY_TEST_POSTGRES_URL")


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def exported_names(text):
    """Names a query may use: every family the exposition declares (`# TYPE`), with a
    histogram's `_bucket`, `_sum` and `_count` series."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_sum", "_count"))
    return names


def declared_families(text):
    return {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failing(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that is down: every request gets a 503."""

    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Failing.calls += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


class Prometheus:
    def __init__(self, target):
        self.dir = tempfile.mkdtemp(prefix="ferry-prom-")
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: ferry\n"
                f"    static_configs:\n      - targets: ['{target}']\n"
            )
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, promql):
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql):
        """The single value of a query, or None while it has no result."""
        try:
            result = self.query(promql)
        except OSError:
            return None
        if not result:
            return None
        assert len(result) == 1, f"{promql} gave {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql, expected, timeout=30):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            got = self.value(promql)
            if got == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{promql} is {got}, expected {expected}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def prometheus(ferry_push):
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.fail("prometheus and promtool are needed: apt-get install prometheus "
                    "(scripts/test.sh installs it)")
    target = ferry_push.http.removeprefix("http://")
    p = Prometheus(target)
    yield p
    p.stop()


def test_prometheus_scrapes_what_known_traffic_implies(ferry_push, prometheus):
    api = ferry_push.http
    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    try:
        if POSTGRES:
            subprocess.run(["psql", POSTGRES, "-q", "-c",
                            "CREATE TABLE IF NOT EXISTS metrics_probe (id int PRIMARY KEY)"],
                           check=True, timeout=30)
            call("POST", f"{api}/v1/sources", {"name": "metrics-src", "url": POSTGRES,
                                                "snapshot": "never",
                                                "tables": ["public.metrics_probe"]})
            # One change captured: every source metric has a value from then on.
            deadline = time.time() + 30
            while call("GET", f"{api}/v1/sources/metrics-src")["status"]["state"] != "streaming":
                assert time.time() < deadline, "the source did not start streaming"
                time.sleep(0.1)
            subprocess.run(["psql", POSTGRES, "-q", "-c",
                            "INSERT INTO metrics_probe VALUES (1)"], check=True, timeout=30)
            while call("GET", f"{api}/v1/sources/metrics-src")["status"]["records"] < 1:
                assert time.time() < deadline, "the source captured nothing"
                time.sleep(0.1)
        else:
            assert not os.environ.get("CI"), "FERRY_TEST_POSTGRES_URL is not set"
        call("POST", f"{api}/v1/topics", {"name": "orders", "partitions": 2})
        call("POST", f"{api}/v1/subscriptions",
             {"name": "billing", "topic": "orders", "start": "earliest"})
        call("POST", f"{api}/v1/subscriptions", {
            "name": "hooks", "topic": "orders", "start": "earliest",
            "push": {"url": f"http://127.0.0.1:{endpoint.server_port}/in",
                     "breaker": {"min_calls": 3, "failure_rate_percent": 50,
                                 "cooldown_ms": 600000}},
        })
        records = [{"key": f"k{i}", "value": {"n": i}} for i in range(10)]
        placed = call("POST", f"{api}/v1/topics/orders/records", {"records": records})
        per_partition = {0: 0, 1: 0}
        for o in placed["offsets"]:
            per_partition[o["partition"]] += 1

        # A queue subscription: 3 acked, 1 given back; 7 records not done.
        pulled = call("POST", f"{api}/v1/subscriptions/billing/pull", {"max_records": 4})
        leases = [r["lease_id"] for r in pulled["records"]]
        assert len(leases) == 4
        call("POST", f"{api}/v1/subscriptions/billing/ack", {"lease_ids": leases[:3]})
        call("POST", f"{api}/v1/subscriptions/billing/nack", {"lease_ids": leases[3:]})

        # A Kafka consumer group that committed 2 records of partition 0 and none of 1.
        consumer = Consumer({"bootstrap.servers": ferry_push.kafka, "group.id": "audit",
                             "enable.auto.commit": False})
        consumer.commit(offsets=[TopicPartition("orders", 0, 2),
                                 TopicPartition("orders", 1, 0)], asynchronous=False)
        # And asks for a topic that does not exist: Metadata answers code 3 for it.
        missing = consumer.list_topics("missing", timeout=10).topics["missing"]
        assert missing.error is not None and missing.error.code() == 3, missing.error
        consumer.close()
        lag = per_partition[0] - 2 + per_partition[1]

        # The endpoint fails until the breaker opens.
        deadline = time.time() + 20
        def breaker():
            status = call("GET", f"{api}/v1/subscriptions/hooks").get("push_status") or {}
            return status.get("breaker")

        while breaker() != "open":
            assert time.time() < deadline, "the breaker did not open"
            time.sleep(0.1)

        p = prometheus
        p.wait_for('up{job="ferry"}', 1.0)
        p.wait_for('sum(ferry_topic_records_in_total{topic="orders"})', 10.0)
        p.wait_for(f'ferry_topic_end_offset{{topic="orders",partition="0"}}',
                   float(per_partition[0]))
        p.wait_for('ferry_subscription_backlog{subscription="billing"}', 7.0)
        p.wait_for('ferry_subscription_acked_total{subscription="billing"}', 3.0)
        p.wait_for('ferry_subscription_nacked_total{subscription="billing"}', 1.0)
        p.wait_for('ferry_subscription_delivered_total{subscription="billing"}', 4.0)
        p.wait_for('sum(ferry_group_lag{group="audit"})', float(lag))
        p.wait_for('ferry_group_lag{group="audit",topic="orders",partition="0"}',
                   float(per_partition[0] - 2))
        p.wait_for('ferry_push_breaker_state{subscription="hooks",state="open"}', 1.0)
        p.wait_for('ferry_push_breaker_transitions_total{subscription="hooks",to="open"}', 1.0)
        p.wait_for('sum(ferry_push_attempts_total{subscription="hooks",status_class="2xx"}) or vector(0)', 0.0)
        failed = p.value('sum(ferry_push_attempts_total{subscription="hooks",outcome="retry",status_class="5xx"})')
        assert failed is not None and failed >= 3 and failed <= Failing.calls, (failed, Failing.calls)
        count = p.value('sum(ferry_push_attempt_duration_seconds_count{subscription="hooks"})')
        assert count == failed, (count, failed)
        # Requests are labelled by route, never by the names in their paths.
        assert p.value('sum(ferry_http_request_duration_seconds_count{route="/v1/subscriptions/{name}/ack",status_class="2xx"})') == 1.0
        assert p.query('ferry_http_request_duration_seconds_count{route=~".*billing.*"}') == []
        assert p.value('sum(ferry_kafka_request_duration_seconds_count{api="OffsetCommit"})') >= 1.0
        assert p.value('sum(ferry_kafka_request_errors_total{api="Metadata",code="3"})') >= 1.0
        assert p.value('ferry_log_records_per_sync_sum') >= 10.0
        assert p.value('process_resident_memory_bytes') > 1_000_000
        if POSTGRES:
            p.wait_for('ferry_source_streaming{source="metrics-src"}', 1.0)
            p.wait_for('ferry_source_records_total{source="metrics-src"}', 1.0)
            p.wait_for('ferry_source_slot_wal_warning{source="metrics-src"}', 0.0)

        # The exposition passes promtool's checks, in both formats Ferry serves.
        for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
            req = urllib.request.Request(f"{api}/metrics", headers={"accept": accept})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                kind = r.headers["content-type"]
            assert kind.startswith("application/openmetrics-text" if "openmetrics" in accept
                                   else "text/plain; version=0.0.4"), kind
            if "openmetrics" in accept:
                assert body.rstrip().endswith(b"# EOF")
                continue
            check = subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                                   capture_output=True, timeout=30)
            assert check.returncode == 0 and not check.stdout and not check.stderr, check
            text = body.decode()

        # Every metric exported here is listed in docs/operations.md.
        docs = (ROOT / "docs/operations.md").read_text()
        undocumented = sorted(f for f in declared_families(text) if f"`{f}`" not in docs)
        assert not undocumented, f"not in docs/operations.md: {undocumented}"

        # Every query of the Grafana dashboard runs and names only exported metrics.
        dashboard = json.loads((ROOT / "docs/grafana/ferry-dashboard.json").read_text())
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
        assert len(exprs) >= 20
        names = exported_names(text)
        for expr in exprs:
            used = set(re.findall(r"\b(?:ferry|process)_[a-z0-9_]+", expr))
            if not POSTGRES and any(u.startswith("ferry_source_") for u in used):
                continue
            assert used, expr
            assert used <= names, f"{expr} names {sorted(used - names)}, not exported"
            p.query(expr)
    finally:
        endpoint.shutdown()
        if POSTGRES:
            # Drops the source's slot and publication.
            call("DELETE", f"{api}/v1/sources/metrics-src")
            subprocess.run(["psql", POSTGRES, "-q", "-c", "DROP TABLE metrics_probe"],
                           check=True, timeout=30)


def test_topic_detail_folds_partitions_into_topics(tmp_path):
    from conftest import Ferry
    f = Ferry(str(tmp_path), extra=["--metrics-detail", "topic"]).start()
    try:
        call("POST", f"{f.http}/v1/topics", {"name": "wide", "partitions": 4})
        call("POST", f"{f.http}/v1/topics/wide/records",
             {"records": [{"key": f"k{i}", "value": i} for i in range(8)]})
        with urllib.request.urlopen(f"{f.http}/metrics", timeout=10) as r:
            body = r.read().decode()
        lines = [l for l in body.splitlines() if l.startswith("ferry_topic_records_in_total")]
        assert lines == ['ferry_topic_records_in_total{topic="wide"} 8'], lines
        assert 'partition="' not in body
    finally:
        f.stop()
