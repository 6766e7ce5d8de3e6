"""The only code that talks to fsspec / pyarrow.fs.

A :class:`Store` is a key -> bytes mapping rooted at a prefix of a filesystem,
with the one primitive the committer needs: :meth:`Store.put_if_absent`.
Keys are always ``/``-separated and relative to the store root, exactly as
they appear in kartothek metadata (``sales/table/country=DE/abc.parquet``).

Backend errors are translated here, once: a missing key is
``FileNotFoundError``, everything else the backend raises is a
:class:`~ktk_arrow.errors.StoreError` chaining the original.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import fsspec
import pyarrow.fs as pafs

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

    def exists(self, key: str) -> bool:
        with self._translate(key):
            return bool(self.fs.exists(self.path(key)))

    def size(self, key: str) -> int:
        with self._translate(key):
            return int(self.fs.size(self.path(key)))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with the directory ``prefix`` (recursive)."""
        base = self.path(prefix.rstrip("/")) if prefix else self.root
        with self._translate(prefix):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return iter(())
        infos = []
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            infos.append(ObjectInfo(self.key_of(path), int(info.get("size") or 0), _mtime(info)))
        infos.sort(key=lambda i: i.key)
        return iter(infos)

    # -- writing ------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whole, replacing it; readers never see a partial object."""
        with self._translate(key):
            self.fs.pipe_file(self.path(key), data)

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
        paths = [self.path(k) for k in keys]
        if not paths:
            return
        with self._translate(paths[0]):
            try:
                self.fs.rm(paths)
            except FileNotFoundError:
                for p in paths:
                    try:
                        self.fs.rm_file(p)
                    except FileNotFoundError:
                        pass

    # -- arrow --------------------------------------------------------------
    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem on which ``self.path(key)`` opens ``key``."""
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @property
    def is_remote(self) -> bool:
        return False

    # -- helpers ------------------------------------------------------------
    def _translate(self, key: str) -> _Translate:
        return _Translate(self, key)


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
            raise StoreError(
                f"store {self.store.url!r} failed on key {self.key!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return False


class LocalStore(Store):
    """A directory on local disk; put-if-absent is ``os.link`` of a fully written temp file."""

    conditional_writes = True

    def __init__(self, root: str, **kwargs: Any) -> None:
        root = os.path.abspath(os.path.expanduser(root))
        super().__init__(fsspec.filesystem("file"), root, url=f"file://{root}", **kwargs)

    def put(self, key: str, data: bytes) -> None:
        # write + fsync + replace: readers of the final name see old or new, never half.
        path = self.path(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self.path(key)
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
            raise FileNotFoundError(self.path(key)) from exc

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def _write_temp(self, path: str, data: bytes) -> str:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
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


StoreLike = Any  # str | tuple[fs, root] | Store | Callable[[], StoreLike]

_MINIMALKV_SCHEMES = {"hfs": "file", "hmemory": "memory", "hs3": "s3", "hazure": "abfs"}


def resolve_store(
    store: StoreLike,
    storage_options: dict[str, Any] | None = None,
    *,
    single_writer: bool = False,
) -> Store:
    """Turn any store form of DESIGN §1 into a :class:`Store`."""
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
    if callable(store):
        produced = store()
        if callable(produced) and not isinstance(produced, (Store, str, tuple)):
            raise InvalidArgumentError("a store factory must return a store, not another factory")
        return _adapt_foreign(produced, storage_options, single_writer)
    raise InvalidArgumentError(
        f"cannot use {store!r} as a store; pass a URL such as 's3://bucket/prefix' or "
        "'/local/path', an (fsspec filesystem, root) tuple, a ktk_arrow Store, or a "
        "zero-argument callable returning one of these"
    )


def _adapt_foreign(obj: Any, storage_options: dict[str, Any] | None, single_writer: bool) -> Store:
    """Accept what a kartothek store factory returns, incl. minimalkv/simplekv stores."""
    if isinstance(obj, (Store, str, tuple, os.PathLike)):
        return resolve_store(obj, storage_options, single_writer=single_writer)
    # minimalkv / simplekv filesystem and memory stores
    root = getattr(obj, "root", None)
    if isinstance(root, str) and type(obj).__name__ in {"FilesystemStore", "WebFilesystemStore"}:
        return LocalStore(root, single_writer=single_writer)
    raise UnsupportedStoreError(
        f"cannot use store object {type(obj).__name__!r}; pass a URL (e.g. 'hs3://...' or "
        "'s3://bucket/prefix') instead of a minimalkv store object"
    )


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
        return LocalStore(path, single_writer=single_writer)
    if scheme == "memory":
        return MemoryStore(parts.netloc + parts.path, single_writer=single_writer)
    factory = _REMOTE_FACTORIES.get(scheme)
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
        raise StoreError(
            f"could not open store {_strip_secret(url)!r} with options "
            f"{redact(storage_options)}: {type(exc).__name__}: {exc}"
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


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


def _strip_secret(url: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1])
    return url.split("?", 1)[0]


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
_REMOTE_FACTORIES: dict[str, Callable[[str, dict[str, Any], bool], Store]] = {}
# and protocol -> factory(fs, root, single_writer) for (fs, root) tuples.
_FS_FACTORIES: dict[str, Callable[[fsspec.AbstractFileSystem, str, bool], Store]] = {}
