"""A small fault proxy for the fault-injection suite: TCP on 127.0.0.1 between the daemon and one dependency.

The test points the daemon at `proxy.url` instead of the dependency and switches the proxy's behaviour at run
time with `proxy.set(Fault.X, ...)` (a fault may be limited to a `method` and a `path` regex):

- `PASS`: bytes are piped both ways untouched (keep-alive, streaming watches, everything);
- `DROP`: the connection is accepted and closed at once, before any answer (the client sees a reset/EOF);
- `DELAY`: nothing is answered for `seconds`, then the request is piped on (past the client's timeout, the
  client gives up first);
- `RESET`: the request is forwarded, the first bytes of the answer are relayed, then the connection is reset
  (RST) mid-response;
- `STATUS`: an HTTP answer of the proxy's own: `status` with `headers` and `body` (5xx, 429 with Retry-After);
- `GARBAGE`: HTTP 200 with a JSON content type and a body that is not JSON;
- `TRUNCATE`: the upstream's answer with its Content-Length kept and its body cut in half, then closed;
- `PARTIAL`: the upstream's Prometheus answer with only the first of the series in `data.result`.

While any fault is set, every connection carries one request (`Connection: close`), including those a
`method` or `path` filter spares. Switching the mode closes (FIN) the
connections that are open, so that keep-alive connections cannot outlive it. A
mode may be limited to requests whose path matches `path` (a regex); others pass. `proxy.requests` counts the
requests that met each mode.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_HEAD_LIMIT = 1 << 16
_IO_TIMEOUT_SECONDS = 30.0


class Fault(enum.StrEnum):
    PASS = "pass"
    DROP = "drop"
    DELAY = "delay"
    RESET = "reset"
    STATUS = "status"
    GARBAGE = "garbage"
    TRUNCATE = "truncate"
    PARTIAL = "partial"


@dataclass(frozen=True)
class Behaviour:
    fault: Fault = Fault.PASS
    seconds: float = 0.0
    status: int = 503
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    path: str | None = None
    """Only requests whose path matches this regex (re.search) get the fault; the others pass."""
    method: str | None = None
    """Only requests with this method (e.g. PATCH) get the fault; the others pass."""

    def applies_to(self, method: str, path: str) -> bool:
        return (self.path is None or re.search(self.path, path) is not None) and (
            self.method is None or self.method.upper() == method.upper())


@dataclass
class _Request:
    head: bytes
    body: bytes
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """Listens on 127.0.0.1:<free port> and forwards to `upstream_port` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._behaviour = Behaviour()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.requests: Counter[str] = Counter()
        """Requests (connections, in PASS mode) that met each fault, by Fault value."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def behaviour(self) -> Behaviour:
        with self._lock:
            return self._behaviour

    def set(self, fault: Fault, **options: Any) -> None:
        """Switch to `fault` (options: seconds, status, headers, body, path, method); open connections are
        closed."""
        headers = options.pop("headers", {})
        if isinstance(headers, dict):
            headers = tuple(headers.items())
        behaviour = Behaviour(fault, headers=headers, **options)
        with self._lock:
            self._behaviour = behaviour
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _hang_up(sock)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _abort(sock)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- serving

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.update(sockets)

    def _untrack(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(sockets)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_IO_TIMEOUT_SECONDS)
        self._track(client)
        upstream: socket.socket | None = None
        try:
            behaviour = self.behaviour
            if behaviour.fault is Fault.DROP:
                self.requests[Fault.DROP.value] += 1
                return
            request = _read_request(client)
            if request is None:
                return
            fault = behaviour.fault if behaviour.applies_to(request.method, request.path) else Fault.PASS
            self.requests[fault.value] += 1
            if fault is Fault.DELAY:
                if self._stopping.wait(behaviour.seconds):
                    return
                fault = Fault.PASS
            if fault is Fault.STATUS:
                _respond(client, behaviour.status, behaviour.headers, behaviour.body)
                return
            if fault is Fault.GARBAGE:
                _respond(client, 200, (("Content-Type", "application/json"),), b"{\"status\": \"success\", \"da")
                return
            upstream = socket.create_connection(self.upstream, timeout=_IO_TIMEOUT_SECONDS)
            self._track(upstream)
            if fault is Fault.PASS:
                # While a fault is set, even a request it spares is the connection's only one, so that the next
                # request meets the fault too; streamed answers (watches) still flow as they come.
                spared = behaviour.fault is not Fault.PASS
                upstream.sendall(_closing_request(request) if spared else request.head + request.body)
                _pipe(client, upstream)
                return
            upstream.sendall(_closing_request(request))
            raw = _read_all(upstream)
            if fault is Fault.RESET:
                client.sendall(raw[: max(1, min(len(raw) // 2, 64))])
                _abort(client)
                return
            status, headers, body = _parse_response(raw)
            if fault is Fault.TRUNCATE:
                kept = [(k, v) for k, v in headers if k.lower() not in {"content-length", "transfer-encoding"}]
                kept.append(("Content-Length", str(len(body))))
                client.sendall(_head(status, kept) + body[: len(body) // 2])
                return
            if fault is Fault.PARTIAL:
                body = _first_series_only(body)
            _respond(client, status, tuple(headers), body)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)
                    with contextlib.suppress(OSError):
                        sock.close()


# --- HTTP helpers


def _hang_up(sock: socket.socket) -> None:
    """Close cleanly (FIN): an idle kept-alive connection is then seen as closed and the client reconnects."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _read_request(client: socket.socket) -> _Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > _HEAD_LIMIT:
            return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path = [*lines[0].split(" "), "", ""][:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        body += chunk
    return _Request(head + b"\r\n\r\n", body, method, path, headers)


def _closing_request(request: _Request) -> bytes:
    """The request with `Connection: close` and no compression, so the whole answer can be read and changed."""
    lines = request.head.decode("latin-1").split("\r\n")[:-2]
    kept = [lines[0]] + [
        line for line in lines[1:] if line.split(":", 1)[0].strip().lower() not in {"connection", "accept-encoding"}
    ]
    kept.append("Connection: close")
    return ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + request.body


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _parse_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers):
        body = _dechunk(body)
    headers = [(k, v) for k, v in headers if k.lower() not in {"transfer-encoding", "content-length", "connection"}]
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def _head(status: int, headers: Any) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _respond(client: socket.socket, status: int, headers: Any, body: bytes) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
    client.sendall(_head(status, headers) + body)


def _first_series_only(body: bytes) -> bytes:
    try:
        document = json.loads(body)
        document["data"]["result"] = document["data"]["result"][:1]
    except (ValueError, KeyError, TypeError):
        return body
    return json.dumps(document).encode()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    a.settimeout(None)
    b.settimeout(None)
    sockets = [a, b]
    while True:
        try:
            readable, _, _ = select.select(sockets, [], [], 1.0)
        except (OSError, ValueError):
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            (b if sock is a else a).sendall(data)


_REASONS = {200: "OK", 404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass (never a fixed sleep that hopes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
