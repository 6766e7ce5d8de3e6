"""Row-level changes on Dask: ``update_dataset_from_ddf(..., upsert_on=)`` and ``delete_rows``.

Every result is compared with ``ka.upsert`` / ``ka.delete_rows`` on a copy of
the same dataset: the same rows, one new version, exact indices.  A failing
task, bad keys or bad input leave no version and no file behind.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import ktk_arrow as ka  # noqa: E402
from ktk_arrow import rows  # noqa: E402
from ktk_arrow.io.dask import dataframe as kdd  # noqa: E402
from ktk_arrow.io.dask import delayed as kdl  # noqa: E402
from ktk_arrow.storage import Store, resolve_store  # noqa: E402
from test_row_changes import (  # noqa: E402
    UUID,
    assert_index_exact,
    assert_key_queries_agree,
    frame,
    model_rows,
    rows_of,
    seeded,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture
def store(local_store: Store) -> Store:
    return local_store


def copy_of(store: Store, tmp_path: Path) -> Store:
    target = tmp_path / "copy"
    shutil.copytree(store.root, target)
    return resolve_store(str(target))


def listing(store: Store) -> list[str]:
    return sorted(info.key for info in store.list(""))


def versions(store: Store) -> list[int]:
    return [s.version for s in ka.history(store, UUID)]


def ddf_of(df: pd.DataFrame, npartitions: int = 3) -> Any:
    return dd.from_pandas(df, npartitions=npartitions, sort=False)


def upsert_graph(store: Store, df: pd.DataFrame, on: Any = "key", npartitions: int = 3) -> Any:
    return kdd.update_dataset_from_ddf(ddf_of(df, npartitions), store, UUID, upsert_on=on)


# -- upsert ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_upsert_equals_ka_upsert(store, tmp_path, scheduler):
    seeded(store, appends=1)
    twin = copy_of(store, tmp_path)
    # replaces keys of both writes, moves key 5 from p=1 to p=3, appends 40..49
    data = pd.concat(
        [frame(range(30, 50), v=-1), frame([1005], v=-2), frame([5], v=-3).assign(p=3)],
        ignore_index=True,
    )
    meta = upsert_graph(store, data).compute(scheduler=scheduler)
    want = ka.upsert(data, twin, UUID, on="key")
    assert versions(store) == versions(twin) == [0, 1, 2]
    assert meta.version == 2 and meta.commit.operation == "upsert"
    assert (meta.commit.rows_added, meta.commit.rows_removed) == (22, 12)
    assert (want.rows_added, want.rows_removed) == (22, 12)
    assert meta.commit.files_removed == want.files_removed
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert rows_of(store, filter=[[("key", "==", 5)]])[["p", "v"]].values.tolist() == [[3, -3]]
    assert_index_exact(store)
    assert_key_queries_agree(store, [5, 30, 39, 40, 49, 1005, 1006, 7])


def test_upsert_on_a_multi_column_key_equals_ka_upsert(store, tmp_path):
    df = pd.DataFrame({"a": [1, 1, 2, 2], "b": ["x", "y", "x", "y"], "v": [1, 2, 3, 4]})
    ka.write_dataset(df, store, UUID, partition_on=["a"])
    twin = copy_of(store, tmp_path)
    data = pd.DataFrame({"a": [1, 2, 3, 1], "b": ["y", "z", "x", "x"], "v": [20, 50, 60, 10]})
    meta = upsert_graph(store, data, on=["a", "b"], npartitions=2).compute(scheduler="sync")
    ka.upsert(data, twin, UUID, on=["a", "b"])
    assert (meta.commit.rows_added, meta.commit.rows_removed) == (4, 2)

    def table(s: Store) -> list[tuple[Any, ...]]:
        got = ka.dataset(s, UUID).to_table().to_pandas().sort_values(["a", "b"])
        return list(zip(got.a, got.b, got.v))

    assert (
        table(store)
        == table(twin)
        == [
            (1, "x", 10),
            (1, "y", 20),
            (2, "x", 3),
            (2, "y", 4),
            (2, "z", 50),
            (3, "x", 60),
        ]
    )


def test_upsert_as_part_of_a_graph_rewrites_in_the_final_task(store, tmp_path):
    seeded(store)
    twin = copy_of(store, tmp_path)
    data = frame([3, 7, 11, 99], v=-1)
    (meta,) = dask.compute(upsert_graph(store, data, npartitions=2), scheduler="sync")
    ka.upsert(data, twin, UUID, on="key")
    assert meta.version == 1 and versions(store) == [0, 1]
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert_index_exact(store)


def test_upsert_of_an_empty_ddf_commits_nothing(store):
    seeded(store)
    meta = upsert_graph(store, frame([]), npartitions=1).compute(scheduler="sync")
    assert meta.version == 0 and versions(store) == [0]


def test_plateau_reads_the_results(store):
    pl = pytest.importorskip("plateau.io.eager")
    minimalkv = pytest.importorskip("minimalkv")
    pstore = functools.partial(minimalkv.get_store_from_url, f"hfs://{store.root}")
    seeded(store)
    upsert_graph(store, frame([0, 1, 500], v=-1)).compute(scheduler="sync")
    kdd.delete_rows(store, UUID, [[("key", "in", [2, 3])]]).compute(scheduler="sync")
    got = pl.read_table(UUID, store=pstore)
    pd.testing.assert_frame_equal(
        model_rows(got.astype({"p": "int64"})), rows_of(store), check_dtype=False
    )
    assert pl.read_table(UUID, store=pstore, predicates=[[("key", "==", 500)]]).v.tolist() == [-1]


# -- delete_rows ------------------------------------------------------------------------

FILTERS = [
    pytest.param([[("key", "in", [1, 5, 1005, 1033])]], id="indexed-keys"),
    pytest.param([[("v", ">=", 10_200)]], id="statistics"),
    pytest.param([[("p", "==", 1)]], id="partition-whole-files"),
    pytest.param(pc.field("key").isin([1, 2, 3]) & (pc.field("v") > 15), id="expression"),
    pytest.param([[("p", "==", 2), ("v", "<", 100)], [("key", "==", 1001)]], id="or"),
]


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("entry", ["dataframe", "delayed"])
def test_delete_rows_equals_ka_delete_rows(store, tmp_path, flt, entry):
    seeded(store, appends=1)
    twin = copy_of(store, tmp_path)
    fn = kdd.delete_rows if entry == "dataframe" else kdl.delete_rows__delayed
    graph = fn(store, UUID, flt)
    snap = graph.compute(scheduler="sync")
    want = ka.delete_rows(twin, UUID, flt)
    assert versions(store) == versions(twin) == [0, 1, 2]
    assert snap.operation == "delete_rows" and snap.version == 2
    assert (snap.rows_added, snap.rows_removed, snap.files_removed) == (
        want.rows_added,
        want.rows_removed,
        want.files_removed,
    )
    assert snap.rows_removed > 0
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert_index_exact(store)


def test_delete_rows_runs_one_task_per_file_holding_a_key(store):
    seeded(store, appends=1)  # 8 files; keys 1 and 1001 are in two files of p=1
    graph = kdd.delete_rows(store, UUID, [[("key", "in", [1, 1001])]])
    assert len(graph._parts) == 2
    assert kdd.delete_rows(store, UUID, [[("p", "==", 1)]])._parts == []  # no file is read


def test_delete_all_rows_and_in_a_graph(store):
    seeded(store)
    (snap,) = dask.compute(kdd.delete_rows(store, UUID, [[("key", "<", 10)]]))
    assert snap.rows_removed == 10
    snap = kdd.delete_rows(store, UUID, all_rows=True).compute(scheduler="sync")
    assert (snap.version, snap.rows_removed, snap.files_removed) == (2, 30, 4)
    assert ka.dataset(store, UUID).count_rows() == 0


def test_delete_matching_nothing_commits_no_version(store):
    seeded(store)
    before = listing(store)
    snap = kdd.delete_rows(store, UUID, [[("key", "==", 99_999)]]).compute(scheduler="sync")
    assert (snap.version, snap.rows_removed, snap.files_removed) == (0, 0, 0)
    assert versions(store) == [0] and listing(store) == before


def test_delete_conflicts_with_a_matching_append_after_it_was_planned(store):
    seeded(store)
    graph = kdd.delete_rows(store, UUID, [[("key", "==", 5)]])
    ka.write_dataset(frame([5]), store, UUID, mode="append")
    before = listing(store)
    with pytest.raises(ka.CommitConflictError):
        graph.compute(scheduler="sync")
    assert versions(store) == [0, 1] and listing(store) == before


def test_delete_rebases_over_an_append_that_cannot_match(store):
    model = seeded(store)
    graph = kdd.delete_rows(store, UUID, [[("key", "==", 5)]])
    ka.write_dataset(frame([500]), store, UUID, mode="append")
    assert graph.compute(scheduler="sync").version == 2
    want = pd.concat([model[model.key != 5], frame([500])], ignore_index=True)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
    assert_index_exact(store)


# -- failures: no version, no file left --------------------------------------------------


def _boom(df: pd.DataFrame) -> pd.DataFrame:
    if (df["key"] >= 45).any():  # the last partition
        raise RuntimeError("partition boom")
    return df


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_failing_partition_leaves_no_version_and_no_file(store, scheduler):
    seeded(store)
    before = listing(store)
    ddf = ddf_of(frame(range(30, 50), v=-1)).map_partitions(_boom)
    graph = kdd.update_dataset_from_ddf(ddf, store, UUID, upsert_on="key")
    with pytest.raises(RuntimeError, match="partition boom"):
        graph.compute(scheduler=scheduler)
    assert versions(store) == [0] and listing(store) == before


def _failing_second_rewrite(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rows.rewrite_file`` raises for the second file it is given (after the first wrote)."""
    real = rows.rewrite_file
    seen: list[str] = []

    def rewrite_file(store, meta, writer, task, matcher):
        seen.append(task.label)
        if len(seen) == 2:
            raise OSError("disk boom")
        return real(store, meta, writer, task, matcher)

    monkeypatch.setattr(rows, "rewrite_file", rewrite_file)
    return seen


def test_a_failing_rewrite_of_an_upsert_deletes_every_file_it_wrote(store, monkeypatch):
    seeded(store)
    before = listing(store)
    seen = _failing_second_rewrite(monkeypatch)
    with pytest.raises(OSError, match="disk boom"):
        upsert_graph(store, frame(range(30, 50), v=-1)).compute(scheduler="sync")
    assert len(seen) == 4  # every task ran to its end: none is left writing
    assert versions(store) == [0] and listing(store) == before


@pytest.mark.parametrize("mode", ["compute", "graph"])
def test_a_failing_rewrite_of_a_delete_deletes_every_file_it_wrote(store, monkeypatch, mode):
    seeded(store)
    before = listing(store)
    seen = _failing_second_rewrite(monkeypatch)
    graph = kdd.delete_rows(store, UUID, [[("key", "in", [1, 2, 3])]])
    with pytest.raises(OSError, match="disk boom"):
        if mode == "compute":
            graph.compute(scheduler="sync")
        else:
            dask.compute(graph, scheduler="sync")
    assert len(seen) == 3
    assert versions(store) == [0] and listing(store) == before


def test_duplicate_keys_across_partitions_are_named_and_nothing_is_written(store):
    seeded(store)
    before = listing(store)
    data = frame([1, 2, 3, 50, 3, 60])
    ddf = ddf_of(data, npartitions=2)
    assert [list(ddf.partitions[i].compute().key) for i in range(2)] == [[1, 2, 3], [50, 3, 60]]
    with pytest.raises(ka.InvalidArgumentError, match=r"\{'key': 3\} \(2 rows\)"):
        kdd.update_dataset_from_ddf(ddf, store, UUID, upsert_on="key").compute(scheduler="sync")
    assert versions(store) == [0] and listing(store) == before


def test_null_keys_are_named_and_nothing_is_written(store):
    seeded(store)
    before = listing(store)
    data = pd.DataFrame(
        {
            "p": [0, 1, 2, 3],
            "key": pd.array([1, 2, None, 4], dtype="Int64"),
            "v": [1, 2, 3, 4],
            "name": list("abcd"),
        }
    )
    with pytest.raises(ka.InvalidArgumentError, match=r"'key' has 1 null.*Dask partition 1"):
        upsert_graph(store, data, npartitions=2).compute(scheduler="sync")
    assert versions(store) == [0] and listing(store) == before


@pytest.mark.parametrize(
    "call, error, named",
    [
        (lambda s: upsert_graph(s, frame([1]), on="nope"), ka.InvalidArgumentError, "nope"),
        (
            lambda s: upsert_graph(s, frame([1]).drop(columns="key")),
            ka.InvalidArgumentError,
            "missing from the data",
        ),
        (lambda s: upsert_graph(s, frame([1]), on=[]), ka.InvalidArgumentError, "on=[]"),
        (
            lambda s: kdd.update_dataset_from_ddf(
                ddf_of(frame([1])), s, UUID, upsert_on="key", delete_scope=[{"p": 1}]
            ),
            ka.InvalidArgumentError,
            "delete_scope",
        ),
        (
            lambda s: kdd.delete_rows(s, UUID, [[("nope", "==", 1)]]),
            ka.InvalidPredicateError,
            "nope",
        ),
        (lambda s: kdd.delete_rows(s, UUID, None), ka.InvalidArgumentError, "all_rows=True"),
        (
            lambda s: kdd.delete_rows(s, "other", [[("key", "==", 1)]]),
            ka.DatasetNotFoundError,
            "'other'",
        ),
        (
            lambda s: kdd.update_dataset_from_ddf(ddf_of(frame([1])), s, "other", upsert_on="key"),
            ka.DatasetNotFoundError,
            "'other'",
        ),
    ],
)
def test_bad_input_is_refused_before_any_task_runs(store, call, error, named):
    seeded(store)
    before = listing(store)
    with pytest.raises(error) as err:
        call(store)
    assert named in str(err.value)
    assert listing(store) == before


def test_a_schema_mismatch_in_a_partition_leaves_nothing(store):
    seeded(store)
    before = listing(store)
    with pytest.raises(ka.SchemaMismatchError, match="extra"):
        upsert_graph(store, frame([1, 2, 3]).assign(extra=1)).compute(scheduler="sync")
    assert versions(store) == [0] and listing(store) == before


# -- a real cluster ---------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=False,
            threads_per_worker=1,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client_,
    ):
        yield client_


def test_on_a_cluster_upsert_and_delete_equal_ka_and_failures_leave_nothing(
    client, store, tmp_path
):
    seeded(store, appends=1)
    twin = copy_of(store, tmp_path)
    data = frame([*range(30, 50), 1001, 1002], v=-1)
    meta = upsert_graph(store, data).compute()
    ka.upsert(data, twin, UUID, on="key")
    snap = kdd.delete_rows(store, UUID, [[("v", ">", 10_300)]]).compute()
    want = ka.delete_rows(twin, UUID, [[("v", ">", 10_300)]])
    assert (meta.version, snap.version) == (2, 3)
    assert snap.rows_removed == want.rows_removed > 0
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert_index_exact(store)
    before = listing(store)
    ddf = ddf_of(frame(range(30, 50), v=-5)).map_partitions(_boom)
    with pytest.raises(RuntimeError, match="partition boom"):
        kdd.update_dataset_from_ddf(ddf, store, UUID, upsert_on="key").compute()
    assert versions(store) == [0, 1, 2, 3] and listing(store) == before
    # as part of a graph, the commit is the graph's last task, on a worker
    (graph_snap,) = dask.compute(kdd.delete_rows(store, UUID, [[("key", "==", 7)]]))
    assert (graph_snap.version, graph_snap.rows_removed) == (4, 1)
    (graph_meta,) = dask.compute(upsert_graph(store, frame([7, 8], v=-9), npartitions=2))
    assert (graph_meta.version, graph_meta.commit.rows_removed) == (5, 1)
    ka.delete_rows(twin, UUID, [[("key", "==", 7)]])
    ka.upsert(frame([7, 8], v=-9), twin, UUID, on="key")
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert_index_exact(store)


def test_two_upserts_of_one_new_key_conflict_instead_of_duplicating(store):
    seeded(store)
    first = upsert_graph(store, frame([77], v=1), npartitions=1)
    second = upsert_graph(store, frame([77], v=2), npartitions=1)
    first.compute(scheduler="sync")
    before = listing(store)
    with pytest.raises(ka.CommitConflictError):
        second.compute(scheduler="sync")
    assert rows_of(store, filter=[[("key", "==", 77)]]).v.tolist() == [1]
    assert versions(store) == [0, 1] and listing(store) == before


# -- random changes equal ka's ----------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    upserted=st.lists(st.integers(0, 30), min_size=1, max_size=12, unique=True),
    deleted=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    npartitions=st.integers(1, 4),
)
def test_random_upserts_and_deletes_equal_ka(tmp_path_factory, upserted, deleted, npartitions):
    root = tmp_path_factory.mktemp("ds")
    store, twin = resolve_store(str(root / "a")), resolve_store(str(root / "b"))
    for s in (store, twin):
        ka.write_dataset(frame(range(20)), s, UUID, partition_on=["p"], secondary_indices=["key"])
    data = frame(upserted, v=-1)
    upsert_graph(store, data, npartitions=npartitions).compute(scheduler="sync")
    ka.upsert(data, twin, UUID, on="key")
    flt = [[("key", "in", deleted)]]
    snap = kdd.delete_rows(store, UUID, flt).compute(scheduler="sync")
    want = ka.delete_rows(twin, UUID, flt)
    assert (snap.version, snap.rows_removed) == (want.version, want.rows_removed)
    pd.testing.assert_frame_equal(rows_of(store), rows_of(twin))
    assert_index_exact(store)
