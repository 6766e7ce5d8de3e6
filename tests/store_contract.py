"""The behaviour every :class:`ktk_arrow.storage.Store` backend must have.

Like zarr-python's ``StoreTests``: a backend's test module subclasses
:class:`StoreContract` and provides ``store_spec`` (``(url, storage_options)``
of a fresh, empty store), and, for network stores, ``unreachable_store``
(a store on a closed port and the secret in its options).
"""

from __future__ import annotations

import io
import multiprocessing
import pickle
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ktk_arrow.errors import InvalidArgumentError, StoreError
from ktk_arrow.storage import Store, resolve_store

# url-quoted partition values as ktk-arrow writes them, plus raw oddities
SPECIAL_KEYS = [
    "ds/table/country=US%2FCA/part-0.parquet",
    "ds/table/v=100%25 sure/a b.parquet",
    "ds/table/city=M%C3%BCnchen/x=a%3Db/f.parquet",
    "ds/raw/ünïcödé/日本語 key.bin",
    "ds/raw/plus+tilde~quote'paren(1)/x.bin",
]

RACERS = 8


def _race_in_process(
    url: str,
    options: dict[str, Any],
    key: str,
    payload: bytes,
    barrier: Any,
    results: Any,
) -> None:
    """One racer: its own Store from URL + options, then put_if_absent at the barrier."""
    try:
        store = resolve_store(url, options)
        store.exists("warm-up")  # connect before the start signal
        barrier.wait(timeout=60)
        results.put((payload, store.put_if_absent(key, payload)))
    except BaseException as exc:
        results.put((payload, repr(exc)))


def _race_context() -> Any:
    """Fresh processes (no inherited event loops or sockets) that start fast.

    A forkserver imports the heavy modules once; each racer forks from it.
    (It cannot preload this module: Python < 3.12 ignores sys.path there.)
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["ktk_arrow.storage", "pyarrow.parquet", "pytest", "s3fs", "gcsfs", "adlfs"]
    )
    return ctx


class StoreContract:
    """Every store behaviour, tested once, run on every backend."""

    #: the pyarrow filesystem class ``arrow_filesystem()`` should return.
    arrow_filesystem_type: type[pafs.FileSystem] | None = None
    is_remote = False

    @pytest.fixture
    def store_spec(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError("subclasses return (url, storage_options) of a fresh store")

    @pytest.fixture
    def store(self, store_spec: tuple[str, dict[str, Any]]) -> Store:
        url, options = store_spec
        return resolve_store(url, dict(options))

    # -- reading and writing ------------------------------------------------
    def test_put_get_round_trip(self, store: Store) -> None:
        store.put("a/b.bin", b"\x00payload\xff")
        assert store.get("a/b.bin") == b"\x00payload\xff"

    def test_empty_object_round_trips(self, store: Store) -> None:
        store.put("empty", b"")
        assert store.get("empty") == b""
        assert store.size("empty") == 0
        assert store.exists("empty")

    def test_get_missing_raises_file_not_found(self, store: Store) -> None:
        with pytest.raises(FileNotFoundError):
            store.get("nope/missing.json")

    def test_get_or_none(self, store: Store) -> None:
        assert store.get_or_none("missing") is None
        store.put("present", b"x")
        assert store.get_or_none("present") == b"x"

    def test_exists_is_true_for_objects_only(self, store: Store) -> None:
        assert not store.exists("dir/obj")
        store.put("dir/obj", b"1")
        assert store.exists("dir/obj")
        assert not store.exists("dir")  # a prefix is not an object
        assert not store.exists("dir/ob")

    def test_size(self, store: Store) -> None:
        store.put("sized", b"12345")
        assert store.size("sized") == 5
        with pytest.raises(FileNotFoundError):
            store.size("unsized")

    def test_put_overwrites(self, store: Store) -> None:
        store.put("k", b"old")
        store.put("k", b"new value")
        assert store.get("k") == b"new value"
        assert store.size("k") == len(b"new value")

    def test_large_object_round_trips(self, store: Store) -> None:
        data = bytes(range(256)) * (6 * 4096)  # 6 MiB: above the clients' part sizes
        store.put("big.bin", data)
        assert store.get("big.bin") == data

    # -- listing --------------------------------------------------------------
    def test_list_is_recursive_with_sizes_and_mtimes(self, store: Store) -> None:
        before = datetime.now(timezone.utc) - timedelta(minutes=5)
        store.put("t/p=1/a.parquet", b"aaa")
        store.put("t/p=2/deep/b.parquet", b"bb")
        store.put("other.json", b"{}")
        listed = list(store.list())
        assert [i.key for i in listed] == ["other.json", "t/p=1/a.parquet", "t/p=2/deep/b.parquet"]
        assert [i.size for i in listed] == [2, 3, 2]
        for info in listed:
            assert info.mtime is not None and info.mtime.tzinfo is not None
            assert before <= info.mtime <= datetime.now(timezone.utc) + timedelta(minutes=5)
        assert [i.key for i in store.list("t")] == ["t/p=1/a.parquet", "t/p=2/deep/b.parquet"]
        assert [i.key for i in store.list("t/")] == ["t/p=1/a.parquet", "t/p=2/deep/b.parquet"]
        assert [i.key for i in store.list("t/p=2")] == ["t/p=2/deep/b.parquet"]

    def test_list_prefix_is_a_directory_not_a_string_prefix(self, store: Store) -> None:
        store.put("ab/x", b"1")
        store.put("a/y", b"2")
        assert [i.key for i in store.list("a")] == ["a/y"]

    def test_list_of_missing_prefix_is_empty(self, store: Store) -> None:
        assert list(store.list("never/written")) == []
        assert list(store.list()) == []

    # -- deleting ---------------------------------------------------------------
    def test_delete(self, store: Store) -> None:
        store.put("gone", b"x")
        store.delete("gone")
        assert not store.exists("gone")
        assert store.get_or_none("gone") is None
        store.delete("gone")  # missing is fine
        store.delete("never/was")

    def test_delete_many(self, store: Store) -> None:
        keys = [f"d/{i}.bin" for i in range(5)]
        for key in keys:
            store.put(key, b"x")
        store.put("d/keep.bin", b"k")
        store.delete_many([*keys, "d/missing.bin"])
        assert [i.key for i in store.list("d")] == ["d/keep.bin"]
        store.delete_many([])
        store.delete_many(iter(["d/missing.bin"]))

    # -- put-if-absent ------------------------------------------------------------
    def test_put_if_absent_creates_once(self, store: Store) -> None:
        assert store.conditional_writes
        assert store.put_if_absent("log/00000001.json", b"first") is True
        assert store.put_if_absent("log/00000001.json", b"second") is False
        assert store.get("log/00000001.json") == b"first"

    def test_put_if_absent_race_threads(
        self, store: Store, store_spec: tuple[str, dict[str, Any]]
    ) -> None:
        url, options = store_spec
        stores = [resolve_store(url, dict(options)) for _ in range(RACERS)]
        barrier = threading.Barrier(RACERS)
        results: dict[bytes, bool] = {}

        def race(racer: Store, payload: bytes) -> None:
            barrier.wait(timeout=30)
            results[payload] = racer.put_if_absent("race/thread", payload)

        threads = [
            threading.Thread(target=race, args=(s, f"writer-{i}".encode()))
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [p for p, won in results.items() if won]
        assert len(results) == RACERS
        assert len(winners) == 1, results
        assert store.get("race/thread") == winners[0]

    # -- keys -------------------------------------------------------------------------
    @pytest.mark.parametrize("key", SPECIAL_KEYS)
    def test_special_character_keys_round_trip(self, store: Store, key: str) -> None:
        store.put(key, b"v")
        assert store.get(key) == b"v"
        assert store.exists(key)
        assert [i.key for i in store.list("ds")] == [key]
        assert store.put_if_absent(key, b"w") is False
        store.delete(key)
        assert not store.exists(key)

    @pytest.mark.parametrize("key", ["/abs", "../up", "a/../b", "a/./b", "a\\b"])
    def test_invalid_keys_are_rejected(self, store: Store, key: str) -> None:
        with pytest.raises(InvalidArgumentError):
            store.get(key)

    # -- arrow ------------------------------------------------------------------------
    @pytest.mark.parametrize("key", [SPECIAL_KEYS[0], SPECIAL_KEYS[1], SPECIAL_KEYS[3]])
    def test_arrow_filesystem_opens_path_of_key(self, store: Store, key: str) -> None:
        table = pa.table({"x": [1, 2, 3], "s": ["a", "b", None]})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        store.put(key, sink.getvalue())
        fs = store.arrow_filesystem()
        if self.arrow_filesystem_type is not None:
            assert isinstance(fs, self.arrow_filesystem_type)
        with fs.open_input_file(store.path(key)) as f:
            assert f.read() == sink.getvalue()
        assert pq.read_table(store.path(key), filesystem=fs).equals(table)
        assert fs.get_file_info(store.path(key)).size == len(sink.getvalue())

    def test_is_remote(self, store: Store) -> None:
        assert store.is_remote is self.is_remote

    # -- identity ----------------------------------------------------------------------
    def test_pickles_and_works_after_unpickling(self, store: Store) -> None:
        store.put("before", b"1")
        clone = pickle.loads(pickle.dumps(store))
        assert clone.url == store.url
        assert clone.get("before") == b"1"
        clone.put("after", b"2")
        assert store.get("after") == b"2"
        assert clone.put_if_absent("before", b"x") is False

    def test_separate_stores_see_each_others_writes_at_once(
        self, store: Store, store_spec: tuple[str, dict[str, Any]]
    ) -> None:
        # a second Store on a filesystem instance of its own with listing caches on,
        # as a user's (fs, root) tuple would bring
        fs = type(store.fs)(
            **{**store.fs.storage_options, "use_listings_cache": True, "skip_instance_cache": True}
        )
        other = resolve_store((fs, store.root))
        assert type(other) is type(store)
        assert list(other.list()) == []
        assert not other.exists("shared/k")
        assert other.get_or_none("shared/k") is None
        store.put("shared/k", b"one")
        assert other.exists("shared/k")
        assert other.get("shared/k") == b"one"
        assert [i.key for i in other.list()] == ["shared/k"]
        store.put("shared/k", b"three")
        assert other.size("shared/k") == 5
        assert other.get("shared/k") == b"three"
        assert other.put_if_absent("shared/k", b"x") is False
        store.delete("shared/k")
        assert not other.exists("shared/k")
        assert list(other.list("shared")) == []
        other.put("shared/back", b"b")
        assert store.get("shared/back") == b"b"
        assert [i.key for i in store.list()] == ["shared/back"]


class CrossProcessContract:
    """For stores that several processes share: put-if-absent must hold across them."""

    def test_put_if_absent_race_processes(self, store_spec: tuple[str, dict[str, Any]]) -> None:
        url, options = store_spec
        ctx = _race_context()
        barrier = ctx.Barrier(RACERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_race_in_process,
                args=(url, options, "race/process", f"proc-{i}".encode(), barrier, results),
            )
            for i in range(RACERS)
        ]
        for p in procs:
            p.start()
        outcome = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert all(isinstance(won, bool) for won in outcome.values()), outcome
        winners = [p for p, won in outcome.items() if won]
        assert len(winners) == 1, outcome
        assert resolve_store(url, dict(options)).get("race/process") == winners[0]


class NetworkStoreContract:
    """For stores behind a network: failures become StoreError, secrets stay out.

    Subclasses provide ``unreachable_store``: ``(store on a closed port, its secret)``.
    """

    def test_unreachable_store_raises_store_error_without_secret(
        self, unreachable_store: tuple[Store, str]
    ) -> None:
        store, secret = unreachable_store
        for action in (
            lambda: store.get("k"),
            lambda: store.put_if_absent("k", b"x"),
            lambda: list(store.list()),
        ):
            with pytest.raises(StoreError) as info:
                action()
            assert info.value.__cause__ is not None
            assert "connect" in str(info.value).lower()  # says what went wrong
            assert secret not in str(info.value)
            assert secret not in repr(info.value)
            assert store.url in str(info.value)
        assert secret not in repr(store) and secret not in store.url
