"""A fault-injecting HTTP/1.1 reverse proxy for the storage emulators.

Commits must survive requests that fail *after* the store applied them: an S3
500 after the PUT landed, a connection dropped before the answer, a read
timeout.  The client library then retries and gets 412/409 for its own write.
Mocks cannot show what botocore, azure-core or gcsfs really do then, so this
proxy sits between the real clients and the real emulators and breaks chosen
requests in chosen ways::

    with FaultProxy("http://127.0.0.1:5555") as proxy:
        proxy.add_fault("PUT", r"/ktk-test/t-abc/_log/", "error_after")
        ...  # point the client at proxy.url

Actions (``add_fault(..., action)``):

- ``error_after``: forward, read upstream's whole answer (the store APPLIED the
  request), then answer ``status`` with an error body shaped like the
  backend's (S3 / Azure XML, GCS JSON);
- ``drop_after``: forward, read the answer, close the client connection
  without a byte (the client sees a dropped connection);
- ``error_before``: answer ``status`` without forwarding (nothing applied);
- ``drop_before``: close without forwarding;
- ``delay:<seconds>``: wait, then forward (client read timeouts).

Requests are forwarded byte for byte: the request line, every header (Host
included: SigV4 signs it) and the body, chunked framing and trailers
included.  Responses are buffered (objects in tests are small) and re-sent
with a ``Content-Length``; hop-by-hop headers are not forwarded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import select
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

ACTIONS = ("error_after", "drop_after", "error_before", "drop_before")

# not forwarded in responses (RFC 9110 7.6.1); the proxy frames its own answer
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_GCS_PREFIXES = ("/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/", "/batch/")

SOCKET_TIMEOUT = 60.0  # idle keep-alive connections and stuck upstreams end eventually


def _check_action(action: str) -> None:
    if action in ACTIONS:
        return
    if action.startswith("delay:"):
        try:
            if float(action.removeprefix("delay:")) >= 0:
                return
        except ValueError:
            pass
    raise ValueError(f"unknown fault action {action!r}; use one of {ACTIONS} or 'delay:<seconds>'")


@dataclass
class Fault:
    """One rule: requests matching it get ``action`` (``hits`` counts them).

    ``path`` and ``query`` are regexes searched (``re.search``) in the raw,
    still percent-encoded URL path and query string; ``body`` in the raw request
    body (GCS multipart uploads carry the object name only there).
    """

    method: str
    path: str
    action: str
    times: int = 1
    skip: int = 0
    status: int = 500
    query: str | None = None
    body: bytes | None = None
    close: bool = False
    hits: int = 0  # requests this rule broke
    seen: int = 0  # matching requests, the skipped ones included

    def __post_init__(self) -> None:
        self._path = re.compile(self.path)
        self._query = re.compile(self.query) if self.query is not None else None
        self._body = re.compile(self.body, re.DOTALL) if self.body is not None else None

    @property
    def spent(self) -> bool:
        """Whether the rule has broken its ``times`` requests."""
        return self.times >= 0 and self.hits >= self.times

    def matches(self, method: str, path: str, query: str, body: bytes) -> bool:
        return (
            (self.method == "*" or self.method.upper() == method)
            and self._path.search(path) is not None
            and (self._query is None or self._query.search(query) is not None)
            and (self._body is None or self._body.search(body) is not None)
        )


@dataclass(frozen=True)
class Logged:
    """One request the proxy received.

    ``status`` is upstream's status code, ``None`` when the request was not
    forwarded (or upstream failed); ``action`` the fault applied, if any.
    """

    method: str
    path: str
    query: str
    status: int | None
    action: str | None


@dataclass
class _RandomFaults:
    probability: float
    rng: random.Random
    methods: frozenset[str]
    actions: tuple[str, ...]
    status: int
    path: re.Pattern[str]


@dataclass
class _Decision:
    action: str | None = None
    status: int = 500
    close: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the connections; never wait for them
    request_queue_size = 128  # aiohttp opens many connections at once
    proxy: FaultProxy

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn): slow without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-request are routine here, not test failures


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    disable_nagle_algorithm = True  # header and body writes must not wait for delayed ACKs
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.server.proxy._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._unregister(self.connection)
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        # BaseHTTPRequestHandler dispatches on do_<METHOD>; every method is proxied
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or len(self.raw_requestline) > 65536:
                self.close_connection = True
                return
            if not self.parse_request():  # answers 100 Continue when asked to
                return
            self._proxy()
            self.wfile.flush()
        except (TimeoutError, OSError, http.client.HTTPException, ValueError):
            self.close_connection = True

    # -- one request --------------------------------------------------------
    def _proxy(self) -> None:
        proxy = self.server.proxy
        method = self.command.upper()
        path, _, query = self.path.partition("?")
        raw_body, body = self._read_body()
        decision = proxy._decide(method, path, query, body)
        action = decision.action

        def record(status: int | None) -> None:
            # before the client hears anything: once it has its answer, the log is complete
            proxy._record(Logged(method, path, query, status, action))

        if action in ("drop_before", "error_before"):
            record(None)
            if action == "drop_before":
                self.close_connection = True
            else:
                self._send_error(decision, method, path)
            return
        if (
            action is not None
            and action.startswith("delay:")
            and proxy._stopping.wait(float(action.removeprefix("delay:")))
        ):
            record(None)
            self.close_connection = True  # stopped while waiting: forward nothing
            return
        try:
            response = self._forward(method, raw_body)
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            record(None)
            self._send(502, [("Content-Type", "text/plain")], b"fault proxy: upstream failed")
            return
        record(response[0])
        if action == "drop_after":
            self.close_connection = True
        elif action == "error_after":
            self._send_error(decision, method, path)
        else:
            self._send(*response, head=method == "HEAD")

    def _read_body(self) -> tuple[bytes, bytes]:
        """The body as sent (chunk framing included) and as data."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            framed, decoded = bytearray(), bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed inside a chunked body")
                framed += line
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                chunk = self.rfile.read(size + 2)  # data and its CRLF
                if len(chunk) != size + 2:
                    raise ConnectionError("client closed inside a chunk")
                framed += chunk
                decoded += chunk[:size]
            while True:  # trailers (aws-chunked checksums), then the empty line
                line = self.rfile.readline(65537)
                framed += line
                if line in (b"\r\n", b"\n", b""):
                    break
            return bytes(framed), bytes(decoded)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise ConnectionError("client closed inside the body")
        return data, data

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This client connection's upstream connection, and whether it is reused."""
        conn = self._upstream
        if conn is not None and conn.sock is not None:
            # upstream may have closed an idle connection (Node: after 5 s); a
            # readable idle socket is at EOF, so never send on it
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if not readable:
                return conn, True
            self._drop_upstream()
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(proxy._host, proxy._port, timeout=SOCKET_TIMEOUT)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream = conn
        return conn, False

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _forward(self, method: str, raw_body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        while True:
            conn, reused = self._connection()
            try:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    conn.putheader(name, value)
                conn.endheaders(raw_body or None)  # one send: headers and body, bytes unchanged
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_upstream()
                if reused:
                    # upstream closed the idle connection as we sent (the select
                    # above raced it): it never answered, so send once more, fresh
                    continue
                raise
            body = response.read()
            if response.will_close:
                self._drop_upstream()
            return response.status, response.getheaders(), body

    def _send(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, head: bool = False
    ) -> None:
        bodiless = head or status in (204, 304) or status < 200
        self.send_response_only(status)
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and not bodiless):
                continue
            self.send_header(name, value)
        if not bodiless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not bodiless and body:
            self.wfile.write(body)

    def _send_error(self, decision: _Decision, method: str, path: str) -> None:
        headers, body = _error_body(decision.status, path, dict(self.headers.items()))
        if decision.close:
            headers.append(("Connection", "close"))
            self.close_connection = True
        if method == "HEAD":
            headers.append(("Content-Length", "0"))
        self._send(decision.status, headers, body, head=method == "HEAD")


def _error_body(
    status: int, path: str, request_headers: dict[str, str]
) -> tuple[list[tuple[str, str]], bytes]:
    """An error answer shaped like the backend's, so clients parse it as theirs."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    request_id = uuid.uuid4().hex
    lowered = {k.lower() for k in request_headers}
    if path.startswith(_GCS_PREFIXES):
        reason = {429: "rateLimitExceeded", 503: "backendError"}.get(status, "backendError")
        payload = {
            "error": {
                "code": status,
                "message": f"fault proxy: {phrase}",
                "errors": [{"domain": "global", "reason": reason, "message": phrase}],
            }
        }
        return [("Content-Type", "application/json; charset=UTF-8")], json.dumps(payload).encode()
    if "x-ms-version" in lowered:
        code = {500: "InternalError", 503: "ServerBusy"}.get(status, phrase.replace(" ", ""))
        xml = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>'
            f"{code}</Code><Message>fault proxy: {phrase}\nRequestId:{request_id}\n"
            f"Time:{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}</Message></Error>"
        )
        headers = [
            ("Content-Type", "application/xml"),
            ("x-ms-error-code", code),
            ("x-ms-request-id", request_id),
        ]
        return headers, xml.encode()
    code = {500: "InternalError", 503: "SlowDown"}.get(status, phrase.replace(" ", ""))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
        f"{code}</Code><Message>fault proxy: {phrase}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], xml.encode()


class FaultProxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1: forwards to `upstream`, injects faults.

    Rules are tried in the order added; the first live one that matches decides
    (a rule still skipping lets the request on to later rules).  Requests no
    rule broke may get a random fault (:meth:`random_faults`).  Every request is
    appended to :attr:`log`.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream
        self._host = parts.hostname
        self._port = parts.port or 80
        self.port = 0
        self.url = ""
        self.log: list[Logged] = []
        self._rules: list[Fault] = []
        self._random: _RandomFaults | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a request was decided or logged
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen on a free loopback port and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self.port = int(server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket (client connections included)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes delay: actions
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # handler threads blocked in reads see EOF
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------
    def add_fault(
        self,
        method: str,
        path: str,
        action: str,
        *,
        times: int = 1,
        skip: int = 0,
        status: int = 500,
        query: str | None = None,
        body: bytes | None = None,
        close: bool = False,
    ) -> Fault:
        """Break requests matching ``method`` (``"*"``: any) and the regexes.

        The first ``skip`` matching requests pass untouched, the next ``times``
        get ``action`` (``times=-1``: all of them).  ``path`` / ``query`` are
        searched in the raw (percent-encoded) path and query string, ``body``
        (bytes regex) in the request body.  ``status`` is the code the error
        actions answer; ``close=True`` closes the connection after an error.
        """
        _check_action(action)
        if times == 0 or times < -1 or skip < 0:
            raise ValueError("times must be positive or -1, skip not negative")
        rule = Fault(method, path, action, times, skip, status, query, body, close)
        with self._lock:
            self._rules.append(rule)
        return rule

    def random_faults(
        self,
        probability: float,
        *,
        seed: int,
        methods: Sequence[str] = ("PUT", "POST", "DELETE"),
        actions: Sequence[str] = ("error_after", "drop_after", "error_before"),
        status: int = 500,
        path: str = "",
    ) -> None:
        """Give each request of ``methods`` (path matching ``path``) a random action.

        With ``probability``, drawn from ``random.Random(seed)`` under a lock, so
        the same request sequence gets the same faults; ``probability=0`` turns it off.
        """
        for action in actions:
            _check_action(action)
        if not 0 <= probability <= 1:
            raise ValueError("probability must be within [0, 1]")
        with self._lock:
            self._random = (
                _RandomFaults(
                    probability,
                    random.Random(seed),
                    frozenset(m.upper() for m in methods),
                    tuple(actions),
                    status,
                    re.compile(path),
                )
                if probability > 0
                else None
            )

    def clear(self) -> None:
        """Remove every rule and the random faults, and empty the log."""
        with self._lock:
            self._rules.clear()
            self._random = None
            self.log.clear()

    @property
    def faults(self) -> list[Fault]:
        """The rules, in the order they are tried."""
        with self._lock:
            return list(self._rules)

    def requests(self, method: str | None = None, path: str = "") -> list[Logged]:
        """The logged requests of ``method`` whose path matches the regex ``path``."""
        pattern = re.compile(path)
        with self._lock:
            return [
                entry
                for entry in self.log
                if (method is None or entry.method == method.upper()) and pattern.search(entry.path)
            ]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate()`` holds; it is re-checked whenever a request is
        decided or logged (so tests need no sleeps).  ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- called by the handler threads ---------------------------------------------
    def _decide(self, method: str, path: str, query: str, body: bytes) -> _Decision:
        with self._lock:
            self._changed.notify_all()
            for rule in self._rules:
                if rule.spent or not rule.matches(method, path, query, body):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.hits += 1
                return _Decision(rule.action, rule.status, rule.close)
            chaos = self._random
            if (
                chaos is not None
                and method in chaos.methods
                and chaos.path.search(path)
                and chaos.rng.random() < chaos.probability
            ):
                return _Decision(chaos.rng.choice(chaos.actions), chaos.status)
        return _Decision()

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)
            self._changed.notify_all()

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
