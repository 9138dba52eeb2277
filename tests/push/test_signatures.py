"""Webhook signatures from the real binary, verified by the `standardwebhooks` package
(an implementation Ferry did not write), including a rotation with two secrets."""

import http.server
import json
import threading
import time
import urllib.request

from standardwebhooks.webhooks import Webhook


class Capture(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Capture.got.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait_for(n, timeout=15):
    deadline = time.time() + timeout
    while len(Capture.got) < n:
        assert time.time() < deadline, f"only {len(Capture.got)} of {n} requests arrived"
        time.sleep(0.05)


def test_signatures_verify_with_standardwebhooks(ferry_push):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Capture.got = []
    try:
        api = ferry_push.http
        call("POST", f"{api}/v1/topics", {"name": "signed", "partitions": 1})
        created = call("POST", f"{api}/v1/subscriptions", {
            "name": "hook", "topic": "signed",
            "push": {"url": f"http://127.0.0.1:{server.server_port}/in"},
        })
        secret = created["push"]["secret"]
        call("POST", f"{api}/v1/topics/signed/records", {"records": [{"key": "a", "value": {"n": 1}}]})
        wait_for(1)
        headers, body = Capture.got[0]
        assert Webhook(secret).verify(body, headers) == {"n": 1}
        # A tampered body does not verify.
        try:
            Webhook(secret).verify(body + b" ", headers)
            raise AssertionError("a changed body verified")
        except Exception as e:  # the package raises its own verification error
            assert "verif" in type(e).__name__.lower() or "signature" in str(e).lower()

        # After a rotation both the new and the old secret verify the same request.
        rotated = call("POST", f"{api}/v1/subscriptions/hook/rotate-secret", {})
        new_secret = rotated["push"]["secret"]
        assert new_secret != secret
        call("POST", f"{api}/v1/topics/signed/records", {"records": [{"value": {"n": 2}}]})
        wait_for(2)
        headers, body = Capture.got[1]
        assert Webhook(new_secret).verify(body, headers) == {"n": 2}
        assert Webhook(secret).verify(body, headers) == {"n": 2}
    finally:
        server.shutdown()
