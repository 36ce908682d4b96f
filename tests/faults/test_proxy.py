"""The fault proxy itself, against a tiny upstream HTTP server: each mode does what it says."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.faults.proxy import Fault, FaultProxy

ANSWER = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"pod": f"p{i}"}, "value": [1, str(i)]} for i in range(3)]}}


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FaultProxy(int(server.server_address[1])) as fault_proxy:
        yield fault_proxy
    server.shutdown()
    server.server_close()


def test_pass_relays_the_answer_on_a_kept_alive_connection(proxy: FaultProxy) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(proxy.url + "/api", timeout=5).json() == ANSWER
    assert proxy.requests["pass"] == 1, "one connection, kept alive"


def test_each_fault_breaks_the_answer_as_named(proxy: FaultProxy) -> None:
    proxy.set(Fault.DROP)
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url, timeout=5)
    proxy.set(Fault.STATUS, status=429, headers={"Retry-After": "7"}, body=b"slow down")
    answer = requests.get(proxy.url, timeout=5)
    assert (answer.status_code, answer.headers["Retry-After"], answer.text) == (429, "7", "slow down")
    proxy.set(Fault.GARBAGE)
    with pytest.raises(ValueError):
        requests.get(proxy.url, timeout=5).json()
    proxy.set(Fault.TRUNCATE)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(proxy.url, timeout=5)
    proxy.set(Fault.RESET)
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url, timeout=5)
    proxy.set(Fault.PARTIAL)
    assert [s["metric"]["pod"] for s in requests.get(proxy.url, timeout=5).json()["data"]["result"]] == ["p0"]
    proxy.set(Fault.DELAY, seconds=2.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(proxy.url, timeout=0.5)
    assert time.monotonic() - started < 2.0
    proxy.set(Fault.STATUS, status=500, path="^/api/v1/query")
    assert requests.get(proxy.url + "/api/v1/query", timeout=5).status_code == 500
    assert requests.get(proxy.url + "/-/ready", timeout=5).json() == ANSWER, "other paths pass"
    proxy.set(Fault.PASS)
    assert requests.get(proxy.url, timeout=5).json() == ANSWER


def test_switching_the_fault_cuts_open_connections(proxy: FaultProxy) -> None:
    with requests.Session() as session:
        assert session.get(proxy.url, timeout=5).ok
        proxy.set(Fault.STATUS, status=503)
        assert session.get(proxy.url, timeout=5).status_code == 503, "the kept-alive connection did not outlive it"
