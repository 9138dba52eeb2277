"""Starts the real `ferry serve` for the Python tests (binary from FERRY_BIN)."""

import collections
import json
import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

BIN = os.environ.get("FERRY_BIN", str(pathlib.Path(__file__).resolve().parents[1] / "target/debug/ferry"))


class Ferry:
    def __init__(self, data_dir, extra=()):
        self.data_dir = data_dir
        self.extra = list(extra)
        self.proc = None
        self.kafka = None
        self.http = None

    def start(self, kafka_addr="127.0.0.1:0"):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.data_dir, "--http-addr", "127.0.0.1:0",
             "--kafka-addr", kafka_addr, "--log-format", "json", *self.extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        ready = threading.Event()
        self.log = collections.deque(maxlen=200)

        def read():
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                try:
                    fields = json.loads(line).get("fields", {})
                except ValueError:
                    continue
                if fields.get("message") == "Ferry is ready.":
                    self.kafka, self.http = fields["kafka_addr"], "http://" + fields["http_addr"]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(20), "ferry did not start"
        return self

    def restart(self):
        """Stops with SIGTERM and starts again on the same data and Kafka port."""
        self.stop()
        return self.start(kafka_addr=self.kafka)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                # What it was doing when it did not stop, for the test's report.
                print("\n".join(list(self.log)[-60:]))
                self.proc.kill()
                raise


@pytest.fixture
def ferry():
    with tempfile.TemporaryDirectory() as d:
        f = Ferry(d).start()
        yield f
        f.stop()


@pytest.fixture
def ferry_push():
    """Ferry allowed to call endpoints on this machine."""
    with tempfile.TemporaryDirectory() as d:
        f = Ferry(d, extra=["--push-allow-private"]).start()
        yield f
        f.stop()
