"""OpenTelemetry traces from the real binary, received by an OTLP/HTTP receiver in this
test (decoded with the `opentelemetry-proto` package): the chain from an HTTP produce
carrying a traceparent to the webhook call it caused, Kafka produce, pull and ack, no
export when tracing is off, and a collector that never answers not holding up produce."""

import gzip
import http.server
import json
import os
import socket
import tempfile
import threading
import time
import urllib.request

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import Ferry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Otlp(http.server.BaseHTTPRequestHandler):
    """Accepts POST /v1/traces (protobuf or JSON, gzip or not) and keeps the spans."""

    spans = []
    resources = []
    posts = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        req = trace_service_pb2.ExportTraceServiceRequest()
        if "json" in self.headers.get("content-type", ""):
            json_format.Parse(body, req)
        else:
            req.ParseFromString(body)
        type(self).posts += 1
        assert self.path == "/v1/traces", self.path
        for rs in req.resource_spans:
            type(self).resources.append({a.key: value(a.value) for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                type(self).spans.extend(ss.spans)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class Hook(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.got.append((dict((k.lower(), v) for k, v in self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span):
    return {a.key: value(a.value) for a in span.attributes}


def serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def call(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait_until(what, check, timeout=15):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def hexid(b):
    return b.hex()


def spans_named(name, trace=None):
    return [s for s in list(Otlp.spans) if s.name == name and (trace is None or hexid(s.trace_id) == trace)]


def start_ferry(data_dir, extra, monkeypatch):
    # Export every 100 ms instead of the SDK's 5 s, so the test does not wait.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    return Ferry(data_dir, extra=["--push-allow-private", *extra]).start()


def test_a_producers_trace_reaches_the_webhook_call_it_caused(monkeypatch):
    otlp, hook = serve(Otlp), serve(Hook)
    Otlp.spans, Otlp.resources, Hook.got = [], [], []
    with tempfile.TemporaryDirectory() as d:
        ferry = start_ferry(d, ["--otlp-endpoint", f"http://127.0.0.1:{otlp.server_port}"], monkeypatch)
        try:
            api = ferry.http
            call("POST", f"{api}/v1/topics", {"name": "orders", "partitions": 1})
            call("POST", f"{api}/v1/subscriptions", {
                "name": "hook", "topic": "orders",
                "push": {"url": f"http://127.0.0.1:{hook.server_port}/in"},
            })
            call("POST", f"{api}/v1/subscriptions", {"name": "work", "topic": "orders"})
            call("POST", f"{api}/v1/topics/orders/records", {"records": [{"key": "a", "value": {"n": 1}}]},
                 headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})

            # The produce span: the caller's child, in the caller's trace.
            produce = wait_until("the produce span", lambda: spans_named("produce", TRACE))[0]
            assert hexid(produce.parent_span_id) == CALLER_SPAN
            a = attrs(produce)
            assert a["messaging.destination.name"] == "orders"
            assert a["messaging.batch.message_count"] == 1
            assert a["ferry.partitions"] == [0]
            assert a["ferry.protocol"] == "http"
            own = f"00-{TRACE}-{hexid(produce.span_id)}-01"

            # The stored record names the produce span.
            read = call("GET", f"{api}/v1/topics/orders/partitions/0/records?offset=0")
            assert read["records"][0]["headers"]["traceparent"] == own

            # Append and fsync in the partition writer: children of the produce span.
            for name in ("append", "fsync"):
                step = wait_until(name, lambda n=name: spans_named(n, TRACE))[0]
                assert hexid(step.parent_span_id) == hexid(produce.span_id), name
                assert attrs(step)["messaging.destination.partition.id"] == "0"

            # The push attempt: the record's child; the webhook call names the attempt.
            push = wait_until("the push span", lambda: spans_named("push", TRACE))[0]
            assert hexid(push.parent_span_id) == hexid(produce.span_id)
            p = attrs(push)
            assert p["messaging.consumer.group.name"] == "hook"
            assert p["server.address"] == "127.0.0.1"
            assert p["http.response.status_code"] == 204
            assert p["ferry.push.outcome"] == "delivered"
            assert p["ferry.push.attempt"] == 1
            wait_until("the webhook call", lambda: Hook.got)
            assert Hook.got[0][0]["traceparent"] == f"00-{TRACE}-{hexid(push.span_id)}-01"

            # Lease and ack: a span per request; the lease links to the record's context.
            pulled = call("POST", f"{api}/v1/subscriptions/work/pull", {"max_records": 10})
            call("POST", f"{api}/v1/subscriptions/work/ack", {"lease_ids": [pulled["records"][0]["lease_id"]]})
            lease = wait_until("the lease span", lambda: spans_named("lease"))[0]
            assert attrs(lease)["messaging.batch.message_count"] == 1
            assert [(hexid(link.trace_id), hexid(link.span_id)) for link in lease.links] == \
                [(TRACE, hexid(produce.span_id))]
            ack = wait_until("the ack span", lambda: spans_named("ack"))[0]
            assert attrs(ack)["messaging.consumer.group.name"] == "work"
            assert attrs(ack)["messaging.batch.message_count"] == 1

            assert Otlp.resources[0]["service.name"] == "ferry"
            assert "service.version" in Otlp.resources[0]
        finally:
            ferry.stop()
            otlp.shutdown()
            hook.shutdown()


def test_a_kafka_records_traceparent_is_the_parent_of_its_push_attempt(monkeypatch):
    from confluent_kafka import Producer

    otlp, hook = serve(Otlp), serve(Hook)
    Otlp.spans, Otlp.resources, Hook.got = [], [], []
    with tempfile.TemporaryDirectory() as d:
        ferry = start_ferry(d, ["--otlp-endpoint", f"http://127.0.0.1:{otlp.server_port}"], monkeypatch)
        try:
            api = ferry.http
            call("POST", f"{api}/v1/topics", {"name": "k", "partitions": 1})
            call("POST", f"{api}/v1/subscriptions", {
                "name": "khook", "topic": "k",
                "push": {"url": f"http://127.0.0.1:{hook.server_port}/in"},
            })
            producer = Producer({"bootstrap.servers": ferry.kafka, "acks": "all"})
            producer.produce("k", value=b"v", key=b"k",
                             headers=[("traceparent", f"00-{TRACE}-{CALLER_SPAN}-01")])
            assert producer.flush(10) == 0

            produce = wait_until("the Kafka produce span",
                                 lambda: [s for s in spans_named("produce")
                                          if attrs(s).get("ferry.protocol") == "kafka"])[0]
            assert attrs(produce)["messaging.destination.name"] == "k"
            assert attrs(produce)["messaging.batch.message_count"] == 1
            kafka_trace = hexid(produce.trace_id)
            append = wait_until("its append span", lambda: spans_named("append", kafka_trace))[0]
            assert append.parent_span_id == produce.span_id

            push = wait_until("the push span", lambda: spans_named("push", TRACE))[0]
            assert hexid(push.parent_span_id) == CALLER_SPAN
            wait_until("the webhook call", lambda: Hook.got)
            assert Hook.got[0][0]["traceparent"] == f"00-{TRACE}-{hexid(push.span_id)}-01"
        finally:
            ferry.stop()
            otlp.shutdown()
            hook.shutdown()


def test_without_an_endpoint_nothing_is_exported_and_records_are_unchanged(monkeypatch):
    otlp, hook = serve(Otlp), serve(Hook)
    Otlp.spans, Otlp.posts, Hook.got = [], 0, []
    # The SDK's own variable does not turn tracing on: only --otlp-endpoint does.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp.server_port}")
    with tempfile.TemporaryDirectory() as d:
        ferry = start_ferry(d, [], monkeypatch)
        try:
            api = ferry.http
            call("POST", f"{api}/v1/topics", {"name": "plain", "partitions": 1})
            call("POST", f"{api}/v1/subscriptions", {
                "name": "hook", "topic": "plain",
                "push": {"url": f"http://127.0.0.1:{hook.server_port}/in"},
            })
            call("POST", f"{api}/v1/topics/plain/records", {"records": [{"value": "x"}]},
                 headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
            call("POST", f"{api}/v1/topics/plain/records", {"records": [{
                "value": "y", "headers": {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"}}]})
            wait_until("both webhook calls", lambda: len(Hook.got) >= 2)
            read = call("GET", f"{api}/v1/topics/plain/partitions/0/records?offset=0")
            assert "traceparent" not in (read["records"][0].get("headers") or {})
            by_value = {json.loads(body): h["traceparent"] for h, body in Hook.got}
            # As before tracing existed: a record without a traceparent gets a trace of
            # its own; a record's own traceparent is sent on as it is.
            plain = by_value["x"].split("-")
            assert len(plain) == 4 and plain[1] != TRACE and plain[1] != "0" * 32
            assert by_value["y"] == f"00-{TRACE}-{CALLER_SPAN}-01"
            time.sleep(0.5)
            assert Otlp.posts == 0 and Otlp.spans == []
        finally:
            ferry.stop()
            otlp.shutdown()
            hook.shutdown()


def test_a_collector_that_never_answers_does_not_hold_up_produce(monkeypatch):
    # A listening socket that never accepts: connections open, requests never answer.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        ferry = start_ferry(d, ["--otlp-endpoint", f"http://127.0.0.1:{port}",
                                "--otlp-max-queue-spans", "16", "--durability", "never"], monkeypatch)
        try:
            api = ferry.http
            call("POST", f"{api}/v1/topics", {"name": "fast", "partitions": 1})
            slowest = 0.0
            started = time.time()
            for i in range(300):
                t = time.time()
                out = call("POST", f"{api}/v1/topics/fast/records", {"records": [{"value": str(i)}]},
                           headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
                slowest = max(slowest, time.time() - t)
                assert out["offsets"][0]["offset"] == i
            # An export waits up to 10 s for its answer; produce never waits for one.
            assert slowest < 2.0, f"a produce took {slowest:.2f} s"
            assert time.time() - started < 15
            assert ferry.proc.poll() is None
        finally:
            t = time.time()
            ferry.stop()
            silent.close()
        # Shutdown gives the export a bounded time, then stops.
        assert time.time() - t < 15
        assert ferry.proc.returncode == 0
