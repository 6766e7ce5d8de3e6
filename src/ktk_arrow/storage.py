"""The only code that talks to fsspec / pyarrow.fs.

A :class:`Store` is a key -> bytes mapping rooted at a prefix of a filesystem,
with the one primitive the committer needs: :meth:`Store.put_if_absent`.
Keys are always ``/``-separated and relative to the store root, exactly as
they appear in kartothek metadata (``sales/table/country=DE/abc.parquet``).

Backends: :class:`LocalStore` (``os.link``), :class:`MemoryStore` (a lock),
:class:`S3Store` (``If-None-Match: *``), :class:`GCSStore`
(``ifGenerationMatch=0``) and :class:`AzureStore` (``If-None-Match: *``,
adlfs' ``overwrite=False``).  Any other fsspec filesystem is served by the base
:class:`Store`, which has no atomic put-if-absent.

Backend errors are translated here, once: a missing key is
``FileNotFoundError``, everything else the backend raises is a
:class:`~ktk_arrow.errors.StoreError` chaining the original, with every secret
of the store's options scrubbed from the message.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import inspect
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

import fsspec
import pyarrow.fs as pafs

from ._optional import import_optional
from .errors import InvalidArgumentError, StoreError, UnsupportedStoreError, redact


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as listed."""

    key: str
    size: int
    mtime: datetime | None


class Store:
    """A prefix of an fsspec filesystem seen as a key -> bytes mapping.

    Subclasses say whether they offer atomic put-if-absent
    (``conditional_writes``) and how.  The base class has none, so a store it
    serves can only be written in explicit single-writer mode.
    """

    conditional_writes: bool = False

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        *,
        url: str | None = None,
        single_writer: bool = False,
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url or f"{_protocol(fs)}://{self.root}"
        self.single_writer = single_writer

    # -- identity -----------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Store)
            and type(other) is type(self)
            and other.root == self.root
            and other.fs == self.fs
        )

    def __hash__(self) -> int:
        return hash((type(self), self.root))

    def path(self, key: str) -> str:
        """The filesystem path of ``key``."""
        _check_key(key)
        return f"{self.root}/{key}" if self.root else key

    def key_of(self, path: str) -> str:
        """The key of a filesystem path below the root."""
        path = self.fs._strip_protocol(path)
        prefix = f"{self.root}/" if self.root else ""
        if not path.startswith(prefix):
            raise StoreError(f"path {path!r} is not below the store root {self.root!r}")
        return path[len(prefix) :]

    # -- reading ------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """The bytes of ``key``; ``FileNotFoundError`` if it does not exist."""
        with self._translate(key):
            return bytes(self.fs.cat_file(self.path(key)))

    def get_or_none(self, key: str) -> bytes | None:
        """The bytes of ``key``, or ``None`` if it does not exist (one request)."""
        try:
            return self.get(key)
        except FileNotFoundError:
            return None

    def get_prefix(self, key: str, length: int) -> bytes | None:
        """The first ``length`` bytes of ``key`` (all, if shorter); ``None`` if absent.

        One ranged request: a reader learns from the head of a large object
        whether it needs the rest.
        """
        try:
            with self._translate(key):
                return bytes(self.fs.cat_file(self.path(key), start=0, end=length))
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        """Whether an object (not a directory) is stored under ``key``."""
        with self._translate(key):
            return bool(self.fs.isfile(self.path(key)))

    def size(self, key: str) -> int:
        """The byte size of ``key``; ``FileNotFoundError`` if it does not exist."""
        with self._translate(key):
            return int(self.fs.size(self.path(key)))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with the directory ``prefix`` (recursive)."""
        return (info for info in self._list(prefix) if not self._hidden(info.key))

    def list_temporary(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Temp files of puts in flight, or left behind by a crashed writer (gc removes them)."""
        return (info for info in self._list(prefix) if self._hidden(info.key))

    def _list(self, prefix: str) -> list[ObjectInfo]:
        prefix = prefix.strip("/")
        base = self.path(prefix) if prefix else self.root
        with self._translate(prefix):
            try:
                found = self._find(base)
            except FileNotFoundError:
                return []
        below = f"{prefix}/" if prefix else ""
        infos = []
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            key = self.key_of(path)
            # some backends return the prefix itself when it is an object, or
            # siblings sharing its first characters: only keys below it count
            if not key.startswith(below):
                continue
            infos.append(ObjectInfo(key, int(info.get("size") or 0), _mtime(info)))
        infos.sort(key=lambda i: i.key)
        return infos

    # -- writing ------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whole, replacing it; readers never see a partial object."""
        path = self.path(key)
        with self._translate(key):
            try:
                self.fs.pipe_file(path, data)
            except FileNotFoundError:  # filesystems with real directories
                self.fs.makedirs(self.fs._parent(path), exist_ok=True)
                self.fs.pipe_file(path, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically create ``key``; ``False`` (and nothing written) if it exists.

        This is the linearisation point of every commit, so it must be atomic
        against concurrent writers in other processes and on other machines.
        """
        if not self.single_writer:
            raise UnsupportedStoreError(
                f"store {self.url!r} ({_protocol(self.fs)}) offers no atomic put-if-absent, "
                "so concurrent writers could lose updates; use a local, s3, gs, abfs or memory "
                "store, or pass single_writer=True if you guarantee one writer at a time"
            )
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""
        try:
            with self._translate(key):
                self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` in as few requests as the backend allows; missing keys are fine."""
        keys = list(keys)
        if not keys:
            return
        paths = [self.path(k) for k in keys]
        with self._translate(keys[0]):
            try:
                self.fs.rm(paths)
            except FileNotFoundError:
                for p in paths:
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(p)

    # -- arrow --------------------------------------------------------------
    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem on which ``self.path(key)`` opens ``key``."""
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @property
    def is_remote(self) -> bool:
        """Whether reads go over the network (Arrow then pre-buffers column chunks)."""
        return False

    # -- helpers ------------------------------------------------------------
    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        return dict(self.fs.find(base, detail=True))

    def _hidden(self, key: str) -> bool:
        """Whether ``key`` is a store-internal object that listings do not show."""
        return False

    def _translate(self, key: str) -> _Translate:
        return _Translate(self, key)

    _url_secrets: frozenset[str] = frozenset()

    def _secrets(self) -> frozenset[str]:
        """Strings that must never appear in an error message."""
        options = getattr(self.fs, "storage_options", None) or {}
        return _secret_values(options) | self._url_secrets


class _Translate:
    """Map backend exceptions to FileNotFoundError / FileExistsError / StoreError."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (FileNotFoundError, FileExistsError, StoreError)):
            return False
        if isinstance(exc, (InvalidArgumentError, UnsupportedStoreError)):
            return False
        if isinstance(exc, Exception):
            raise store_error(self.store, self.key, exc) from exc
        return False


# errno -> what it means for a key, and what to do about it
_OS_ERROR_HINTS = {
    errno.ENAMETOOLONG: (
        "the filesystem refuses the name: a part of the path is longer than it allows "
        "(255 bytes per name on most local filesystems)",
        "use a shorter dataset uuid or shorter partition values, or another store",
    ),
    errno.EACCES: (
        "permission denied",
        "give this user access to the path (read access to read, write access to write), "
        "or use credentials that may access it",
    ),
    errno.EPERM: (
        "operation not permitted",
        "give this user access to the path, or use credentials that may access it",
    ),
    errno.EROFS: ("the filesystem is read-only", "write to a writable store"),
    errno.ENOSPC: ("no space is left on the device", "free space on it, or use another store"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space, or use another store"),
    errno.ENOTDIR: (
        "a file is in the way: a part of the path is a file, not a directory",
        "move that file away (it is not part of a dataset)",
    ),
    errno.EISDIR: (
        "a directory is in the way where an object is expected",
        "move that directory away (it is not part of a dataset)",
    ),
}


def store_error(store: Store, key: str, exc: BaseException) -> StoreError:
    """The :class:`StoreError` for ``exc``, raised by the backend of ``store`` on ``key``.

    The message names the store, the key, what went wrong and what to do, with
    every secret of the store's options scrubbed.  Callers outside this module
    that reach the filesystem directly (writing data files through Arrow) use
    it so a refused name or a permission problem reads like any other.
    """
    detail = _scrub(f"{type(exc).__name__}: {exc}", store._secrets())
    hint = _OS_ERROR_HINTS.get(getattr(exc, "errno", None) or -1)
    if hint is None and isinstance(exc, PermissionError):
        hint = _OS_ERROR_HINTS[errno.EACCES]
    if hint is not None:
        what, fix = hint
        return StoreError(f"store {store.url!r} failed on key {key!r}: {what}; {fix} ({detail})")
    return StoreError(
        f"store {store.url!r} failed on key {key!r}: {detail}; check that the store is "
        "reachable and the credentials in storage_options are valid"
    )


class LocalStore(Store):
    """A directory on local disk; put-if-absent is ``os.link`` of a fully written temp file."""

    conditional_writes = True
    _TMP_PREFIX = ".tmp-"

    def __init__(self, root: str, **kwargs: Any) -> None:
        root = os.path.abspath(os.path.expanduser(root))
        super().__init__(fsspec.filesystem("file"), root, url=f"file://{root}", **kwargs)

    def put(self, key: str, data: bytes) -> None:
        # write + fsync + replace: readers of the final name see old or new, never half.
        path = self.path(key)
        with self._translate(key):
            tmp = self._write_temp(path, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        with self._translate(key):
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)  # never rename: it silently overwrites
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        return True

    def get(self, key: str) -> bytes:
        try:
            with open(self.path(key), "rb") as f:
                return f.read()
        except IsADirectoryError as exc:
            # never "absent": a writer would then try to create it, forever
            raise StoreError(
                f"store {self.url!r} has a directory at key {key!r} where an object is "
                "expected; move it away (the dataset is damaged there)"
            ) from exc
        except NotADirectoryError as exc:
            raise FileNotFoundError(self.path(key)) from exc
        except FileNotFoundError:
            raise
        except OSError as exc:  # permission denied, a name too long, an I/O error
            raise store_error(self, key, exc) from exc

    def get_prefix(self, key: str, length: int) -> bytes | None:
        try:
            with open(self.path(key), "rb") as f:
                return f.read(length)
        except FileNotFoundError:
            return None
        except (IsADirectoryError, NotADirectoryError):
            return self.get_or_none(key)  # the same answer get() gives
        except OSError as exc:
            raise store_error(self, key, exc) from exc

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def delete(self, key: str) -> None:
        try:
            super().delete(key)
        except StoreError as exc:
            # a name the filesystem refuses cannot exist, so it is deleted already
            if getattr(exc.__cause__, "errno", None) != errno.ENAMETOOLONG:
                raise

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:  # one unlink each: a batch adds nothing on local disk
            self.delete(key)

    def _hidden(self, key: str) -> bool:
        # temp files of in-flight puts are not objects yet
        return key.rsplit("/", 1)[-1].startswith(self._TMP_PREFIX)

    def _write_temp(self, path: str, data: bytes) -> str:
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            # a file where a directory of the key must be: never "the key exists"
            raise StoreError(
                f"store {self.url!r} cannot create key {self.key_of(path)!r}: a file is in "
                f"the way of its directory {directory!r}; move that file away (it is not "
                "part of a dataset)"
            ) from exc
        tmp = os.path.join(directory, f"{self._TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def arrow_filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()


class MemoryStore(Store):
    """fsspec's process-wide memory filesystem; a lock makes put-if-absent atomic."""

    conditional_writes = True
    _lock = threading.Lock()

    def __init__(self, root: str, **kwargs: Any) -> None:
        fs = fsspec.filesystem("memory")
        root = "/" + root.strip("/")
        super().__init__(fs, root, url=f"memory://{root}", **kwargs)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._lock:
            if self.fs.exists(self.path(key)):
                return False
            self.fs.pipe_file(self.path(key), data)
            return True


# -- object stores -------------------------------------------------------------


class _ObjectStore(Store):
    """What S3, GCS and Azure share.

    Every read goes to the service: the committer decides on what it reads,
    so fsspec's listing cache (also shared by every Store built on the same
    cached filesystem instance) must never answer for it.  ``get`` is a single
    GET, ``put`` a single whole-object upload (multipart uploads, too, become
    visible only when complete), ``put_if_absent`` a conditional upload.
    """

    conditional_writes = True
    _arrow_fs: pafs.FileSystem | None = None

    @property
    def is_remote(self) -> bool:
        return True

    def get(self, key: str) -> bytes:
        path = self.path(key)
        with self._translate(key):
            return bytes(self._cat(path))

    def exists(self, key: str) -> bool:
        try:
            self._head(self.path(key), key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return self._head(self.path(key), key)

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        with self._translate(key):
            self.fs.pipe_file(path, data)
        self._forget(path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.conditional_writes:
            return super().put_if_absent(key, data)
        path = self.path(key)
        try:
            with self._translate(key):
                self._create(path, data)
        except FileExistsError:
            return False
        finally:
            self._forget(path)
        return True

    def delete(self, key: str) -> None:
        super().delete(key)
        self._forget(self.path(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        super().delete_many(keys)
        for key in keys:
            self._forget(self.path(key))

    def arrow_filesystem(self) -> pafs.FileSystem:
        if self._arrow_fs is None:
            native = None
            try:
                native = self._native_arrow_fs()
            except Exception:  # an option pyarrow cannot express: fsspec serves Arrow
                native = None
            self._arrow_fs = native or pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        return self._arrow_fs

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_arrow_fs", None)  # rebuilt on demand in the receiving process
        return state

    # -- backend hooks ------------------------------------------------------
    def _cat(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def _head(self, path: str, key: str) -> int:
        """The size of the object at ``path`` (one metadata request, never cached)."""
        self._forget(path)
        with self._translate(key):
            info = self.fs.info(path)
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        return int(info.get("size") or 0)

    def _create(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data, mode="create")

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        self._forget(base)
        return super()._find(base)

    def _forget(self, path: str) -> None:
        """Drop what fsspec cached about ``path`` (and its parents)."""
        # a cache that cannot be invalidated is one we never filled
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)

    def _native_arrow_fs(self) -> pafs.FileSystem | None:
        return None


class S3Store(_ObjectStore):
    """An S3 bucket prefix (s3fs); put-if-absent is ``PutObject`` with ``If-None-Match: *``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, **kwargs: Any) -> None:
        super().__init__(fs, root, **kwargs)
        # s3fs before 2024.10 has no mode="create" and would silently overwrite
        if "mode" not in inspect.signature(fs._pipe_file).parameters:
            self.conditional_writes = False

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self.conditional_writes and not self.single_writer:
            raise UnsupportedStoreError(
                f"the installed s3fs cannot write {self.url!r} conditionally; upgrade it with "
                "pip install -U 'ktk-arrow[s3]' (s3fs>=2024.10)"
            )
        return super().put_if_absent(key, data)

    def _cat(self, path: str) -> bytes:
        # max_concurrency=1: no HEAD before the GET, so one request per read
        return bytes(self.fs.cat_file(path, max_concurrency=1))

    def _head(self, path: str, key: str) -> int:
        # HeadObject only: fs.info() also lists the "directory" on a miss
        bucket, obj, _ = self.fs.split_path(path)
        with self._translate(key):
            head = self.fs.call_s3("head_object", Bucket=bucket, Key=obj)
        return int(head["ContentLength"])

    def _native_arrow_fs(self) -> pafs.FileSystem | None:
        return _arrow_s3(self.fs, self.root.split("/", 1)[0])


class GCSStore(_ObjectStore):
    """A GCS bucket prefix (gcsfs); put-if-absent is an upload with ``ifGenerationMatch=0``.

    gcsfs sends the condition on its multipart (< 50 MiB) and resumable
    uploads; commit objects are small, so they take the multipart path.
    (fake-gcs-server enforces it on multipart uploads only; real GCS on both.)
    """

    def _native_arrow_fs(self) -> pafs.FileSystem | None:
        return _arrow_gcs(self.fs)


class AzureStore(_ObjectStore):
    """An Azure Blob container prefix (adlfs); put-if-absent is ``overwrite=False``."""

    def _create(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data, overwrite=False)

    def _native_arrow_fs(self) -> pafs.FileSystem | None:
        return _arrow_azure(self.fs)


# -- pyarrow native filesystems ------------------------------------------------

# fsspec options that do not change where or how objects are reached
_NEUTRAL_OPTIONS = {
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "skip_instance_cache",
    "default_block_size",
    "default_fill_cache",
    "default_cache_type",
    "max_concurrency",
    "retries",
    "asynchronous",
    "loop",
    "cache_regions",
    "config_kwargs",
    "version_aware",
    "project",
    "consistency",
    "timeout",
    "connection_timeout",
    "read_timeout",
    "socket_timeout",
    "blocksize",
    "location_mode",
}


def _arrow_s3(fs: fsspec.AbstractFileSystem, bucket: str) -> pafs.FileSystem | None:
    opts = dict(fs.storage_options)
    client = dict(opts.pop("client_kwargs", None) or {})
    endpoint = opts.pop("endpoint_url", None) or client.pop("endpoint_url", None)
    region = client.pop("region_name", None)
    verify = client.pop("verify", None)
    kwargs: dict[str, Any] = {}
    if opts.pop("anon", False):
        kwargs["anonymous"] = True
    key, secret, token = opts.pop("key", None), opts.pop("secret", None), opts.pop("token", None)
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret)
        if token:
            kwargs["session_token"] = token
    if set(opts) - _NEUTRAL_OPTIONS or client or verify is False:
        return None  # profiles, sessions, SSE kwargs, unverified TLS: only s3fs knows them
    if isinstance(verify, str):
        kwargs["tls_ca_file_path"] = verify
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme or "https"
        region = region or "us-east-1"
    elif not region:
        try:
            region = pafs.resolve_s3_region(bucket)
        except Exception:
            region = None
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _arrow_gcs(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem | None:
    opts = dict(fs.storage_options)
    token = opts.pop("token", None)
    endpoint = opts.pop("endpoint_url", None) or os.environ.get("STORAGE_EMULATOR_HOST")
    project = opts.get("project")
    kwargs: dict[str, Any] = {}
    if token == "anon":
        kwargs["anonymous"] = True
    elif token not in (None, "google_default", "cloud"):
        return None  # service-account files, dicts, credential objects: gcsfs only
    if set(opts) - _NEUTRAL_OPTIONS:
        return None
    if endpoint and endpoint not in ("default", "https://storage.googleapis.com"):
        if "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if project:
        kwargs["project_id"] = project
    return pafs.GcsFileSystem(**kwargs)


# The well-known Azurite account ("UseDevelopmentStorage=true"); not a secret.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _arrow_azure(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem | None:
    opts = dict(fs.storage_options)
    if opts.pop("credential", None) is not None or opts.pop("anon", None):
        return None
    account = opts.pop("account_name", None)
    key = opts.pop("account_key", None)
    sas = opts.pop("sas_token", None)
    blob_endpoint = None
    suffix = None
    host = opts.pop("account_host", None)
    if host:
        blob_endpoint = f"https://{host}"
    conn = opts.pop("connection_string", None)
    if conn:
        parts = _parse_connection_string(conn)
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            parts = {
                "accountname": _AZURITE_ACCOUNT,
                "accountkey": _AZURITE_KEY,
                "blobendpoint": f"http://127.0.0.1:10000/{_AZURITE_ACCOUNT}",
            }
        account = parts.get("accountname", account)
        key = parts.get("accountkey", key)
        sas = parts.get("sharedaccesssignature", sas)
        blob_endpoint = parts.get("blobendpoint", blob_endpoint)
        suffix = parts.get("endpointsuffix")
    service_principal = {k: opts.pop(k, None) for k in ("client_id", "client_secret", "tenant_id")}
    if not account or set(opts) - _NEUTRAL_OPTIONS:
        return None
    kwargs: dict[str, Any] = {"account_name": account}
    if key:
        kwargs["account_key"] = key
    elif sas:
        kwargs["sas_token"] = sas.lstrip("?")
    elif all(service_principal.values()):
        kwargs.update(service_principal)
    else:
        return None  # adlfs' credential chain and pyarrow's differ: let adlfs decide
    if blob_endpoint:
        parts_url = urlsplit(blob_endpoint)
        netloc = parts_url.netloc
        if netloc.lower() != f"{account}.blob.core.windows.net".lower():
            if netloc.lower().startswith(f"{account.lower()}."):
                authority = netloc[len(account) :]  # ".blob.<sovereign cloud>": host style
                dfs_authority = authority.replace(".blob.", ".dfs.", 1)
            else:
                authority = dfs_authority = netloc  # emulator: account in the path
            kwargs.update(
                blob_storage_authority=authority,
                blob_storage_scheme=parts_url.scheme or "https",
                # Azurite has no DFS endpoint; pyarrow's namespace probe must hit the
                # blob endpoint or it tries <account>.dfs.core.windows.net (STORES.md)
                dfs_storage_authority=dfs_authority,
                dfs_storage_scheme=parts_url.scheme or "https",
            )
    elif suffix:
        kwargs.update(
            blob_storage_authority=f".blob.{suffix}", dfs_storage_authority=f".dfs.{suffix}"
        )
    return pafs.AzureFileSystem(**kwargs)


def _parse_connection_string(conn: str) -> dict[str, str]:
    out = {}
    for item in conn.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


# -- resolving store forms -----------------------------------------------------

StoreLike = Any  # str | tuple[fs, root] | Store | Callable[[], StoreLike]

_MINIMALKV_SCHEMES = {"hfs": "file", "fs": "file", "hmemory": "memory"}


def resolve_store(
    store: StoreLike,
    storage_options: dict[str, Any] | None = None,
    *,
    single_writer: bool = False,
) -> Store:
    """Turn any store form of DESIGN §1 into a :class:`Store`.

    Besides URLs, ``(fs, root)`` tuples, Stores and factories, this accepts
    the minimalkv / simplekv store objects kartothek pipelines pass
    (``minimalkv.get_store_from_url("hfs:///data")``, ``FilesystemStore``,
    ``S3FSStore``, ``Boto3Store``, ``GoogleCloudStore``,
    ``AzureBlockBlobStore``, ``PrefixDecorator``): each becomes our native
    store for the same location and credentials, so commits keep their
    conditional writes.  One that names no location we can reach (an
    in-memory ``DictStore``, Redis, a key-transforming decorator) raises
    :class:`~ktk_arrow.errors.UnsupportedStoreError`.
    """
    if isinstance(store, Store):
        return store
    if isinstance(store, tuple) and len(store) == 2:
        fs, root = store
        if not isinstance(fs, fsspec.AbstractFileSystem) or not isinstance(root, str):
            raise InvalidArgumentError(
                f"a store tuple must be (fsspec.AbstractFileSystem, root path), got "
                f"({type(fs).__name__}, {type(root).__name__})"
            )
        return _from_filesystem(fs, root, single_writer=single_writer)
    if isinstance(store, (str, os.PathLike)):
        return _from_url(os.fspath(store), storage_options or {}, single_writer=single_writer)
    if _is_key_value_store(store):
        return _from_key_value_store(store, storage_options or {}, single_writer)
    if callable(store):
        produced = store()
        if (
            callable(produced)
            and not isinstance(produced, (Store, str, tuple))
            and not _is_key_value_store(produced)
        ):
            raise InvalidArgumentError("a store factory must return a store, not another factory")
        return _adapt_foreign(produced, storage_options, single_writer)
    raise InvalidArgumentError(
        f"cannot use {store!r} as a store; pass a URL such as 's3://bucket/prefix' or "
        "'/local/path', an (fsspec filesystem, root) tuple, a ktk_arrow Store, a "
        "minimalkv store, or a zero-argument callable returning one of these"
    )


def _adapt_foreign(obj: Any, storage_options: dict[str, Any] | None, single_writer: bool) -> Store:
    """Accept what a kartothek store factory returns, incl. minimalkv/simplekv stores."""
    if isinstance(obj, (Store, str, tuple, os.PathLike)):
        return resolve_store(obj, storage_options, single_writer=single_writer)
    if isinstance(obj, fsspec.AbstractFileSystem):
        raise InvalidArgumentError(
            f"a store factory returned a bare {type(obj).__name__}; return an "
            "(fsspec filesystem, root path) tuple so the store knows its root"
        )
    if _is_key_value_store(obj):
        return _from_key_value_store(obj, storage_options or {}, single_writer)
    raise UnsupportedStoreError(
        f"cannot use store object {type(obj).__name__!r}; pass its URL instead (e.g. "
        "'hs3://key:secret@endpoint/bucket', 'hazure://account:key@container', "
        "'hfs:///path', or 's3://bucket/prefix' with storage_options)"
    )


# -- minimalkv / simplekv store objects ------------------------------------------

_KV_PACKAGES = frozenset({"minimalkv", "simplekv", "storefact"})


def _kv_class_names(obj: Any) -> list[str]:
    """The class names of ``obj``'s minimalkv / simplekv ancestry, most derived first."""
    return [
        cls.__name__ for cls in type(obj).__mro__ if cls.__module__.split(".", 1)[0] in _KV_PACKAGES
    ]


def _is_key_value_store(obj: Any) -> bool:
    """A minimalkv / simplekv store or decorator (or one of their subclasses)."""
    if isinstance(obj, (Store, str, tuple, os.PathLike, fsspec.AbstractFileSystem)):
        return False
    return bool(_kv_class_names(obj))


def _unsupported_kv(obj: Any, why: str) -> UnsupportedStoreError:
    return UnsupportedStoreError(
        f"cannot use the {type(obj).__module__}.{type(obj).__name__} store: {why}"
    )


def _from_key_value_store(obj: Any, options: dict[str, Any], single_writer: bool) -> Store:
    """Our native store for the location a minimalkv / simplekv store object writes to."""
    names = _kv_class_names(obj)
    if "PrefixDecorator" in names:
        prefix = str(obj.prefix)
        if prefix and not prefix.endswith("/"):
            raise _unsupported_kv(
                obj,
                f"its prefix {prefix!r} does not end in '/', so its keys are not paths "
                "below a directory; use a prefix ending in '/' (or a URL or store for that "
                "directory)",
            )
        inner = _from_key_value_store(obj._dstore, options, single_writer)
        sub = prefix.strip("/")
        if not sub:
            return inner
        if isinstance(inner, LocalStore):
            return LocalStore(os.path.join(inner.root, sub), single_writer=single_writer)
        return _from_filesystem(inner.fs, _join(inner.root, sub), single_writer=single_writer)
    if "StoreDecorator" in names:
        raise _unsupported_kv(
            obj,
            "ktk-arrow reads and writes the store's files directly and cannot honour what "
            "the decorator does to keys or writes; pass the undecorated store (or its URL)",
        )
    if "FilesystemStore" in names:
        return LocalStore(str(obj.root), single_writer=single_writer)
    if "S3FSStore" in names or "Boto3Store" in names:
        return _s3_from_key_value_store(obj, names, options, single_writer)
    if "GoogleCloudStore" in names:
        gcsfs = _import_gcsfs()
        from_obj: dict[str, Any] = {}
        if obj._credentials is not None:
            from_obj["token"] = obj._credentials
        if obj.project_name:
            from_obj["project"] = obj.project_name
        fs = gcsfs.GCSFileSystem(**_fs_options(from_obj, options))
        return _gcs_store(fs, str(obj.bucket_name), single_writer)
    if "AzureBlockBlobStore" in names:
        if not obj.conn_string or not obj.container:
            raise _unsupported_kv(obj, "it has no connection string or no container")
        adlfs = import_optional("adlfs", extra="azure")
        fs = adlfs.AzureBlobFileSystem(
            **_fs_options({"connection_string": obj.conn_string}, options)
        )
        return _azure_store(fs, str(obj.container), single_writer)
    if "FSSpecStore" in names:
        prefix = str(obj._prefix)
        if prefix and not prefix.endswith("/"):
            raise _unsupported_kv(
                obj, f"its prefix {prefix!r} does not end in '/'; use a prefix ending in '/'"
            )
        # the filesystem it would create (no request is made), not the lazy ._fs,
        # which checks and creates the prefix
        fs = obj._custom_fs if obj._custom_fs is not None else obj._create_filesystem()
        return _from_filesystem(fs, prefix.rstrip("/"), single_writer=single_writer)
    if any(n in names for n in ("DictStore", "MemcacheStore", "RedisStore")):
        raise _unsupported_kv(
            obj,
            "it keeps its data in this process or a key-value server, where Arrow cannot "
            "read it and no conditional write exists; use a directory, an object store, or "
            "'memory://name' (ktk_arrow's in-process store) for tests",
        )
    raise _unsupported_kv(
        obj,
        "ktk-arrow does not know where it keeps its data; pass the store's URL instead "
        "(e.g. 'hfs:///path', 'hs3://key:secret@endpoint/bucket', "
        "'hazure://account:key@container', or 's3://bucket/prefix' with storage_options)",
    )


def _s3_from_key_value_store(
    obj: Any, names: list[str], options: dict[str, Any], single_writer: bool
) -> Store:
    """minimalkv's ``S3FSStore`` (``s3://`` / ``hs3://`` URLs) and ``Boto3Store``."""
    bucket = str(obj.bucket.name)
    prefix = str(obj.object_prefix if "S3FSStore" in names else obj._object_prefix)
    if prefix and not prefix.endswith("/"):
        raise _unsupported_kv(
            obj,
            f"its object_prefix {prefix!r} does not end in '/', so its keys are not paths "
            "below a directory; use an object_prefix ending in '/'",
        )
    root = _join(bucket, prefix.strip("/"))
    if "S3FSStore" in names and getattr(obj, "_custom_fs", None) is not None:
        return _s3_store(obj._custom_fs, root, single_writer)
    if "S3FSStore" in names and getattr(obj, "_is_sts_credentials", False):
        # refreshable assumed-role credentials live in minimalkv's session: use its s3fs
        return _s3_store(obj._create_filesystem(), root, single_writer)
    client = obj.bucket.meta.client
    from_obj: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    if "S3FSStore" in names:
        creds = obj.credentials
        key, secret, token = (
            (creds.access_key_id, creds.secret_access_key, creds.session_token)
            if creds is not None
            else (None, None, None)
        )
        region = obj.region_name
        if not obj.verify:
            client_kwargs["verify"] = False
    else:  # Boto3Store: the credentials of the bucket's boto3 client
        key, secret, token = _boto3_static_credentials(client)
        region = client.meta.region_name
    if key and secret:
        from_obj.update(key=key, secret=secret)
        if token:
            from_obj["token"] = token
    endpoint = client.meta.endpoint_url
    if endpoint and not _is_aws_endpoint(endpoint):
        client_kwargs["endpoint_url"] = endpoint
        region = region or client.meta.region_name
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        from_obj["client_kwargs"] = client_kwargs
    s3fs = import_optional("s3fs", extra="s3")
    fs = s3fs.S3FileSystem(**_fs_options(from_obj, options))
    return _s3_store(fs, root, single_writer)


def _is_aws_endpoint(url: str) -> bool:
    """boto3 always reports an endpoint; AWS's own needs none (s3fs finds the region)."""
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _boto3_static_credentials(client: Any) -> tuple[str | None, str | None, str | None]:
    """Explicit or static credentials of a boto3 client, else none (s3fs's own chain).

    Refreshable credentials (assumed roles, SSO, instance profiles) are not
    frozen into the store: s3fs finds them through the same default chain.
    """
    signer = getattr(client, "_request_signer", None)
    creds = getattr(signer, "_credentials", None)
    if creds is None or getattr(creds, "method", None) not in (
        "explicit",
        "env",
        "shared-credentials-file",
        "config-file",
    ):
        return None, None, None
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def _from_url(url: str, storage_options: dict[str, Any], *, single_writer: bool) -> Store:
    if "://" not in url:
        if not url:
            raise InvalidArgumentError("store URL is empty; pass a path or URL")
        return LocalStore(url, single_writer=single_writer)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    scheme = _MINIMALKV_SCHEMES.get(scheme, scheme)
    if scheme == "file":
        path = parts.netloc + parts.path if parts.netloc not in ("", "localhost") else parts.path
        return LocalStore(unquote(path), single_writer=single_writer)
    if scheme == "memory":
        return MemoryStore(parts.netloc + parts.path, single_writer=single_writer)
    factory = _REMOTE_FACTORIES.get(scheme)
    if factory is None and scheme in fsspec.available_protocols():
        factory = _generic_from_url  # readable; writable only in single-writer mode
    if factory is None:
        raise UnsupportedStoreError(
            f"unknown store scheme {parts.scheme!r} in {_strip_secret(url)!r}; use one of "
            "file://, memory://, s3://, gs://, abfs:// (or hfs://, hs3://, hazure://)"
        )
    try:
        return factory(url, storage_options, single_writer)
    except (StoreError, UnsupportedStoreError, InvalidArgumentError, ImportError):
        raise
    except Exception as exc:  # the backend constructor failed
        secrets = _secret_values(storage_options) | _url_secrets(parts)
        raise StoreError(
            f"could not open store {_strip_secret(url)!r} with options "
            f"{redact(storage_options)}: {_scrub(f'{type(exc).__name__}: {exc}', secrets)}"
        ) from exc


def _from_filesystem(fs: fsspec.AbstractFileSystem, root: str, *, single_writer: bool) -> Store:
    proto = _protocol(fs)
    root = fs._strip_protocol(root) if root else ""
    if proto in ("file", "local"):
        return LocalStore(root, single_writer=single_writer)
    if proto == "memory":
        return MemoryStore(root, single_writer=single_writer)
    factory = _FS_FACTORIES.get(proto)
    if factory is not None:
        return factory(fs, root, single_writer)
    return Store(fs, root, single_writer=single_writer)


# -- remote factories ----------------------------------------------------------


def _generic_from_url(url: str, options: dict[str, Any], single_writer: bool) -> Store:
    """Any other fsspec URL (``http://``, ``sftp://``, ...): no atomic put-if-absent."""
    fs, root = fsspec.core.url_to_fs(url, **options)
    store = _from_filesystem(fs, root, single_writer=single_writer)
    if type(store) is Store:
        store.url = _strip_secret(url)
        store._url_secrets = _url_secrets(urlsplit(url))
    return store


def _s3_from_url(url: str, options: dict[str, Any], single_writer: bool) -> Store:
    """``s3://bucket/prefix`` or minimalkv's ``hs3://key:secret@endpoint/bucket``."""
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.scheme.lower() in ("hs3", "boto"):
        bucket, prefix, url_options = _minimalkv_s3(parts)
    else:
        bucket, prefix = parts.netloc, parts.path.strip("/")
        url_options = {}
    if not bucket:
        raise InvalidArgumentError(f"store URL {_strip_secret(url)!r} names no bucket")
    s3fs = import_optional("s3fs", extra="s3")
    fs = s3fs.S3FileSystem(**_fs_options(url_options, options))
    return _s3_store(fs, _join(bucket, prefix), single_writer)


def _minimalkv_s3(parts: SplitResult) -> tuple[str, str, dict[str, Any]]:
    """Parse minimalkv's S3 URL the way ``minimalkv.get_store_from_url`` does.

    ``hs3://access_key:secret_key@endpoint/bucket?is_secure=false&region_name=...``;
    like minimalkv, ``force_bucket_suffix`` (default true) appends
    ``-<access_key>`` to the bucket so the URL reaches the same data.
    """
    user, password, host = _userinfo(parts.netloc)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    bucket, _, prefix = parts.path.strip("/").partition("/")
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if user:
        options["key"] = user
    if password:
        options["secret"] = password
    if query.get("session_token"):
        options["token"] = query["session_token"]
    if host:
        secure = query.get("is_secure", "true").lower() == "true"
        client["endpoint_url"] = f"{'https' if secure else 'http'}://{host}"
    if query.get("region_name"):
        client["region_name"] = query["region_name"]
    if query.get("verify", "true").lower() == "false":
        client["verify"] = False
    if client:
        options["client_kwargs"] = client
    if query.get("force_bucket_suffix", "true").lower() == "true" and bucket:
        access_key = user or os.environ.get("AWS_ACCESS_KEY_ID")
        if not access_key:
            raise InvalidArgumentError(
                "minimalkv S3 URLs append '-<access key>' to the bucket name, but the URL "
                "has no access key and AWS_ACCESS_KEY_ID is unset; add the key or "
                "'?force_bucket_suffix=false'"
            )
        if not bucket.lower().endswith("-" + access_key.lower()):
            bucket = f"{bucket}-{access_key.lower()}"
    return bucket, prefix, options


def _s3_store(fs: fsspec.AbstractFileSystem, root: str, single_writer: bool) -> Store:
    return S3Store(fs, root, url=f"s3://{root}", single_writer=single_writer)


def _gcs_from_url(url: str, options: dict[str, Any], single_writer: bool) -> Store:
    """``gs://bucket/prefix`` or minimalkv's ``hgcs://<base64 credentials JSON>@bucket``."""
    parts = urlsplit(url)
    url_options: dict[str, Any] = {}
    if "@" in parts.netloc:
        creds, bucket = parts.netloc.rsplit("@", 1)
        try:
            token = json.loads(base64.urlsafe_b64decode(unquote(creds).encode()))
        except ValueError as exc:
            raise InvalidArgumentError(
                "the credentials in a minimalkv GCS URL must be base64-encoded JSON"
            ) from exc
        url_options["token"] = token
        if isinstance(token, dict) and token.get("project_id"):
            url_options["project"] = token["project_id"]
    else:
        bucket = parts.netloc
    if not bucket:
        raise InvalidArgumentError(f"store URL {_strip_secret(url)!r} names no bucket")
    gcsfs = _import_gcsfs()
    fs = gcsfs.GCSFileSystem(**_fs_options(url_options, options))
    return _gcs_store(fs, _join(bucket, parts.path.strip("/")), single_writer)


def _gcs_store(fs: fsspec.AbstractFileSystem, root: str, single_writer: bool) -> Store:
    return GCSStore(fs, root, url=f"gs://{root}", single_writer=single_writer)


def _import_gcsfs() -> Any:
    # gcsfs >= 2026 defaults to a gRPC bucket-type probe that stalls 60 s per call
    # against plain HTTP endpoints (emulators, proxies); the JSON API is what we use.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return import_optional("gcsfs", extra="gcs")


def _azure_from_url(url: str, options: dict[str, Any], single_writer: bool) -> Store:
    """``abfs://container/prefix``, ``abfs://container@account.dfs.core.windows.net/prefix``
    or minimalkv's ``hazure://account_name:account_key@container[?use_sas]``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    url_options: dict[str, Any] = {}
    if scheme in ("hazure", "azure"):
        account, secret, container = _userinfo(parts.netloc)
        query = parse_qs(parts.query, keep_blank_values=True)
        if account:
            url_options["account_name"] = account
        if secret:
            url_options["sas_token" if "use_sas" in query else "account_key"] = secret
    elif "@" in parts.netloc:
        container, host = parts.netloc.split("@", 1)
        account = host.split(".", 1)[0]
        if account and ".core." in host:
            url_options["account_name"] = account
    else:
        container = parts.netloc
    if not container:
        raise InvalidArgumentError(f"store URL {_strip_secret(url)!r} names no container")
    adlfs = import_optional("adlfs", extra="azure")
    fs = adlfs.AzureBlobFileSystem(**_fs_options(url_options, options))
    return _azure_store(fs, _join(container, parts.path.strip("/")), single_writer)


def _azure_store(fs: fsspec.AbstractFileSystem, root: str, single_writer: bool) -> Store:
    return AzureStore(fs, root, url=f"abfs://{root}", single_writer=single_writer)


def _fs_options(from_url: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Merge URL-derived and user options (user wins, dicts merged one level deep)."""
    out = dict(from_url)
    for name, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = {**out[name], **value}
        else:
            out[name] = value
    out.setdefault("use_listings_cache", False)  # see _ObjectStore: never answer from a cache
    return out


def _join(container: str, prefix: str) -> str:
    return f"{container}/{prefix}" if prefix else container


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:password@host`` -> (user, password, host), percent-decoded like minimalkv."""
    if "@" not in netloc:
        return None, None, netloc
    info, host = netloc.rsplit("@", 1)
    user, sep, password = info.partition(":")
    return unquote(user) or None, (unquote(password) or None) if sep else None, host


# -- helpers -------------------------------------------------------------------


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


def _strip_secret(url: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)
    return url.split("?", 1)[0]


def _url_secrets(parts: SplitResult) -> frozenset[str]:
    user, password, _ = _userinfo(parts.netloc)
    found = {s for s in (password,) if s}
    if user and parts.scheme.lower() in ("hgcs", "gcs", "gs"):
        found.add(user)  # the whole credentials JSON
    for name, values in parse_qs(parts.query).items():
        if any(hint in name.lower() for hint in ("token", "secret", "key", "sig")):
            found.update(values)
    return frozenset(found)


def _secret_values(options: Mapping[str, Any]) -> frozenset[str]:
    """Every value of ``options`` that :func:`redact` hides, as strings to scrub."""
    found: set[str] = set()

    def walk(original: Mapping[str, Any], redacted: Mapping[str, Any]) -> None:
        for name, value in original.items():
            if isinstance(value, Mapping):
                walk(value, redacted.get(name) or {})
            elif redacted.get(name) == "***" and isinstance(value, (str, bytes)):
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                found.add(text)
                if "=" in text and ";" in text:  # a connection string: its parts, too
                    found.update(v for v in _parse_connection_string(text).values())

    walk(options, redact(options))
    return frozenset(s for s in found if len(s) >= 4)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return text


def _mtime(info: dict[str, Any]) -> datetime | None:
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _check_key(key: str) -> None:
    if key.startswith("/") or "\\" in key or any(p in ("..", ".") for p in key.split("/")):
        raise InvalidArgumentError(f"invalid store key {key!r}: keys are relative and plain")


# Remote backends register themselves here: scheme -> factory(url, options, single_writer)
_REMOTE_FACTORIES: dict[str, Callable[[str, dict[str, Any], bool], Store]] = {
    "s3": _s3_from_url,
    "s3a": _s3_from_url,
    "hs3": _s3_from_url,
    "boto": _s3_from_url,
    "gs": _gcs_from_url,
    "gcs": _gcs_from_url,
    "hgcs": _gcs_from_url,
    "abfs": _azure_from_url,
    "abfss": _azure_from_url,
    "az": _azure_from_url,
    "hazure": _azure_from_url,
    "azure": _azure_from_url,
}
# and protocol -> factory(fs, root, single_writer) for (fs, root) tuples.
_FS_FACTORIES: dict[str, Callable[[fsspec.AbstractFileSystem, str, bool], Store]] = {
    "s3": _s3_store,
    "s3a": _s3_store,
    "gs": _gcs_store,
    "gcs": _gcs_store,
    "abfs": _azure_store,
    "abfss": _azure_store,
    "az": _azure_store,
}
