"""Datasets whose partitions reference files under another dataset's prefix of the same store.

plateau datasets can do that (a partition's key is any key of the store).  We
read them, write to them, and check them; but gc, deletion and compaction of
the referencing dataset never delete a file outside its own ``<uuid>/``.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from datetime import timedelta

import pandas as pd
import pytest

pytest.importorskip("plateau")
minimalkv = pytest.importorskip("minimalkv")

import plateau.io.eager as pl  # noqa: E402

import ktk_arrow as ka  # noqa: E402
from ktk_arrow import commit  # noqa: E402
from ktk_arrow.check import check_dataset  # noqa: E402
from ktk_arrow.errors import CorruptMetadataError  # noqa: E402
from ktk_arrow.spec import keys  # noqa: E402
from ktk_arrow.storage import LocalStore  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ZERO = timedelta(0)


@pytest.fixture
def root(tmp_path) -> str:
    path = tmp_path / "store"
    path.mkdir()
    return str(path)


@pytest.fixture
def pstore(root):
    return functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")


@pytest.fixture
def shared(root, pstore) -> str:
    """plateau datasets ``a`` (p=x) and ``b`` (p=y); ``a``'s view also lists ``b``'s file."""
    pl.store_dataframes_as_dataset(
        store=pstore,
        dataset_uuid="a",
        dfs=[pd.DataFrame({"p": ["x", "x"], "v": [1, 2]})],
        partition_on=["p"],
    )
    pl.store_dataframes_as_dataset(
        store=pstore,
        dataset_uuid="b",
        dfs=[pd.DataFrame({"p": ["y", "y"], "v": [3, 4]})],
        partition_on=["p"],
    )
    view_a = pathlib.Path(root, keys.metadata_key("a"))
    meta_a = json.loads(view_a.read_text())
    meta_b = json.loads(pathlib.Path(root, keys.metadata_key("b")).read_text())
    meta_a["partitions"].update(meta_b["partitions"])
    view_a.write_text(json.dumps(meta_a))
    return root


def foreign_key(root: str) -> str:
    (entry,) = commit.load(LocalStore(root), "b").files.values()
    return entry.key


def values(store, uuid, **kwargs) -> list[int]:
    return sorted(ka.dataset(store, uuid, **kwargs).to_table()["v"].to_pylist())


def test_a_reference_into_another_uuid_is_read(shared, pstore):
    assert values(shared, "a") == [1, 2, 3, 4]
    assert foreign_key(shared).startswith("b/table/")
    assert {t.key for t in ka.dataset(shared, "a").tasks} >= {foreign_key(shared)}
    # plateau agrees
    frame = pl.read_table("a", pstore)
    assert sorted(frame["v"]) == [1, 2, 3, 4]
    assert values(shared, "b") == [3, 4]


def test_writes_keep_the_reference_and_plateau_still_reads(shared, pstore):
    ka.write_dataset(pd.DataFrame({"p": ["y"], "v": [5]}), shared, "a", mode="append")
    assert values(shared, "a") == [1, 2, 3, 4, 5]
    assert foreign_key(shared) in {
        e.key for e in commit.load(LocalStore(shared), "a").files.values()
    }
    assert sorted(pl.read_table("a", pstore)["v"]) == [1, 2, 3, 4, 5]
    assert [s.version for s in ka.history(shared, "a")] == [0, 1]


def test_gc_and_expiry_of_the_referencing_dataset_never_delete_the_foreign_file(shared):
    ka.write_dataset(pd.DataFrame({"p": ["x"], "v": [9]}), shared, "a", mode="overwrite")
    ka.expire_snapshots(shared, "a", keep_last=1, grace_period=ZERO)
    result = ka.garbage_collect(shared, "a", grace_period=ZERO, force=True)
    assert result.deleted  # a's own old file went
    assert all(k.startswith("a/") for k in result.deleted)
    assert os.path.exists(os.path.join(shared, foreign_key(shared)))
    assert values(shared, "b") == [3, 4]
    assert values(shared, "a") == [9]


def test_compaction_rewrites_the_foreign_rows_into_its_own_prefix_and_deletes_nothing(shared):
    ka.write_dataset(pd.DataFrame({"p": ["y"], "v": [5]}), shared, "a", mode="append")
    result = ka.compact(shared, "a")
    assert result.committed and result.partitions == 1
    assert (result.snapshot.rows_added, result.snapshot.rows_removed) == (0, 0)
    keys_after = {e.key for e in commit.load(LocalStore(shared), "a").files.values()}
    assert all(k.startswith("a/") for k in keys_after)
    assert values(shared, "a") == [1, 2, 3, 4, 5]
    ka.vacuum(shared, "a", retention=ZERO, grace_period=ZERO, force=True)
    assert os.path.exists(os.path.join(shared, foreign_key(shared)))
    assert values(shared, "b") == [3, 4]
    assert values(shared, "a") == [1, 2, 3, 4, 5]


def test_delete_dataset_leaves_the_other_datasets_file(shared):
    key = foreign_key(shared)
    result = ka.delete_dataset(shared, "a")
    assert result.foreign == (key,)
    assert "under other datasets' prefixes left" in result.reason
    assert all(k.startswith("a/") for k in result.deleted)
    assert os.path.exists(os.path.join(shared, key))
    assert values(shared, "b") == [3, 4]
    assert list(ka.list_datasets(shared)) == ["b"]


def test_check_accepts_the_reference_and_reports_it_missing(shared):
    store = LocalStore(shared)
    ka.write_dataset(pd.DataFrame({"p": ["x"], "v": [7]}), shared, "a", mode="append")
    report = check_dataset(store, "a", deep=True)
    assert report.ok, report.problems
    assert report.files_checked >= 3
    key = foreign_key(shared)
    os.remove(os.path.join(shared, key))
    report = check_dataset(store, "a")
    assert [(p.kind, p.key) for p in report.problems] == [("missing_file", key)]


def test_a_creator_killed_before_its_view_is_judged_by_its_own_files(shared):
    """Existence without a view checks a file of the dataset's own prefix when it has one."""
    store = LocalStore(shared)
    ka.write_dataset(pd.DataFrame({"p": ["x"], "v": [7]}), shared, "a", mode="append")
    store.delete(keys.metadata_key("a"))
    # b's maintenance may delete b's file: a still exists
    os.remove(os.path.join(shared, foreign_key(shared)))
    assert commit.exists(store, "a")
    assert list(ka.list_datasets(shared)) == ["a", "b"]


def test_the_deletion_guard_refuses_keys_outside_the_prefix(root):
    store = LocalStore(root)
    store.put("b/table/f.parquet", b"theirs")
    with pytest.raises(CorruptMetadataError, match="outside the dataset's prefix"):
        commit._delete_own(store, "a", ["a/table/x.parquet", "b/table/f.parquet"], dry_run=False)
    assert store.exists("b/table/f.parquet")
    with pytest.raises(CorruptMetadataError):  # a prefix that merely starts alike
        commit._delete_own(store, "a", ["ab/table/f.parquet"], dry_run=False)
