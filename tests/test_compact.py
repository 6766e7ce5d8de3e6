"""Compaction: fewer files, same rows, one snapshot, safe against concurrent writers."""

from __future__ import annotations

import datetime as dt
import importlib
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ktk_arrow as ka
from ktk_arrow import commit as committer
from ktk_arrow.compact import compact, plan_compaction

# ka.compact is the public function; the module of the same name is internal
compact_module = importlib.import_module("ktk_arrow.compact")

UUID = "events"


def batch(i: int) -> pa.Table:
    """Three rows per batch, in partitions "a", "b" and the null partition."""
    return pa.table(
        {
            "p": pa.array(["a", "b", None]),
            "x": pa.array([i * 10, i * 10 + 1, i * 10 + 2], pa.int64()),
            "f": pa.array([i + 0.5, None, -1.25]),
            "s": pa.array([f"s{i}", None, "ü/=%"]),
            "c": pa.array([f"c{i}", f"c{i}", "shared"]),
            "ts": pa.array([dt.datetime(2024, 1, 1 + i, 12, 0, 0, 123456)] * 3, pa.timestamp("us")),
            "cat": pa.array(["x", "y", "x"]).dictionary_encode(),
            "d": pa.array([dt.date(2024, 2, 1 + i)] * 3, pa.date32()),
        }
    )


def rows(table: pa.Table) -> list[dict]:
    return table.sort_by("x").to_pylist()


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "store")
    for i in range(4):
        ka.write_dataset(
            batch(i),
            path,
            UUID,
            partition_on=["p"],
            secondary_indices=["c"],
            mode="create" if i == 0 else "append",
        )
    return path


def files_per_partition(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in ka.dataset(path, UUID).tasks:
        key = task.label.rsplit("/", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_compact_keeps_every_row_and_value(store):
    before = ka.dataset(store, UUID)
    snap = compact(store, UUID)
    after = ka.dataset(store, UUID)
    assert snap.operation == "compact"
    assert after.schema.equals(before.schema)
    assert rows(after.to_table()) == rows(before.to_table())
    assert after.count_rows() == before.count_rows() == 12


def test_compact_leaves_one_file_per_partition(store):
    assert set(files_per_partition(store).values()) == {4}
    snap = compact(store, UUID)
    assert set(files_per_partition(store).values()) == {1}
    assert (snap.files_removed, snap.files_added) == (12, 3)


def test_history_records_compact_and_time_travel_still_reads_old_files(store):
    before = ka.dataset(store, UUID)
    old_keys = [t.key for t in before.tasks]
    compact(store, UUID)
    history = ka.history(store, UUID)
    assert [s.operation for s in history] == ["create", "append", "append", "append", "compact"]
    old = ka.dataset(store, UUID, version=before.version)
    assert len(old.tasks) == 12
    assert rows(old.to_table()) == rows(before.to_table())
    for key in old_keys:  # gc, not compaction, removes files
        assert os.path.exists(os.path.join(store, key))


def test_index_answers_after_compaction(store):
    expected = rows(ka.dataset(store, UUID).to_table(filter=[[("c", "==", "c2")]]))
    compact(store, UUID)
    ds = ka.dataset(store, UUID)
    assert rows(ds.to_table(filter=[[("c", "==", "c2")]])) == expected
    assert rows(ds.to_table(filter=[[("c", "==", "shared")]])) == rows(
        ds.to_table(filter=pc.field("p").is_null())
    )
    # the index names only live files: the compacted-away labels are gone from it
    index = committer.read_index(ka.resolve_store(store), ds.metadata, "c")
    assert set().union(*index.values()) <= set(ds.metadata.files)
    assert len(ds.filter([[("c", "==", "c2")]]).tasks) == 2


def test_concurrent_append_into_the_same_partition_survives(store, monkeypatch):
    rewrite = compact_module._rewrite
    appended = pa.table(
        {
            "p": ["a"],
            "x": [999],
            "f": [1.0],
            "s": ["late"],
            "c": ["late"],
            "ts": pa.array([dt.datetime(2024, 3, 1)], pa.timestamp("us")),
            "cat": pa.array(["x"]).dictionary_encode(),
            "d": [dt.date(2024, 3, 1)],
        }
    )

    def rewrite_then_someone_appends(*args, **kwargs):
        writer = rewrite(*args, **kwargs)
        ka.write_dataset(appended, store, UUID, mode="append")
        return writer

    monkeypatch.setattr(compact_module, "_rewrite", rewrite_then_someone_appends)
    before = rows(ka.dataset(store, UUID).to_table())
    compact(store, UUID)
    ds = ka.dataset(store, UUID)
    assert rows(ds.to_table()) == sorted(before + appended.to_pylist(), key=lambda r: r["x"])
    assert [s.operation for s in ka.history(store, UUID)][-2:] == ["append", "compact"]
    assert files_per_partition(store)["p=a"] == 2  # the compacted file and the late one
    assert rows(ds.to_table(filter=[[("c", "==", "late")]])) == appended.to_pylist()


def test_concurrent_delete_of_compacted_files_is_a_conflict(store, monkeypatch):
    rewrite = compact_module._rewrite
    written: list[str] = []

    def rewrite_then_someone_deletes(*args, **kwargs):
        writer = rewrite(*args, **kwargs)
        written.extend(e.key for e in writer.entries)
        ka.write_dataset([], store, UUID, mode="overwrite", delete_scope=[{"p": "a"}])
        return writer

    monkeypatch.setattr(compact_module, "_rewrite", rewrite_then_someone_deletes)
    with pytest.raises(ka.CommitConflictError):
        compact(store, UUID)
    assert ka.history(store, UUID)[-1].operation == "delete_scope"
    assert written and not any(os.path.exists(os.path.join(store, k)) for k in written)
    assert ka.dataset(store, UUID).count_rows() == 8


def test_partitions_filter_compacts_only_matching_partitions(store):
    compact(store, UUID, partitions=[[("p", "==", "a")]])
    assert files_per_partition(store) == {
        "p=a": 1,
        "p=b": 4,
        "p=__HIVE_DEFAULT_PARTITION__": 4,
    }


def test_partitions_filter_must_name_partition_columns(store):
    with pytest.raises(ka.InvalidArgumentError, match="partition columns"):
        compact(store, UUID, partitions=[[("x", "==", 1)]])


def test_nothing_to_compact_makes_no_snapshot(store):
    first = compact(store, UUID)
    again = compact(store, UUID)
    assert again.version == first.version
    assert len(ka.history(store, UUID)) == 5


def test_target_rows_per_file_splits_and_skips_large_files(store):
    meta = committer.load(ka.resolve_store(store), UUID)
    # 4 files of 1 row per partition: 3 rows per file gives 2 files, still fewer
    groups = plan_compaction(meta, target_rows_per_file=3)
    assert len(groups) == 3 and all(len(g.files) == 4 for g in groups)
    compact(store, UUID, target_rows_per_file=3)
    assert set(files_per_partition(store).values()) == {2}
    sizes = sorted(t.rows for t in ka.dataset(store, UUID).tasks)
    assert sizes == [1, 1, 1, 3, 3, 3]
    # files that reached the target are left alone: nothing worth merging remains
    assert (
        plan_compaction(committer.load(ka.resolve_store(store), UUID), target_rows_per_file=3) == []
    )


def test_merging_that_would_not_reduce_files_is_skipped(store):
    meta = committer.load(ka.resolve_store(store), UUID)
    assert plan_compaction(meta, target_rows_per_file=2) != []  # 4 files -> 2
    assert plan_compaction(meta, target_rows_per_file=1) == []  # every file is full


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_target_rows_per_file_must_be_a_positive_int(store, bad):
    with pytest.raises(ka.InvalidArgumentError, match="target_rows_per_file"):
        compact(store, UUID, target_rows_per_file=bad)


def test_progress_is_reported_per_partition(store):
    calls: list[tuple[int, int]] = []
    compact(store, UUID, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(ka.DatasetNotFoundError):
        compact(str(tmp_path), "nope")


def test_unpartitioned_dataset_compacts(tmp_path):
    path = str(tmp_path)
    for i in range(3):
        ka.write_dataset(
            pa.table({"x": [i, i + 100]}), path, "flat", mode="create" if i == 0 else "append"
        )
    compact(path, "flat")
    ds = ka.dataset(path, "flat")
    assert len(ds.tasks) == 1
    assert sorted(ds.to_table().column("x").to_pylist()) == [0, 1, 2, 100, 101, 102]
