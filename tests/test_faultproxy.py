"""The fault proxy itself: faithful forwarding, each action, rule counting, seeded chaos.

Against the real emulators, what each client does when a request fails after
the store applied it is asserted here once, as documentation of the bug class
the committer has to survive: the client retries on its own and the retry of
a conditional create meets the client's own object (S3 and GCS 412, Azure
409), so ``put_if_absent`` reports ``False`` for a write that landed.
"""

from __future__ import annotations

import errno
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from faultproxy import Fault, FaultProxy, Logged
from ktk_arrow.errors import StoreError
from ktk_arrow.storage import Store, resolve_store

MiB = 1024 * 1024

# what the emulator answers a create, and the retry of a create that landed
CREATED = {"s3": 200, "azure": 201, "gcs": 200}
CONFLICT = {"s3": 412, "azure": 409, "gcs": 412}
# attempts each client makes on a persistent 500 with default retries:
# botocore legacy mode 5, azure-storage 1 + 3 status retries, gcsfs 6
ATTEMPTS = {"s3": 5, "azure": 4, "gcs": 6}
EMULATOR_FIXTURE = {"s3": "moto_server", "azure": "azurite", "gcs": "fake_gcs"}


# -- a store through the proxy, and the same prefix reached directly --------------


@dataclass
class Via:
    """``store`` goes through ``proxy``; ``direct`` reaches the same prefix without it."""

    backend: str
    store: Store
    direct: Store
    proxy: FaultProxy

    def object_path(self, key: str) -> str:
        """A regex for the raw URL path of ``key``'s object (S3 and Azure)."""
        return re.escape(f"/{self.store.root}/{key}") + "$"

    def break_upload(self, key: str, action: str, **kwargs: Any) -> Fault:
        """Break the single-request upload of ``key`` (``put`` / ``put_if_absent``)."""
        if self.backend == "gcs":
            # a multipart upload: POST .../o, the object name only in the body
            name = self.store.root.split("/", 1)[1] + "/" + key
            body = re.escape(json.dumps({"name": name})[1:-1]).encode()
            return self.proxy.add_fault(
                "POST", r"^/upload/storage/v1/b/[^/]+/o$", action, body=body, **kwargs
            )
        return self.proxy.add_fault("PUT", self.object_path(key), action, **kwargs)

    def break_op(self, op: str, key: str, action: str) -> Fault:
        """Break the one request behind ``Store.<op>(key)``."""
        if op == "put":
            return self.break_upload(key, action)
        method = {"get": "GET", "exists": "HEAD", "delete": "DELETE"}[op]
        if self.backend == "gcs":
            name = re.escape((self.store.root.split("/", 1)[1] + "/" + key).replace("/", "%2F"))
            if op == "get":  # the media, from /download/storage/v1/b/<bucket>/o/<name>
                return self.proxy.add_fault("GET", f"^/download/.*/o/{name}$", action)
            # the metadata (exists is a GET of it) and deletes: /storage/v1/b/<bucket>/o/<name>
            method = "DELETE" if op == "delete" else "GET"
            return self.proxy.add_fault(method, f"^/storage/v1/b/[^/]+/o/{name}$", action)
        return self.proxy.add_fault(method, self.object_path(key), action)

    def upload_requests(self) -> list[Logged]:
        """The logged requests of single-request uploads."""
        method = "POST" if self.backend == "gcs" else "PUT"
        return [e for e in self.proxy.log if e.method == method]


@pytest.fixture
def via(faulty_url_and_options: tuple[str, dict[str, Any], FaultProxy], request: Any) -> Via:
    url, options, proxy = faulty_url_and_options
    backend = request.node.callspec.params["faulty_url_and_options"]
    emulator = request.getfixturevalue(EMULATOR_FIXTURE[backend])
    # the options are plain data, so they reach other processes unchanged
    json.dumps(options)
    return Via(
        backend,
        resolve_store(url, dict(options)),
        resolve_store(url, emulator.storage_options()),
        proxy,
    )


# -- plain traffic ---------------------------------------------------------------------


def test_plain_traffic_passes_through(via: Via) -> None:
    store, direct = via.store, via.direct
    store.put("a/one", b"1")
    store.put("a/two", b"22")
    big = bytes(range(256)) * (6 * MiB // 256) + b"tail"  # > 5 MiB in one request
    store.put("big", big)
    assert store.put_if_absent("log/1", b"first")
    assert not store.put_if_absent("log/1", b"second")
    assert store.get("a/two") == b"22" and store.get("big") == big
    assert store.exists("a/one") and not store.exists("a/missing")
    assert [(i.key, i.size) for i in store.list()] == [
        ("a/one", 1),
        ("a/two", 2),
        ("big", len(big)),
        ("log/1", 5),
    ]
    store.delete("a/one")
    assert not direct.exists("a/one")
    assert direct.get("big") == big and direct.get("log/1") == b"first"
    assert via.proxy.log and all(e.action is None for e in via.proxy.log)
    assert all(e.status is not None and e.status < 500 for e in via.proxy.log)


def test_streamed_multi_request_upload(via: Via) -> None:
    # S3 multipart upload, Azure staged blocks, GCS resumable upload
    data = b"0123456789abcdef" * (11 * MiB // 16) + b"!"
    with via.store.fs.open(via.store.path("streamed"), "wb", block_size=5 * MiB) as f:
        for start in range(0, len(data), MiB):
            f.write(data[start : start + MiB])
    assert via.direct.get("streamed") == data
    writes = [e for e in via.proxy.log if e.method in ("PUT", "POST")]
    assert len(writes) >= 3, writes
    assert all(e.status is not None and e.status < 400 for e in writes), writes


@pytest.mark.s3
@pytest.mark.gcs
@pytest.mark.emulator
def test_chunked_bodies_reach_the_emulators(
    s3_fault_proxy: FaultProxy, moto_server: Any, gcs_fault_proxy: FaultProxy
) -> None:
    key = f"chunked-{time.monotonic_ns()}"
    conn = http.client.HTTPConnection("127.0.0.1", s3_fault_proxy.port, timeout=10)
    conn.request("PUT", f"/ktk-test/{key}", body=iter([b"abc", b"defg"]), encode_chunked=True)
    assert conn.getresponse().status == 200
    stored = moto_server.client().get_object(Bucket="ktk-test", Key=key)["Body"].read()
    assert stored == b"abcdefg"
    conn = http.client.HTTPConnection("127.0.0.1", gcs_fault_proxy.port, timeout=10)
    conn.request(
        "POST",
        f"/upload/storage/v1/b/ktk-test/o?uploadType=media&name={key}",
        body=iter([b"abc", b"defg"]),
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["size"] == "7"


# -- faults after the store applied the request ------------------------------------


@pytest.mark.parametrize("action", ["error_after", "drop_after"])
def test_a_lost_answer_on_create_reports_the_own_write_as_a_conflict(via: Via, action: str) -> None:
    # a 500, or a closed connection (aiohttp's ServerDisconnectedError): botocore,
    # azure-core and gcsfs all retry, and the retry meets the client's own object
    rule = via.break_upload("log/7", action)
    assert via.store.put_if_absent("log/7", b"mine") is False
    assert via.direct.get("log/7") == b"mine"  # yet the write landed
    assert rule.hits == 1
    assert [(e.status, e.action) for e in via.upload_requests()] == [
        (CREATED[via.backend], action),
        (CONFLICT[via.backend], None),
    ]


@pytest.mark.parametrize("action", ["error_after", "drop_after"])
@pytest.mark.parametrize("op", ["put", "get", "exists", "delete"])
def test_idempotent_operations_survive_faults_after_apply(via: Via, op: str, action: str) -> None:
    via.direct.put("k/v", b"old")
    rule = via.break_op(op, "k/v", action)
    if op == "put":
        via.store.put("k/v", b"new")
        assert via.direct.get("k/v") == b"new"
    elif op == "get":
        assert via.store.get("k/v") == b"old"
    elif op == "exists":
        assert via.store.exists("k/v")
    else:
        # the retry finds nothing to delete (S3: 204 again, Azure/GCS: 404, ignored)
        via.store.delete("k/v")
        assert not via.direct.exists("k/v")
    assert rule.hits == 1, via.proxy.log


# -- faults before the store saw the request ------------------------------------------


def test_error_before_once_is_retried_and_applied_once(via: Via) -> None:
    rule = via.break_upload("log/1", "error_before")
    assert via.store.put_if_absent("log/1", b"mine") is True
    assert via.direct.get("log/1") == b"mine"
    assert rule.hits == 1
    assert [(e.status, e.action) for e in via.upload_requests()] == [
        (None, "error_before"),
        (CREATED[via.backend], None),
    ]


def test_drop_before_once_is_retried_and_applied_once(via: Via) -> None:
    rule = via.break_upload("log/1", "drop_before")
    assert via.store.put_if_absent("log/1", b"mine") is True
    assert via.direct.get("log/1") == b"mine"
    assert [(e.status, e.action) for e in via.upload_requests()] == [
        (None, "drop_before"),
        (CREATED[via.backend], None),
    ]
    assert rule.spent


def test_persistent_errors_before_apply_nothing(via: Via) -> None:
    rule = via.break_upload("log/1", "error_before", times=-1)
    with pytest.raises(StoreError) as info:
        via.store.put_if_absent("log/1", b"mine")
    assert not via.direct.exists("log/1")
    assert rule.hits == ATTEMPTS[via.backend] == len(via.upload_requests())
    assert all(e.status is None for e in via.upload_requests())
    # each client parsed the proxy's error body as its backend's own
    cause = info.value.__cause__
    if via.backend == "s3":  # s3fs turns the ClientError (Code InternalError) into EREMOTEIO
        assert isinstance(cause, OSError) and cause.errno == errno.EREMOTEIO
    elif via.backend == "azure":
        assert getattr(cause, "error_code", None) == "InternalError"
    else:
        assert getattr(cause, "code", None) == 500


@pytest.mark.s3
@pytest.mark.emulator
def test_s3_slow_down_is_retried_by_botocore_and_again_by_s3fs(
    faulty_s3_url_and_options: tuple[str, dict[str, Any], FaultProxy],
) -> None:
    url, options, proxy = faulty_s3_url_and_options
    store = resolve_store(url, options)
    rule = proxy.add_fault("PUT", "/log/1$", "error_before", times=-1, status=503)
    with pytest.raises(StoreError):
        store.put_if_absent("log/1", b"mine")
    # s3fs retries "SlowDown" errors itself (5 times) around botocore's 5 attempts
    assert rule.hits == 5 * 5


def test_random_faults_with_retries_every_put_lands_once(via: Via) -> None:
    via.proxy.random_faults(0.3, seed=11, actions=("error_after", "drop_after", "error_before"))
    for i in range(8):
        via.store.put(f"r/{i}", f"value {i}".encode())
    via.proxy.random_faults(0, seed=0)
    assert [via.direct.get(f"r/{i}") for i in range(8)] == [f"value {i}".encode() for i in range(8)]
    assert any(e.action for e in via.proxy.log), "seed 11 should have broken something"


# -- the proxy on a local upstream: exact bytes, counting, chaos ------------------------


class _Upstream(BaseHTTPRequestHandler):
    """Answers by path: ``/204``, ``/304``, else 200 echoing the body; logs each request.

    ``/hang-up`` closes the connection after answering, without saying so.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path in ("/204", "/304"):
            self.send_response(int(path[1:]))
            self.end_headers()
            return
        out = body or f"{self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
        if path == "/hang-up":  # close the kept-alive connection unannounced, like an idle timeout
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(upstream: tuple[str, list[str]]) -> Iterator[FaultProxy]:
    with FaultProxy(upstream[0]) as p:
        yield p


def _call(proxy: FaultProxy, method: str, path: str, body: bytes = b"") -> int | str:
    """One request on a fresh connection: the status, or ``"dropped"``."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        response.read()
        return response.status
    except (http.client.RemoteDisconnected, ConnectionError):
        return "dropped"
    finally:
        conn.close()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_requests_are_forwarded_byte_for_byte() -> None:
    # a chunked upload with a trailing checksum, as aws-chunked clients send it
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-amz-checksum-crc32: DUoRhQ==\r\n\r\n"
    head = (
        b"PUT /bucket/k%3Dv/obj?x-id=PutObject&a=%2F HTTP/1.1\r\n"
        b"Host: s3.example.test:9000\r\n"
        b"Authorization: AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=y\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"X-Amz-Trailer: x-amz-checksum-crc32\r\n"
        b"x-mixed-Case: kept\r\n"
        b"\r\n"
    )
    received = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            while len(received) < len(head) + len(body):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with FaultProxy(f"http://127.0.0.1:{listener.getsockname()[1]}") as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(head + body)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += client.recv(65536)
        thread.join(5)
        listener.close()
        assert bytes(received) == head + body
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Up: 1\r\n" in answer
        assert proxy.log == [Logged("PUT", "/bucket/k%3Dv/obj", "x-id=PutObject&a=%2F", 200, None)]


def test_keep_alive_survives_head_204_304_and_errors(
    proxy: FaultProxy, upstream: tuple[str, list[str]]
) -> None:
    proxy.add_fault("GET", "^/e$", "error_before", status=503)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    answers = []
    for method, path in [
        ("HEAD", "/h"),
        ("GET", "/204"),
        ("GET", "/304"),
        ("GET", "/e"),
        ("PUT", "/p"),
        ("GET", "/g"),
    ]:
        conn.request(method, path, body=b"data" if method == "PUT" else None)
        response = conn.getresponse()
        answers.append((response.status, response.read(), response.getheader("Content-Length")))
    sock = conn.sock
    assert [a[0] for a in answers] == [200, 204, 304, 503, 200, 200]
    assert answers[0] == (200, b"", str(len(b"HEAD /h")))  # HEAD: upstream's length, no body
    assert answers[3][1].startswith(b"<?xml") and b"<Code>SlowDown</Code>" in answers[3][1]
    assert answers[4][1] == b"data" and answers[5][1] == b"GET /g"
    assert conn.sock is sock  # one connection all along
    assert upstream[1] == ["HEAD /h", "GET /204", "GET /304", "PUT /p", "GET /g"]


def test_upstream_closing_kept_alive_connections_is_invisible(
    proxy: FaultProxy, upstream: tuple[str, list[str]]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for _ in range(5):
        conn.request("PUT", "/hang-up", body=b"x")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"x")
    assert upstream[1] == ["PUT /hang-up"] * 5  # each sent once
    assert [e.status for e in proxy.log] == [200] * 5


def test_each_action_as_the_client_sees_it(
    proxy: FaultProxy, upstream: tuple[str, list[str]]
) -> None:
    for action in ("error_after", "drop_after", "error_before", "drop_before"):
        proxy.add_fault("PUT", f"^/{action}$", action, status=500)
    outcomes = {a: _call(proxy, "PUT", f"/{a}", b"x") for a in ("error_after", "drop_after")}
    outcomes |= {a: _call(proxy, "PUT", f"/{a}", b"x") for a in ("error_before", "drop_before")}
    assert outcomes == {
        "error_after": 500,
        "drop_after": "dropped",
        "error_before": 500,
        "drop_before": "dropped",
    }
    assert upstream[1] == ["PUT /error_after", "PUT /drop_after"]  # applied: the "after" ones
    assert [(e.path, e.status, e.action) for e in proxy.log] == [
        ("/error_after", 200, "error_after"),
        ("/drop_after", 200, "drop_after"),
        ("/error_before", None, "error_before"),
        ("/drop_before", None, "drop_before"),
    ]


def test_skip_times_and_rule_order(proxy: FaultProxy) -> None:
    counted = proxy.add_fault("GET", "^/k", "error_before", skip=1, times=2, query="v=1")
    forever = proxy.add_fault("*", "^/k", "error_before", times=-1, status=418)
    statuses = [_call(proxy, "GET", "/k?v=1") for _ in range(5)]
    # 1st skipped by `counted` (so `forever` takes it), 2nd and 3rd `counted`, then spent
    assert statuses == [418, 500, 500, 418, 418]
    assert (counted.hits, counted.seen, counted.spent) == (2, 3, True)
    assert forever.hits == 3 and not forever.spent
    assert _call(proxy, "DELETE", "/k") == 418 and _call(proxy, "GET", "/other") == 200
    proxy.clear()
    assert proxy.faults == [] and proxy.log == []
    assert _call(proxy, "GET", "/k?v=1") == 200
    with pytest.raises(ValueError):
        proxy.add_fault("GET", "/", "explode")
    with pytest.raises(ValueError):
        proxy.add_fault("GET", "/", "error_after", times=0)


def _chaos_run(proxy: FaultProxy, seed: int) -> list[str | None]:
    proxy.clear()
    proxy.random_faults(0.5, seed=seed, methods=("PUT", "DELETE"))
    for i in range(30):
        _call(proxy, "PUT" if i % 3 else "GET", f"/c/{i}", b"x")
    return [e.action for e in proxy.log]


def test_random_faults_are_deterministic_per_seed(proxy: FaultProxy) -> None:
    first = _chaos_run(proxy, seed=1)
    assert _chaos_run(proxy, seed=1) == first
    assert _chaos_run(proxy, seed=2) != first
    assert set(first) == {None, "error_after", "drop_after", "error_before"}
    assert all(first[i] is None for i in range(0, 30, 3))  # GET is not in `methods`
    proxy.random_faults(0, seed=3)
    proxy.log.clear()
    assert [_call(proxy, "PUT", "/c", b"x") for _ in range(5)] == [200] * 5


def test_delay_outlasts_a_client_timeout_and_stop_never_hangs(
    upstream: tuple[str, list[str]],
) -> None:
    proxy = FaultProxy(upstream[0]).start()
    proxy.add_fault("PUT", "^/slow$", "delay:0.3")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.1)
    conn.request("PUT", "/slow", body=b"x")
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()
    # the proxy forwards once the delay is over, although the client gave up
    assert proxy.wait_until(lambda: len(proxy.log) == 1, timeout=5)
    assert proxy.log == [Logged("PUT", "/slow", "", 200, "delay:0.3")]
    # a request parked in a long delay and an idle keep-alive connection
    parked_rule = proxy.add_fault("PUT", "^/parked$", "delay:60")
    parked = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    parked.sendall(b"PUT /parked HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    assert proxy.wait_until(lambda: parked_rule.hits == 1, timeout=5)
    started = time.monotonic()
    proxy.stop()
    assert _closed(idle)  # EOF, or a reset if stop() came before the accept
    assert _closed(parked)  # dropped, never forwarded
    assert time.monotonic() - started < 2
    assert upstream[1] == ["PUT /slow"]
    parked.close()
    idle.close()
    proxy.stop()  # twice is fine
