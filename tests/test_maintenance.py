"""The public maintenance API (ka.compact, ka.garbage_collect, ka.expire_snapshots, ka.vacuum,
ka.delete_dataset, ka.build_index, ka.drop_index, ka.list_datasets), and what snapshots report."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

import fsspec
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow import commit, write
from ktk_arrow.spec import keys
from ktk_arrow.spec.metadata import TOMBSTONE_OPERATION, CommitInfo
from ktk_arrow.storage import LocalStore

UUID = "events"
ZERO = timedelta(0)


def batch(start: int, n: int = 4, parts=("a", "b")) -> pa.Table:
    """``n`` rows with ids ``start..``; ``c`` takes few values, so index hits share files."""
    ids = list(range(start, start + n))
    return pa.table(
        {
            "p": [parts[i % len(parts)] for i in ids],
            "id": pa.array(ids, pa.int64()),
            "c": [f"c{i % 3}" for i in ids],
        }
    )


def ids(store, uuid=UUID, **kwargs) -> list[int]:
    return sorted(ka.dataset(store, uuid, **kwargs).to_table()["id"].to_pylist())


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "store")


def build(path: str, versions: int = 4, **kwargs) -> None:
    """Version 0 creates, versions 1.. append four rows each."""
    for v in range(versions):
        ka.write_dataset(
            batch(4 * v),
            path,
            UUID,
            partition_on=["p"],
            mode="create" if v == 0 else "append",
            **kwargs,
        )


# -- every store form ---------------------------------------------------------


STORE_FORMS = {
    "path": lambda p: p,
    "url": lambda p: f"file://{p}",
    "fs tuple": lambda p: (fsspec.filesystem("file"), p),
    "Store": lambda p: LocalStore(p),
    "factory": lambda p: lambda: LocalStore(p),
}


@pytest.mark.parametrize("form", sorted(STORE_FORMS))
def test_every_maintenance_function_takes_every_store_form(path, form):
    build(path, versions=3)
    store = STORE_FORMS[form](path)
    assert list(ka.list_datasets(store)) == [UUID]
    compacted = ka.compact(store, UUID, storage_options={})
    assert compacted.committed and compacted.files_after == 2
    expired = ka.expire_snapshots(store, UUID, keep_last=1, grace_period=ZERO)
    assert expired.expired == (0, 1, 2)
    collected = ka.garbage_collect(store, UUID, grace_period=ZERO, force=True)
    assert len(collected.deleted) == 6  # the six appended files, merged into two
    assert ka.build_index(store, UUID, "c").committed
    assert ka.drop_index(store, UUID, ["c"]).committed
    vacuumed = ka.vacuum(store, UUID, retention=ZERO, grace_period=ZERO, force=True)
    assert vacuumed.expire.expired and vacuumed.dry_run is False
    assert ids(path) == list(range(12))
    deleted = ka.delete_dataset(store, UUID)
    assert deleted.deleted and deleted.kept == () and deleted.foreign == ()
    assert list(ka.list_datasets(store)) == []


def test_storage_options_reach_the_store(tmp_path):
    url = f"memory://maint-{tmp_path.name}"
    ka.write_dataset(batch(0), url, UUID, storage_options={})
    assert ka.garbage_collect(url, UUID, storage_options={}).version == 0
    assert list(ka.list_datasets(url, storage_options={})) == [UUID]


def test_results_are_frozen(path):
    build(path, versions=1)
    result = ka.garbage_collect(path, UUID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.deleted = ()  # type: ignore[misc]


# -- expiry and gc: what they did, and why not -----------------------------------


def test_expiry_inside_the_grace_period_says_why_it_expired_nothing(path):
    build(path, versions=5)
    result = ka.expire_snapshots(path, UUID, keep_last=3)
    assert result.expired == ()
    assert result.kept_by_grace == (0, 1)
    assert result.retained == (0, 1, 2, 3, 4) and result.version == 4
    assert "2 versions (0, 1) are younger than the 1 h grace period" in result.reason
    assert [s.version for s in ka.history(path, UUID)] == [0, 1, 2, 3, 4]


def test_expiry_without_grace_expires_and_lists_the_orphaned_files(path):
    build(path, versions=3)
    ka.write_dataset(batch(100), path, UUID, mode="overwrite")  # version 3 drops every file
    result = ka.expire_snapshots(path, UUID, keep_last=2, grace_period=ZERO)
    assert result.expired == (0, 1) and result.retained == (2, 3)
    assert result.kept_by_grace == () and result.reason is None
    # the record lists the files of versions 0 and 1 the latest lacks (gc keeps those
    # version 2 still references, through the log)
    assert len(result.orphaned) == 4
    assert [s.version for s in ka.history(path, UUID)] == [2, 3]


def test_expiry_dry_run_changes_nothing(path):
    build(path, versions=3)
    result = ka.expire_snapshots(path, UUID, keep_last=1, grace_period=ZERO, dry_run=True)
    assert result.expired == (0, 1) and result.dry_run
    assert [s.version for s in ka.history(path, UUID)] == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"keep_last": 5}, "keep_last=5 keeps all 3 retained versions"),
        ({"older_than": timedelta(days=30)}, "no retained version was committed before 30 d ago"),
    ],
)
def test_expiry_that_finds_nothing_says_so(path, kwargs, reason):
    build(path, versions=3)
    result = ka.expire_snapshots(path, UUID, grace_period=ZERO, **kwargs)
    assert result.expired == () and result.reason == reason


def test_expiry_of_a_single_version(path):
    build(path, versions=1)
    result = ka.expire_snapshots(path, UUID, keep_last=1, grace_period=ZERO)
    assert result.expired == () and result.reason == "only the latest version (0) is retained"


def test_gc_reports_young_files_and_files_kept_for_readers(path):
    build(path, versions=2)
    ka.write_dataset(batch(100), path, UUID, mode="overwrite")
    orphan = f"{UUID}/table/p=a/{'0' * 32}.parquet"
    LocalStore(path).put(orphan, b"not yet committed")
    young = ka.garbage_collect(path, UUID)
    assert young.deleted == ()
    assert orphan in young.kept_young
    assert "younger than the 1 h grace period" in young.reason
    # expire without grace: the record protects the old files for gc's grace period
    ka.expire_snapshots(path, UUID, keep_last=1, grace_period=ZERO)
    kept = ka.garbage_collect(path, UUID, grace_period=timedelta(minutes=5))
    assert kept.deleted == () and len(kept.kept_for_readers) == 4
    assert "kept for readers" in kept.reason
    done = ka.garbage_collect(path, UUID, grace_period=ZERO, force=True)
    assert len(done.deleted) == 5 and orphan in done.deleted
    assert ids(path) == list(range(100, 104))


def test_gc_with_nothing_to_delete_points_at_expiry(path):
    build(path, versions=2)
    result = ka.garbage_collect(path, UUID, grace_period=ZERO, force=True)
    assert result.deleted == ()
    assert "expire old snapshots first" in result.reason


def test_gc_refuses_a_short_grace_without_force(path):
    build(path, versions=1)
    with pytest.raises(ka.InvalidArgumentError, match="force=True"):
        ka.garbage_collect(path, UUID, grace_period=timedelta(seconds=5))


# -- vacuum -------------------------------------------------------------------


def test_vacuum_keeps_the_snapshot_current_at_the_retention_cutoff(path):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"])
    time.sleep(0.05)
    ka.write_dataset(batch(4), path, UUID, mode="overwrite")
    t1 = ka.history(path, UUID)[-1].timestamp
    time.sleep(0.6)
    ka.write_dataset(batch(8), path, UUID, mode="overwrite")
    cutoff = t1 + timedelta(seconds=0.3)
    retention = datetime.now(timezone.utc) - cutoff
    result = ka.vacuum(path, UUID, retention=retention, grace_period=ZERO, force=True)
    assert result.expire.expired == (0,)
    assert result.expire.retained == (1, 2)
    # version 1 was current at the cutoff: time travel there still works
    assert ids(path, as_of=cutoff) == [4, 5, 6, 7]
    assert len(result.deleted) == 2  # version 0's two files
    assert result.reason is None


def test_vacuum_with_the_default_retention_keeps_a_fresh_history(path):
    build(path, versions=3)
    result = ka.vacuum(path, UUID)
    assert result.retention == timedelta(days=7)
    assert result.expire.expired == () and result.deleted == ()
    assert "expiry: no retained version was committed before" in result.reason


def test_vacuum_says_when_the_expired_files_go(path):
    build(path, versions=2)
    ka.write_dataset(batch(100), path, UUID, mode="overwrite")
    result = ka.vacuum(path, UUID, retention=ZERO, grace_period=timedelta(minutes=2))
    # the grace period keeps the just-committed versions (and their files)
    assert result.expire.expired == () and result.expire.kept_by_grace == (0, 1)
    assert "grace period" in result.reason
    done = ka.vacuum(path, UUID, retention=ZERO, grace_period=ZERO, force=True)
    assert done.expire.expired == (0, 1) and len(done.deleted) == 4


def test_vacuum_dry_run_lists_what_a_real_run_does(path):
    build(path, versions=2)
    ka.write_dataset(batch(100), path, UUID, mode="overwrite")
    kwargs = {"retention": ZERO, "grace_period": ZERO, "force": True}
    planned = ka.vacuum(path, UUID, dry_run=True, **kwargs)
    assert planned.expire.expired == (0, 1) and len(planned.deleted) == 4
    assert planned.reason is None
    assert [s.version for s in ka.history(path, UUID)] == [0, 1, 2]
    done = ka.vacuum(path, UUID, **kwargs)
    assert sorted(done.deleted) == sorted(planned.deleted)
    assert done.expire.expired == planned.expire.expired
    # with a grace period the files of the versions that would expire wait for it
    ka.write_dataset(batch(200), path, UUID, mode="overwrite")
    time.sleep(0.01)
    later = ka.vacuum(path, UUID, retention=ZERO, grace_period=timedelta(minutes=1), dry_run=True)
    assert later.deleted == ()


def test_vacuum_of_a_missing_dataset(path):
    with pytest.raises(ka.DatasetNotFoundError):
        ka.vacuum(path, "nope")


# -- delete -------------------------------------------------------------------


def test_delete_dataset_reports_what_it_deleted(path):
    build(path, versions=2, secondary_indices=["c"])
    result = ka.delete_dataset(path, UUID)
    assert result.version == 2
    assert f"{UUID}/table/_common_metadata" in result.deleted
    assert sum(k.endswith(".parquet") and "/table/" in k for k in result.deleted) == 4
    assert result.reason is None
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(path, UUID)
    with pytest.raises(ka.DatasetNotFoundError):
        ka.delete_dataset(path, UUID)


def test_delete_dataset_leaves_young_unreferenced_files_and_says_why(path):
    build(path, versions=1)
    orphan = f"{UUID}/table/p=a/{'1' * 32}.parquet"
    LocalStore(path).put(orphan, b"a write creating the dataset anew")
    result = ka.delete_dataset(path, UUID)
    assert result.kept == (orphan,)
    assert "may be creating the dataset anew" in result.reason


# -- indices ------------------------------------------------------------------


def test_build_and_drop_index(path):
    build(path, versions=3)
    built = ka.build_index(path, UUID, ["c"])
    assert built.committed and built.snapshot.operation == "build_index"
    assert ka.dataset(path, UUID).indices == ["c"]
    dropped = ka.drop_index(path, UUID, "c")
    assert dropped.committed and dropped.snapshot.operation == "drop_index"
    assert dropped.snapshot.files_added == dropped.snapshot.files_removed == 0
    ds = ka.dataset(path, UUID)
    assert list(ds.indices) == []
    assert sorted(ds.to_table(filter=pa.compute.field("c") == "c1")["id"].to_pylist()) == [
        1,
        4,
        7,
        10,
    ]
    # the old index file stays for older snapshots
    assert ka.dataset(path, UUID, version=built.snapshot.version).indices == ["c"]
    # a write may no longer name it in delete_scope, and appends do not index it
    with pytest.raises(ka.InvalidArgumentError, match="neither partition keys"):
        ka.write_dataset([], path, UUID, mode="overwrite", delete_scope=[{"c": "c1"}])
    ka.write_dataset(batch(12), path, UUID, mode="append")
    assert list(ka.dataset(path, UUID).indices) == []
    assert [s.operation for s in ka.history(path, UUID)][-3:] == [
        "build_index",
        "drop_index",
        "append",
    ]


def test_drop_index_without_an_index_commits_nothing(path):
    build(path, versions=1)
    result = ka.drop_index(path, UUID, "c")
    assert not result.committed and result.snapshot.version == 0
    assert "has no secondary index on ['c']" in result.reason
    with pytest.raises(ka.InvalidArgumentError, match="has no columns"):
        ka.drop_index(path, UUID, "nope")
    assert len(ka.history(path, UUID)) == 1


def test_an_append_planned_before_a_drop_does_not_revive_a_partial_index(path):
    """The append's files carry index values; committed after the drop, they must not
    become an index of the new files only (filters would skip the old files' rows)."""
    build(path, versions=2, secondary_indices=["c"])
    store = LocalStore(path)
    prepared = write.prepare_write(store, UUID, mode="append")
    writer = prepared.writer_spec().open()
    writer.write(batch(100))
    ka.drop_index(path, UUID, "c")
    snap = prepared.commit(writer.entries, writer.index_delta, writer.schema)
    writer.release()
    assert snap.version == 3
    ds = ka.dataset(path, UUID)
    assert list(ds.indices) == []
    rows = ds.to_table(filter=pa.compute.field("c") == "c1")["id"].to_pylist()
    assert sorted(rows) == [1, 4, 7, 100, 103]


def test_build_index_rejects_partition_keys(path):
    build(path, versions=1)
    with pytest.raises(ka.InvalidArgumentError, match="partition keys"):
        ka.build_index(path, UUID, "p")


# -- compaction ---------------------------------------------------------------


def test_compaction_reports_files_not_rows(path):
    build(path, versions=4)
    result = ka.compact(path, UUID)
    assert result.committed and result.partitions == 2
    assert (result.files_before, result.files_after) == (8, 2)
    snap = result.snapshot
    assert (snap.files_added, snap.files_removed) == (2, 8)
    assert (snap.rows_added, snap.rows_removed) == (0, 0)
    assert ka.history(path, UUID)[-1] == snap
    assert ids(path) == list(range(16))


def test_compaction_with_nothing_to_do_says_why(path):
    build(path, versions=1)
    result = ka.compact(path, UUID)
    assert not result.committed and result.snapshot.version == 0
    assert "no partition has small files that merging would turn into fewer files" in (
        result.reason
    )
    big = ka.compact(path, UUID, target_rows_per_file=1)
    assert big.reason == "every file has at least target_rows_per_file=1 rows"


def test_compaction_dry_run_plans_only(path):
    build(path, versions=3)
    result = ka.compact(path, UUID, dry_run=True)
    assert not result.committed and result.dry_run
    assert (result.partitions, result.files_removed, result.files_added) == (2, 6, 2)
    assert len(ka.history(path, UUID)) == 3


# -- listing ------------------------------------------------------------------


def test_list_datasets_finds_views_and_log_only_datasets_and_skips_deleted(path):
    store = LocalStore(path)
    for uuid in ("alpha", "beta", "gamma", "gone", "killed"):
        ka.write_dataset(batch(0), store, uuid)
    # beta's creator died before its view: the log holds it
    store.delete(keys.metadata_key("beta"))
    ka.delete_dataset(store, "gone")
    # a deletion killed right after its tombstone: the view and files remain
    latest = commit.load(store, "killed")
    tombstone = dataclasses.replace(
        latest,
        files={},
        indices={},
        commit=CommitInfo(
            1,
            latest.commit.timestamp + timedelta(seconds=1),
            TOMBSTONE_OPERATION,
            token="t",
            parent=latest.commit.token,
        ),
    )
    assert store.put_if_absent(keys.log_key("killed", 1), tombstone.to_json())
    store.put("not-a-dataset/readme.txt", b"x")
    store.put("notes.json", b"{}")
    found = ka.list_datasets(store)
    assert list(found) == ["alpha", "beta", "gamma"]
    assert len(found) == 3 and "beta" in found and found[0] == "alpha"
    assert found.without_view == ("beta",)
    assert found.deleted == ("killed",)


def test_list_datasets_of_an_empty_or_missing_store(tmp_path):
    assert list(ka.list_datasets(str(tmp_path / "nothing-here"))) == []
    assert ka.list_datasets(f"memory://{tmp_path.name}-empty").uuids == ()


def test_list_datasets_on_a_memory_store():
    url = f"memory://list-{time.time_ns()}"
    ka.write_dataset(batch(0), url, "one")
    ka.write_dataset(batch(0), url, "two")
    assert list(ka.list_datasets(url)) == ["one", "two"]


# -- what snapshots report: rows removed, no empty versions ------------------------


def test_delete_scope_on_an_indexed_column_removes_whole_files_and_says_how_many_rows(path):
    build(path, versions=3, secondary_indices=["c"])  # 12 rows, c1 in ids 1, 4, 7, 10
    snap = ka.write_dataset([], path, UUID, mode="overwrite", delete_scope=[{"c": "c1"}])
    assert snap.operation == "delete_scope"
    left = ids(path)
    assert not {1, 4, 7, 10} & set(left)
    # whole files went: rows with other values of c that shared a file with c1 went too
    assert left == [0, 2, 9, 11]  # the four files holding c1 held 8 rows
    assert snap.rows_removed == 8 and snap.files_removed == 4
    assert snap.rows_added == 0 and snap.files_added == 0
    assert ka.history(path, UUID)[-1].rows_removed == 8


def test_overwrite_of_partitions_reports_rows_removed(path):
    build(path, versions=2)
    snap = ka.write_dataset(
        batch(50, n=3, parts=("a",)), path, UUID, mode="overwrite", delete_scope=[{"p": "a"}]
    )
    assert (snap.rows_added, snap.rows_removed) == (3, 4)
    assert (snap.files_added, snap.files_removed) == (1, 2)


def test_appends_report_no_rows_removed_and_old_entries_none(path):
    build(path, versions=2)
    assert [s.rows_removed for s in ka.history(path, UUID)] == [0, 0]
    info = CommitInfo.from_json(
        {"version": 3, "timestamp": "2020-01-01T00:00:00+00:00", "operation": "append"}
    )
    assert info.rows_removed is None
    assert CommitInfo.from_json(info.to_json()) == info


def test_an_empty_append_commits_no_version(path):
    build(path, versions=2)
    empty = batch(0).slice(0, 0)
    snap = ka.write_dataset(empty, path, UUID, mode="append")
    assert snap.version == 1
    snap = ka.write_dataset([], path, UUID, mode="append", allow_empty=True)
    assert snap.version == 1
    assert len(ka.history(path, UUID)) == 2


def test_a_delete_scope_matching_nothing_commits_no_version(path):
    build(path, versions=2)
    snap = ka.write_dataset([], path, UUID, mode="overwrite", delete_scope=[{"p": "zz"}])
    assert snap.version == 1
    assert len(ka.history(path, UUID)) == 2


def test_an_empty_create_still_creates(path):
    schema = batch(0).schema
    snap = ka.write_dataset(batch(0).slice(0, 0), path, UUID, schema=schema)
    assert snap.version == 0 and snap.operation == "create"
    assert ka.dataset(path, UUID).to_table().num_rows == 0
    # and a full overwrite with no rows empties a dataset: a real change
    ka.write_dataset(batch(0), path, UUID, mode="append")
    snap = ka.write_dataset(batch(0).slice(0, 0), path, UUID, mode="overwrite")
    assert snap.version == 2 and snap.rows_removed == 4
