"""A secondary index stays defined when nothing is left to index.

A dataset emptied (``delete_rows(all_rows=True)``, an overwrite whose
``delete_scope`` matches every file) and a write whose indexed values are all
null keep their index definitions, stored as an empty index file; later
appends are indexed, point queries plan by the index, plateau reads the
dataset and its index, and ``ktk check`` finds nothing wrong.
"""

from __future__ import annotations

import functools

import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.check import check_dataset
from ktk_arrow.storage import resolve_store

minimalkv = pytest.importorskip("minimalkv")
import plateau.io.eager as pl  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UUID = "indexed"


@pytest.fixture
def root(tmp_path) -> str:
    path = tmp_path / "store"
    path.mkdir()
    return str(path)


#: ``large_string`` is what plateau derives for pandas' ``str`` columns: its appends
#: refuse an index file of another string type
SCHEMA = pa.schema([("p", pa.string()), ("id", pa.int64()), ("tag", pa.large_string())])


def rows(ids: list[int], tags: list[str | None], part: str = "A") -> pa.Table:
    return pa.table({"p": [part] * len(ids), "id": ids, "tag": tags}, schema=SCHEMA)


def plateau_store(root: str):
    return functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")


def emptied_by_delete_rows(root: str) -> None:
    ka.write_dataset(
        rows([1, 2], ["a", "z"]), root, UUID, partition_on=["p"], secondary_indices=["tag"]
    )
    ka.delete_rows(root, UUID, all_rows=True)


def emptied_by_delete_scope(root: str) -> None:
    ka.write_dataset(
        rows([1, 2], ["a", "z"]), root, UUID, partition_on=["p"], secondary_indices=["tag"]
    )
    ka.write_dataset(
        rows([], []), root, UUID, mode="overwrite", delete_scope=[{"p": "A"}], allow_empty=True
    )


def all_null(root: str) -> None:
    ka.write_dataset(
        rows([1, 2], [None, None]), root, UUID, partition_on=["p"], secondary_indices=["tag"]
    )


CASES = {
    "delete_rows_all": emptied_by_delete_rows,
    "delete_scope_all": emptied_by_delete_scope,
    "all_null": all_null,
}


@pytest.fixture(params=sorted(CASES))
def case(request, root):
    CASES[request.param](root)
    return request.param


def test_the_index_stays_defined(root, case):
    meta = commit.load(resolve_store(root), UUID)
    assert list(meta.indices) == ["tag"]
    assert ka.dataset(root, UUID).indices == ["tag"]
    assert dict(commit.read_index(resolve_store(root), meta, "tag")) == {}
    expected_files = 1 if case == "all_null" else 0
    assert len(meta.files) == expected_files
    assert ka.dataset(root, UUID, filter=[[("tag", "==", "a")]]).to_table().num_rows == 0


def test_later_appends_are_indexed_and_queries_use_the_index(root, case):
    # min/max statistics of this file ("a".."z") cannot exclude "m": only the index can
    ka.write_dataset(rows([10, 11], ["a", "z"]), root, UUID, mode="append")
    ka.write_dataset(rows([12], ["m"]), root, UUID, mode="append")
    meta = commit.load(resolve_store(root), UUID)
    index = commit.read_index(resolve_store(root), meta, "tag")
    assert sorted(index) == ["a", "m", "z"]
    ds = ka.dataset(root, UUID, filter=[[("tag", "==", "m")]])
    assert [t.label for t in ds.tasks] == sorted(index["m"])
    assert len(ds.tasks) == 1
    assert ds.to_table().column("id").to_pylist() == [12]
    # upserts are indexed too
    ka.upsert(rows([20], ["q"]), root, UUID, on="id")
    ds = ka.dataset(root, UUID, filter=[[("tag", "==", "q")]])
    assert len(ds.tasks) == 1 and ds.to_table().column("id").to_pylist() == [20]


def test_plateau_reads_the_dataset_and_its_empty_index(root, case):
    store = plateau_store(root)
    frames = pl.read_dataset_as_dataframes(UUID, store=store, predicates=[[("tag", "==", "a")]])
    assert sum(len(df) for df in frames) == 0
    assert len(pl.read_table(UUID, store=store)) == (2 if case == "all_null" else 0)
    ka.write_dataset(rows([10, 11], ["a", "z"]), root, UUID, mode="append")
    frames = pl.read_dataset_as_dataframes(UUID, store=store, predicates=[[("tag", "==", "z")]])
    assert pd.concat(frames)["id"].tolist() == [11]


def test_plateau_appends_to_a_dataset_with_an_empty_index(root, case):
    store = plateau_store(root)
    df = pd.DataFrame({"p": ["B"], "id": [30], "tag": ["w"]})
    pl.update_dataset_from_dataframes([df], store=store, dataset_uuid=UUID)
    with pytest.warns(UserWarning, match="appended to by plateau"):
        ds = ka.dataset(root, UUID, filter=[[("tag", "==", "w")]])
    assert ds.to_table().column("id").to_pylist() == [30]


def test_ktk_check_finds_no_problem(root, case):
    report = check_dataset(resolve_store(root), UUID)
    assert report.ok and report.problems == [], report.problems
    ka.write_dataset(rows([10], ["a"]), root, UUID, mode="append")
    report = check_dataset(resolve_store(root), UUID, deep=True)
    assert report.ok and report.problems == [], report.problems


def test_an_index_defined_on_a_dataset_without_files(root):
    """A partitioned dataset created from empty input keeps its index for the first append."""
    ka.write_dataset(
        rows([], []),
        root,
        UUID,
        partition_on=["p"],
        secondary_indices=["tag"],
        schema=SCHEMA,
    )
    assert ka.dataset(root, UUID).indices == ["tag"]
    ka.write_dataset(rows([1, 2], ["a", "b"]), root, UUID, mode="append")
    ds = ka.dataset(root, UUID, filter=[[("tag", "==", "b")]])
    assert ds.to_table().column("id").to_pylist() == [2]


def test_emptying_an_empty_dataset_commits_nothing(root):
    emptied_by_delete_rows(root)
    before = ka.history(root, UUID)
    ka.delete_rows(root, UUID, all_rows=True)
    assert ka.history(root, UUID) == before
    assert ka.dataset(root, UUID).indices == ["tag"]
