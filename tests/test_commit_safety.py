"""No committed data lost: racing first writes, killed creators, expiry behind a lagging
view, damaged logs, gc beside writers.  Real processes and SIGKILL on every store that
several processes share; the faults of a lossy network are in ``test_commit_faults.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import subprocess
import sys
import textwrap
import threading
from functools import partial

import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.spec import keys
from ktk_arrow.storage import LocalStore, Store

ZERO = dt.timedelta(0)


def later(hours: float = 2) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)


def frame(writer: int, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"part": ["a", "b"][:n], "writer": [writer] * n, "row": list(range(n))})


def writers_seen(store: Store) -> list[int]:
    return sorted(ka.dataset(store, "ds").to_table().column("writer").to_pylist())


def plateau_rows(url: str, options: dict) -> int:
    """Rows plateau reads through the view (only on local disk: hfs://)."""
    from minimalkv import get_store_from_url
    from plateau.io.eager import read_table

    return len(read_table("ds", partial(get_store_from_url, f"hfs://{url}")))


# -- racing first writes ------------------------------------------------------------


def _first_write(url: str, options: dict, writer: int, mode: str, barrier, results) -> None:
    store = ka.resolve_store(url, options)
    barrier.wait()
    try:
        snap = ka.write_dataset(frame(writer), store, "ds", mode=mode, partition_on=["part"])
        results.put((writer, "ok", snap.version))
    except ka.KtkError as exc:
        results.put((writer, type(exc).__name__, str(exc)))


def _race(url: str, options: dict, mode: str, n: int) -> list[tuple]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_first_write, args=(url, options, w, mode, barrier, results))
        for w in range(n)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sorted(out)


@pytest.mark.parametrize("mode", ["append", "create"])
def test_racing_first_writes(shared_url_and_options, mode):
    """Appends to a missing dataset all land; of racing creates exactly one wins."""
    url, options = shared_url_and_options
    n = 4
    out = _race(url, dict(options), mode, n)
    store = ka.resolve_store(url, dict(options))
    if mode == "append":
        assert [r[1] for r in out] == ["ok"] * n, out
        assert sorted(r[2] for r in out) == list(range(n))
        assert writers_seen(store) == sorted([w for w in range(n) for _ in range(2)])
    else:
        winners = [r for r in out if r[1] == "ok"]
        assert len(winners) == 1, out
        assert winners[0][2] == 0
        assert {r[1] for r in out if r[1] != "ok"} == {"DatasetExistsError"}
        assert writers_seen(store) == [winners[0][0]] * 2
    assert [s.version for s in ka.history(store, "ds")] == list(range(n if mode == "append" else 1))


_SLOW_CREATOR = textwrap.dedent(
    """
    import json, sys, time
    import pandas as pd
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options, flag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    real = commit._publish
    def slow(*args, **kwargs):
        open(flag, "w").close()   # log entry 0 is in, view and _common_metadata not yet
        time.sleep(4)
        real(*args, **kwargs)
    commit._publish = slow
    df = pd.DataFrame({"part": ["a", "b"], "writer": [100, 100], "row": [0, 1]})
    print(ka.write_dataset(df, url, "ds", mode="create", partition_on=["part"],
                           storage_options=options).version)
    """
)


def test_writers_after_log_entry_0_but_before_the_view_see_the_dataset(tmp_path):
    """The window that let a second create succeed and an append re-create the dataset."""
    url = str(tmp_path / "store")
    flag = tmp_path / "entry0-written"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CREATOR, url, "{}", str(flag)], stdout=subprocess.PIPE
    )
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=120)
        while not flag.exists():
            assert dt.datetime.now() < deadline and proc.poll() is None
            threading.Event().wait(0.02)
        store = LocalStore(url)
        assert not store.exists(keys.metadata_key("ds"))
        assert not store.exists(keys.common_metadata_key("ds"))
        assert ka.dataset(store, "ds").version == 0  # the log decides
        with pytest.raises(ka.DatasetExistsError):
            ka.write_dataset(frame(1), store, "ds", mode="create", partition_on=["part"])
        assert ka.write_dataset(frame(2), store, "ds", mode="append").version == 1
        # an append that meant to create, with another layout, conflicts instead of mixing
        with pytest.raises(ka.CommitConflictError, match="partition_on"):
            schema = pa.schema([("part", pa.string()), ("row", pa.int64())])
            change = commit.Change("append", schema=schema, partition_keys=("row",), create=True)
            commit.commit(store, "ds", change, base=None)
    finally:
        assert proc.wait(timeout=120) == 0
    assert proc.stdout is not None and proc.stdout.read().strip() == b"0"
    assert writers_seen(store) == [2, 2, 100, 100]
    assert [s.version for s in ka.history(store, "ds")] == [0, 1]
    assert plateau_rows(url, {}) == 4  # the slow creator's publish rolled the view forward


# -- a creator killed after log entry 0 -------------------------------------------------

_KILLED_CREATOR = textwrap.dedent(
    """
    import json, os, signal, sys
    import pandas as pd
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options = sys.argv[1], json.loads(sys.argv[2])
    commit._publish = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    df = pd.DataFrame({"part": ["a", "b"], "writer": [100, 100], "row": [0, 1]})
    ka.write_dataset(df, url, "ds", partition_on=["part"], secondary_indices=["writer"],
                     storage_options=options)
    """
)


def _run_killed(script: str, url: str, options: dict, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", script, url, json.dumps(options), *args], timeout=180
    )
    assert proc.returncode == -9


def test_a_creator_killed_after_log_entry_0_has_committed(shared_url_and_options):
    url, options = shared_url_and_options
    _run_killed(_KILLED_CREATOR, url, dict(options))
    store = ka.resolve_store(url, dict(options))
    assert not store.exists(keys.metadata_key("ds"))  # died before the view
    ds = ka.dataset(store, "ds")
    assert ds.version == 0 and writers_seen(store) == [100, 100]
    assert ds.count_rows(filter=[[("writer", "==", 100)]]) == 2  # its index is in too
    with pytest.raises(ka.DatasetExistsError):
        ka.write_dataset(frame(1), store, "ds")
    assert ka.write_dataset(frame(2), store, "ds", mode="append").version == 1
    assert writers_seen(store) == [2, 2, 100, 100]
    # the append repaired what the creator did not write: view and _common_metadata
    assert store.exists(keys.common_metadata_key("ds"))
    assert json.loads(store.get(keys.metadata_key("ds")))["ktk_arrow"]["commit"]["version"] == 1
    if url.startswith("/"):
        assert plateau_rows(url, {}) == 4
    assert commit.garbage_collect(store, "ds", now=later()) == []


# -- expiry and gc behind a lagging view --------------------------------------------------

_KILLED_APPENDER = textwrap.dedent(
    """
    import json, os, signal, sys
    import pandas as pd
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options, writer = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    commit._publish = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    df = pd.DataFrame({"part": ["a", "b"], "writer": [writer] * 2, "row": [0, 1]})
    ka.write_dataset(df, url, "ds", mode="overwrite", storage_options=options)
    """
)


def test_expiry_and_gc_behind_a_lagging_view_lose_nothing(shared_url_and_options):
    """Writers killed between log entry and view leave the view at v0 while the log is at v3."""
    url, options = shared_url_and_options
    store = ka.resolve_store(url, dict(options))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    stale_view = store.get(keys.metadata_key("ds"))
    for writer in (1, 2, 3):
        _run_killed(_KILLED_APPENDER, url, dict(options), str(writer))
        # each killed overwrite rolled forward from the same stale view
        assert store.get(keys.metadata_key("ds")) == stale_view
    assert ka.dataset(store, "ds").version == 3
    doomed = set().union(
        *(commit.referenced_keys(commit.load(store, "ds", version=v)) for v in (0, 1, 2))
    )
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == [0, 1, 2]
    # expiry first brought the view up to date, so readers do not fall back to version 0
    assert json.loads(store.get(keys.metadata_key("ds")))["ktk_arrow"]["commit"]["version"] == 3
    assert ka.dataset(store, "ds").version == 3 and writers_seen(store) == [3, 3]
    deleted = commit.garbage_collect(store, "ds", grace_period=ZERO, now=later(), force=True)
    assert set(deleted) == doomed  # exactly the files only the expired versions used
    assert ka.write_dataset(frame(4), store, "ds", mode="append").version == 4  # no fork
    assert writers_seen(store) == [3, 3, 4, 4]
    assert [s.version for s in ka.history(store, "ds")] == [3, 4]
    if url.startswith("/"):
        assert plateau_rows(url, {}) == 4  # the view plateau reads has every file


def test_gc_refreshes_a_lagging_view_before_deleting(tmp_path):
    """A writer stalled for hours republishes an old view: gc brings it forward first."""
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    stale_view = store.get(keys.metadata_key("ds"))
    ka.write_dataset(frame(1), store, "ds", mode="overwrite", partition_on=["part"])
    commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    v0_files = (
        {i.key for i in store.list("ds/table")}
        - commit.referenced_keys(commit.load(store, "ds"))
        - {keys.common_metadata_key("ds")}
    )
    store.put(keys.metadata_key("ds"), stale_view)
    assert ka.dataset(store, "ds").version == 1  # readers roll forward
    deleted = commit.garbage_collect(store, "ds", grace_period=ZERO, now=later(), force=True)
    assert set(deleted) == v0_files and len(v0_files) == 2
    assert json.loads(store.get(keys.metadata_key("ds")))["ktk_arrow"]["commit"]["version"] == 1
    assert plateau_rows(str(tmp_path), {}) == 2  # plateau reads version 1, every file there


def test_a_failed_view_write_is_retried_then_reported(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    real_put, calls = LocalStore.put, []

    def failing_put(self, key, data):
        if key == keys.metadata_key("ds"):
            calls.append(key)
            raise ka.StoreError(f"injected failure on {key}")
        real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.warns(ka.errors.ViewLagWarning, match="version 1 of dataset 'ds' is committed"):
        snap = ka.write_dataset(frame(1), store, "ds", mode="append")
    assert snap.version == 1 and len(calls) == commit.VIEW_ATTEMPTS
    monkeypatch.undo()
    assert ka.dataset(store, "ds").version == 1 and writers_seen(store) == [0, 0, 1, 1]
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == [0]
    assert json.loads(store.get(keys.metadata_key("ds")))["ktk_arrow"]["commit"]["version"] == 1


def test_expiry_fails_without_deleting_when_the_view_cannot_be_refreshed(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    stale_view = store.get(keys.metadata_key("ds"))
    ka.write_dataset(frame(1), store, "ds", mode="overwrite")
    store.put(keys.metadata_key("ds"), stale_view)
    real_put = LocalStore.put

    def failing_put(self, key, data):
        if key == keys.metadata_key("ds"):
            raise ka.StoreError("injected")
        real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.raises(ka.StoreError, match="injected"):
        commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    monkeypatch.undo()
    assert [s.version for s in ka.history(store, "ds")] == [0, 1]


# -- damaged logs end in an error, never a hang or a wrong answer -------------------------


def _entry(store: Store, version: int) -> dict:
    return json.loads(store.get(keys.log_key("ds", version)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "damage, match",
    [
        ("version", "records version 7, not 2"),
        ("future", "records version 9, not 2"),
        ("uuid", "belongs to dataset 'other'"),
        ("chain", "was not built on version 1"),
    ],
)
def test_a_bad_next_entry_is_reported_by_readers_and_writers(tmp_path, damage, match):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    ka.write_dataset(frame(1), store, "ds", mode="append")
    entry = _entry(store, 1)
    if damage == "uuid":  # another dataset's entry, renumbered to fit
        ka.write_dataset(frame(9), store, "other")
        entry = json.loads(store.get(keys.log_key("other", 0)))
        entry["ktk_arrow"]["commit"]["version"] = 2
    else:
        entry["ktk_arrow"]["commit"]["version"] = {"version": 7, "future": 9, "chain": 2}[damage]
        entry["ktk_arrow"]["commit"]["parent"] = "not-the-token-of-version-1"
    store.put(keys.log_key("ds", 2), json.dumps(entry).encode())
    with pytest.raises(ka.CorruptMetadataError, match=match) as info:
        ka.dataset(store, "ds")
    assert keys.log_key("ds", 2) in str(info.value)
    with pytest.raises(ka.CorruptMetadataError, match=match):
        ka.write_dataset(frame(2), store, "ds", mode="append")
    with pytest.raises(ka.CorruptMetadataError, match=match):
        commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    assert ka.dataset(store, "ds", version=1).count_rows() == 4  # time travel still works


@pytest.mark.timeout(60)
def test_a_directory_at_the_next_log_key_is_an_error(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    (tmp_path / keys.log_key("ds", 1)).mkdir()
    with pytest.raises(ka.StoreError, match=r"directory at key 'ds/_ktk/log/0+1\.json'"):
        ka.dataset(store, "ds")
    with pytest.raises(ka.StoreError, match="directory at key"):
        ka.write_dataset(frame(1), store, "ds", mode="append")


def test_a_log_gap_under_a_lagging_view_is_found_by_writers_history_and_expiry(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    stale_view = store.get(keys.metadata_key("ds"))
    for w in (1, 2, 3):
        ka.write_dataset(frame(w), store, "ds", mode="append")
    store.put(keys.metadata_key("ds"), stale_view)
    store.delete(keys.log_key("ds", 1))
    with pytest.raises(ka.CorruptMetadataError, match=r"0+1\.json' .*is missing"):
        ka.history(store, "ds")
    # a writer fills the gap, then finds version 2 was not built on its entry
    written_before = {i.key for i in store.list("ds/table")}
    with pytest.raises(ka.CorruptMetadataError, match="gap or a fork") as info:
        ka.write_dataset(frame(4), store, "ds", mode="append")
    assert not commit.may_discard(info.value)
    assert {i.key for i in store.list("ds/table")} > written_before  # its files are kept


# -- deletion -------------------------------------------------------------------------------


_KILLED_DELETER = textwrap.dedent(
    """
    import json, os, signal, sys
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options, after = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    store = ka.resolve_store(url, options)
    cls, calls = type(store), [0]
    real = cls.delete_many
    def delete_many(self, keys):
        calls[0] += 1
        if calls[0] > after:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, list(keys)[: max(1, len(list(keys)) // 2)])   # part of the batch only
    cls.delete_many = delete_many
    commit.delete_dataset(store, "ds")
    """
)


@pytest.mark.parametrize("after", [0, 1, 2, 3, 4])
def test_a_deletion_killed_part_way_never_revives_a_version(tmp_path, after):
    url = str(tmp_path / "store")
    store = LocalStore(url)
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    for w in (1, 2):
        ka.write_dataset(frame(w), store, "ds", mode="append")
    _run_killed(_KILLED_DELETER, url, {}, str(after))
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(store, "ds")
    snap = ka.write_dataset(frame(7), store, "ds", partition_on=["part"])  # created anew
    assert writers_seen(store) == [7, 7]
    assert [s.version for s in ka.history(store, "ds")] == [snap.version]
    commit.delete_dataset(store, "ds")
    assert list(store.list("ds")) == [] or all(
        i.key.startswith("ds/table/") for i in store.list("ds")
    )


# -- gc beside writers ----------------------------------------------------------------------


def test_gc_refuses_a_grace_period_under_a_minute_without_force(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    for grace in (ZERO, dt.timedelta(seconds=30)):
        with pytest.raises(ka.InvalidArgumentError, match="force=True"):
            commit.garbage_collect(store, "ds", grace_period=grace)
    assert commit.garbage_collect(store, "ds", grace_period=ZERO, force=True) == []


def test_gc_never_deletes_files_of_a_write_in_flight_in_this_process(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"], secondary_indices=["writer"])
    written, go_on = threading.Event(), threading.Event()
    real_commit = commit.commit

    def paused_commit(*args, **kwargs):
        written.set()
        assert go_on.wait(60)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(commit, "commit", paused_commit)
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(ka.write_dataset(frame(1), store, "ds", mode="append"))
    )
    thread.start()
    assert written.wait(60)
    assert commit.garbage_collect(store, "ds", grace_period=ZERO, now=later(), force=True) == []
    go_on.set()
    thread.join(60)
    assert result and result[0].version == 1
    assert writers_seen(store) == [0, 0, 1, 1]
    assert not commit.IN_FLIGHT._counts  # released after the commit


def test_a_long_write_commits_after_expiry_without_forking_the_log(tmp_path):
    """A write that read version 0 an hour ago must not re-create an expired version 1."""
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    stale = commit.load_latest(store, "ds")
    assert stale is not None and stale.version == 0
    for w in (1, 2, 3):
        ka.write_dataset(frame(w), store, "ds", mode="append")
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == [0, 1, 2]
    import dataclasses

    long_ago = dataclasses.replace(stale, loaded_at=stale.loaded_at - 3600)
    data = ka.write_dataset(frame(4), store, "scratch", partition_on=["part"])  # files to add
    entries = list(commit.load(store, "scratch").files.values())
    assert data.version == 0
    moved = []
    for e in entries:  # the same files, under ds
        key = e.key.replace("scratch/", "ds/", 1)
        store.put(key, store.get(e.key))
        moved.append(dataclasses.replace(e, key=key))
    change = commit.Change("append", add=moved, schema=stale.schema)
    snap = commit.commit(store, "ds", change, base=long_ago)
    assert snap.version == 4  # not 1: the stale base was read again
    assert writers_seen(store) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [s.version for s in ka.history(store, "ds")] == [3, 4]


def test_a_refused_put_whose_entry_vanished_rebuilds_on_the_newest_state(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds")
    real = LocalStore.put_if_absent
    calls = []

    def refuse_once(self, key, data):
        calls.append(key)
        if len(calls) == 1:
            return False  # as if an entry was there, and expired before we looked
        return real(self, key, data)

    monkeypatch.setattr(LocalStore, "put_if_absent", refuse_once)
    assert commit.put_entry(store, keys.log_key("ds", 1), b"{}") is False
    assert not store.exists(keys.log_key("ds", 1))  # nothing written behind the view
    assert ka.write_dataset(frame(1), store, "ds", mode="append").version == 1


def test_an_index_build_over_a_file_deleted_behind_the_metadata_is_a_store_error(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    gone = next(iter(commit.load(store, "ds").files.values())).key
    store.delete(gone)
    with pytest.raises(ka.StoreError, match="is missing") as info:
        ka.build_index(store, "ds", ["writer"])
    assert gone in str(info.value) and "ktk check" in str(info.value)
    assert commit.load(store, "ds").indices == {}  # nothing committed
