"""Commit protocol on local disk: concurrency, conflicts, crashes, time travel, gc."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.spec import keys
from ktk_arrow.storage import LocalStore


def frame(writer: int, i: int, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "part": [f"p{(writer + j) % 2}" for j in range(n)],
            "writer": [writer] * n,
            "seq": [i] * n,
            "row": list(range(n)),
        }
    )


def _append_many(root: str, writer: int, count: int) -> list[int]:
    versions = []
    for i in range(count):
        snap = ka.write_dataset(frame(writer, i), root, "ds", mode="append")
        versions.append(snap.version)
    return versions


def test_concurrent_appends_from_processes_all_land(tmp_path):
    root = str(tmp_path / "store")
    ka.write_dataset(frame(-1, 0), root, "ds", partition_on=["part"], secondary_indices=["writer"])
    writers, appends = 6, 8
    ctx = mp.get_context("spawn")
    with ctx.Pool(writers) as pool:
        results = pool.starmap(_append_many, [(root, w, appends) for w in range(writers)])
    versions = sorted(v for vs in results for v in vs)
    assert versions == list(range(1, writers * appends + 1))  # every commit got its own version
    df = ka.dataset(root, "ds").to_table().to_pandas()
    got = df[df.writer >= 0].groupby(["writer", "seq"]).size()
    assert len(got) == writers * appends and (got == 3).all()  # every row exactly once
    history = ka.history(root, "ds")
    assert [s.version for s in history] == list(range(writers * appends + 1))
    stamps = [s.timestamp for s in history]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # the index saw every writer
    for w in range(writers):
        assert ka.dataset(root, "ds").count_rows(filter=[[("writer", "==", w)]]) == 3 * appends
    # plateau, reading the view, sees the final state too
    from functools import partial

    from minimalkv import get_store_from_url
    from plateau.io.eager import read_table

    theirs = read_table("ds", partial(get_store_from_url, f"hfs://{root}"))
    assert len(theirs) == len(df)
    assert (
        len(
            read_table(
                "ds",
                partial(get_store_from_url, f"hfs://{root}"),
                predicates=[[("writer", "==", 3)]],
            )
        )
        == 3 * appends
    )


def test_overwrite_conflicts_with_concurrent_append_into_its_scope(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds", partition_on=["part"])
    base = commit.load(store, "ds")
    # a concurrent append lands in p0 after our overwrite read the dataset
    ka.write_dataset(frame(2, 1), store, "ds", mode="append")
    change = commit.Change(
        operation="overwrite_partitions",
        remove=lambda s: [lbl for lbl in s.files if lbl.startswith("part=p0/")],
        depends_on=lambda s: [lbl for lbl in s.files if lbl.startswith("part=p0/")],
        read_version=base.version,
    )
    with pytest.raises(ka.CommitConflictError, match="depends on"):
        commit.commit(store, "ds", change)
    assert ka.dataset(store, "ds").version == 1


def test_overwrite_of_other_partition_rebases_over_concurrent_append(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds", partition_on=["part"])
    base = commit.load(store, "ds")
    only_p1 = pd.DataFrame({"part": ["p1"], "writer": [9], "seq": [0], "row": [0]})
    ka.write_dataset(only_p1, store, "ds", mode="append")  # touches p1 only
    change = commit.Change(
        operation="delete_scope",
        remove=lambda s: [lbl for lbl in s.files if lbl.startswith("part=p0/")],
        depends_on=lambda s: [lbl for lbl in s.files if lbl.startswith("part=p0/")],
        read_version=base.version,
    )
    snap = commit.commit(store, "ds", change)
    assert snap.version == 2
    df = ka.dataset(store, "ds").to_table().to_pandas()
    assert set(df.part) == {"p1"} and 9 in set(df.writer)


def test_reader_rolls_past_a_lagging_view(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds")
    stale_view = store.get(keys.metadata_key("ds"))
    ka.write_dataset(frame(1, 0), store, "ds", mode="append")
    store.put(keys.metadata_key("ds"), stale_view)  # as if the writer died before the view
    assert ka.dataset(store, "ds").version == 1
    assert ka.dataset(store, "ds").count_rows() == 6
    snap = ka.write_dataset(frame(2, 0), store, "ds", mode="append")
    assert snap.version == 2
    view = json.loads(store.get(keys.metadata_key("ds")))
    assert view["ktk_arrow"]["commit"]["version"] == 2


def test_planning_reads_two_objects_whatever_the_history(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds", partition_on=["part"])
    for i in range(25):
        ka.write_dataset(frame(1, i), store, "ds", mode="append")
    calls: list[str] = []
    real_get = LocalStore.get

    def counting_get(self, key):
        calls.append(key)
        return real_get(self, key)

    real_prefix = LocalStore.get_prefix

    def counting_prefix(self, key, length):
        calls.append(key)
        return real_prefix(self, key, length)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    monkeypatch.setattr(LocalStore, "get_prefix", counting_prefix)
    monkeypatch.setattr(LocalStore, "list", lambda *a, **k: pytest.fail("planning must not list"))
    ds = ka.dataset(store, "ds")
    assert ds.version == 25
    assert calls == [keys.metadata_key("ds"), keys.log_key("ds", 26)]


def test_time_travel_to_an_unknown_version_is_a_clear_error(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds")
    with pytest.raises(ka.DatasetNotFoundError, match="no version 7"):
        ka.dataset(store, "ds", version=7)
    with pytest.raises(ka.InvalidArgumentError, match="version"):
        ka.dataset(store, "ds", version=-1)
    with pytest.raises(ka.InvalidArgumentError, match="either"):
        ka.dataset(store, "ds", version=0, as_of=dt.datetime.now(dt.timezone.utc))


def test_gc_keeps_files_of_retained_snapshots_and_young_orphans(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds", partition_on=["part"])
    ka.write_dataset(frame(1, 0), store, "ds", mode="overwrite")
    orphan = "ds/table/part=p0/orphan.parquet"
    store.put(orphan, b"not committed yet")
    assert commit.garbage_collect(store, "ds") == []  # young orphan and version 0 files kept
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    assert commit.garbage_collect(store, "ds", now=later) == [orphan]
    assert ka.dataset(store, "ds", version=0).count_rows() == 3  # time travel still works


_CRASH_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import pandas as pd
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options, step = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    store = ka.resolve_store(url, options)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if step == "after_data":
        commit.commit = die
    elif step == "after_log":
        commit._publish = die
    elif step == "after_view":
        cls = type(store)
        real = cls.put
        def put(self, key, data):
            real(self, key, data)
            if key.endswith(".by-dataset-metadata.json"):
                die()
        cls.put = put
    df = pd.DataFrame({"part": ["a", "b"], "x": [10, 11]})
    ka.write_dataset(df, store, "ds", mode="append")
    """
)


@pytest.mark.parametrize("step", ["after_data", "after_log", "after_view"])
def test_killed_writer_leaves_a_consistent_state(shared_url_and_options, step):
    url, options = shared_url_and_options
    store = ka.resolve_store(url, dict(options))
    ka.write_dataset(pd.DataFrame({"part": ["a"], "x": [1]}), store, "ds", partition_on=["part"])
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, url, json.dumps(options), step], timeout=180
    )
    assert proc.returncode == -9
    ds = ka.dataset(store, "ds")
    rows = sorted(ds.to_table().column("x").to_pylist())
    if step == "after_data":
        assert rows == [1] and ds.version == 0  # nothing committed
    else:
        assert rows == [1, 10, 11] and ds.version == 1  # the log entry is the commit
    snap = ka.write_dataset(pd.DataFrame({"part": ["a"], "x": [2]}), store, "ds", mode="append")
    assert snap.version == ds.version + 1
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    deleted = commit.garbage_collect(store, "ds", now=later)
    assert len(deleted) == (2 if step == "after_data" else 0)
    assert sorted(ka.dataset(store, "ds").to_table().column("x").to_pylist()) == sorted([*rows, 2])


def test_gc_removes_temp_files_left_by_a_crashed_put(tmp_path):
    store = LocalStore(str(tmp_path))
    ka.write_dataset(frame(0, 0), store, "ds")
    leftover = tmp_path / "ds" / "_ktk" / "log" / ".tmp-deadbeef"
    leftover.write_bytes(b"half a log entry")
    assert [i.key for i in store.list_temporary("ds")] == ["ds/_ktk/log/.tmp-deadbeef"]
    assert "ds/_ktk/log/.tmp-deadbeef" not in {i.key for i in store.list("ds")}
    assert commit.garbage_collect(store, "ds") == []  # young: may be a put in flight
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    assert commit.garbage_collect(store, "ds", now=later) == ["ds/_ktk/log/.tmp-deadbeef"]
    assert not leftover.exists()
    assert ka.dataset(store, "ds").count_rows() == 3
