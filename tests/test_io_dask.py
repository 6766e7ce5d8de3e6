"""ktk_arrow.io.dask.{dataframe,delayed,bag}: plateau's Dask API, one commit per write.

Most tests run on Dask's local schedulers; the ``cluster`` tests run on a
real ``distributed`` LocalCluster with two worker processes, which proves
that plans, readers, write tasks and datasets pickle.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")

import ktk_arrow as ka  # noqa: E402
from ktk_arrow.io import eager  # noqa: E402
from ktk_arrow.io.dask import bag as kbag  # noqa: E402
from ktk_arrow.io.dask import dataframe as kdd  # noqa: E402
from ktk_arrow.io.dask import delayed as kdl  # noqa: E402
from ktk_arrow.storage import resolve_store  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def _df(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "p": [i % 3 for i in range(n)],
            "x": [f"v{i % 4}" for i in range(n)],
            "y": np.arange(n, dtype="float64"),
            "t": pd.date_range("2024-01-01", periods=n, freq="h"),
        }
    )


def _ddf(n: int = 12, npartitions: int = 3) -> Any:
    return dd.from_pandas(_df(n), npartitions=npartitions, sort=False)


def _objects(store: str, uuid: str) -> list[str]:
    return [info.key for info in resolve_store(store).list(f"{uuid}/")]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("y", ignore_index=True)[["p", "x", "y", "t"]]


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(_sorted(got), _sorted(want), check_dtype=False)


def _stored(store: str, uuid: str, partition_on: Any = ("p",), indices: Any = ("x",)) -> None:
    kdd.store_dataset_from_ddf(
        _ddf(),
        store,
        uuid,
        partition_on=list(partition_on),
        secondary_indices=list(indices),
    ).compute()


# -- dataframe: writing -----------------------------------------------------------


def test_store_dataset_from_ddf_round_trips_with_partition_on_and_indices(store: str) -> None:
    graph = kdd.store_dataset_from_ddf(
        _ddf(), store, "u", partition_on=["p"], secondary_indices=["x"]
    )
    assert _objects(store, "u") == []  # lazy: nothing written before compute
    meta = graph.compute()
    assert len(meta.files) == 9  # 3 dask partitions x 3 values of p
    assert set(meta.indices) == {"x"}
    assert [s.operation for s in ka.history(store, "u")] == ["create"]
    _assert_same(eager.read_table("u", store), _df())
    # the index is complete: pruning by it finds every row
    assert len(eager.read_table("u", store, predicates=[[("x", "==", "v1")]])) == 3


def test_store_dataset_from_ddf_via_dask_compute_commits_in_the_graph(store: str) -> None:
    graph = kdd.store_dataset_from_ddf(_ddf(), store, "u", partition_on=["p"])
    (meta,) = dask.compute(graph)
    assert len(meta.files) == 9
    _assert_same(eager.read_table("u", store), _df())


def test_store_dataset_from_ddf_refuses_existing_unless_overwrite(store: str) -> None:
    _stored(store, "u")
    with pytest.raises(ka.DatasetExistsError):
        kdd.store_dataset_from_ddf(_ddf(), store, "u")
    meta = kdd.store_dataset_from_ddf(
        _ddf(6, 2), store, "u", overwrite=True, secondary_indices=["x"]
    ).compute()
    assert meta.total_rows == 6
    assert meta.partition_keys == ()


def test_overwrite_may_drop_the_old_indices(store: str) -> None:
    _stored(store, "u")
    meta = kdd.store_dataset_from_ddf(_ddf(6, 2), store, "u", overwrite=True).compute()
    assert meta.indices == {}


def test_store_dataset_from_ddf_shuffle_makes_one_file_per_bucket(store: str) -> None:
    meta = kdd.store_dataset_from_ddf(
        _ddf(24, 4), store, "u", partition_on=["p"], shuffle=True, num_buckets=2, bucket_by="x"
    ).compute()
    per_value: dict[str, int] = {}
    for label in meta.files:
        per_value[label.split("/")[0]] = per_value.get(label.split("/")[0], 0) + 1
    assert per_value == {"p=0": 2, "p=1": 2, "p=2": 2}
    _assert_same(eager.read_table("u", store), _df(24))


def test_store_dataset_from_ddf_sorts_and_repartitions(store: str) -> None:
    df = _df().sample(frac=1, random_state=1)
    meta = kdd.store_dataset_from_ddf(
        dd.from_pandas(df, npartitions=4, sort=False),
        store,
        "u",
        sort_partitions_by="y",
        repartition_ratio=2,
    ).compute()
    assert len(meta.files) == 2
    for frame in eager.read_dataset_as_dataframes("u", store):
        assert frame["y"].is_monotonic_increasing


def test_update_dataset_from_ddf_appends_and_replaces_delete_scope(store: str) -> None:
    _stored(store, "u")
    new = _df(4).assign(p=0, y=lambda d: d["y"] + 100)
    meta = kdd.update_dataset_from_ddf(
        dd.from_pandas(new, npartitions=2), store, "u", delete_scope=[{"p": 0}]
    ).compute()
    assert [s.operation for s in ka.history(store, "u")] == ["create", "overwrite_partitions"]
    back = eager.read_table("u", store)
    assert sorted(back[back["p"] == 0]["y"]) == [100.0, 101.0, 102.0, 103.0]
    assert meta.total_rows == 12 - 4 + 4
    # the new files are indexed too
    found = eager.read_table("u", store, predicates=[[("x", "==", "v0")]])
    assert sorted(found["y"]) == [4.0, 8.0, 100.0]
    meta = kdd.update_dataset_from_ddf(dd.from_pandas(new, npartitions=1), store, "u").compute()
    assert meta.total_rows == 16


def test_update_dataset_from_ddf_none_only_deletes(store: str) -> None:
    _stored(store, "u")
    meta = kdd.update_dataset_from_ddf(None, store, "u", delete_scope=[{"p": 1}]).compute()
    assert meta.total_rows == 8
    assert ka.history(store, "u")[-1].operation == "delete_scope"


def test_update_with_delete_scope_on_unknown_column_is_refused_before_writing(store: str) -> None:
    _stored(store, "u")
    with pytest.raises(ka.InvalidArgumentError, match="neither partition keys"):
        kdd.update_dataset_from_ddf(_ddf(), store, "u", delete_scope=[{"nope": 1}])


def test_update_dataset_from_ddf_refuses_an_index_the_old_files_lack(store: str) -> None:
    _stored(store, "u", indices=())
    with pytest.raises(ka.InvalidArgumentError, match="build_dataset_indices"):
        kdd.update_dataset_from_ddf(_ddf(), store, "u", secondary_indices=["x"])


def test_update_dataset_from_ddf_rejects_other_partition_keys(store: str) -> None:
    _stored(store, "u")
    with pytest.raises(ka.InvalidArgumentError, match="partition_on"):
        kdd.update_dataset_from_ddf(_ddf(), store, "u", partition_on=["x"])


def test_concurrent_ddf_appends_both_land(store: str) -> None:
    _stored(store, "u")
    graphs = [kdd.update_dataset_from_ddf(_ddf(6, 2), store, "u") for _ in range(2)]
    threads = [threading.Thread(target=g.compute, kwargs={"scheduler": "sync"}) for g in graphs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ka.dataset(store, "u").count_rows() == 12 + 6 + 6


# -- failures: nothing visible, no stray files ---------------------------------------


def _bad_partition(df: pd.DataFrame) -> pd.DataFrame:
    if (df["y"] >= 8).any():  # the last of three partitions: sub-microsecond timestamps
        return df.assign(t=df["t"] + pd.Timedelta(1, "ns"))
    return df


def _boom(df: pd.DataFrame) -> pd.DataFrame:
    if (df["y"] >= 8).any():
        raise RuntimeError("upstream boom")
    return df


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_failing_write_task_leaves_nothing(store: str, scheduler: str) -> None:
    ddf = _ddf().map_partitions(_bad_partition)
    graph = kdd.store_dataset_from_ddf(ddf, store, "u", partition_on=["p"])
    with pytest.raises(ka.InvalidArgumentError, match="sub-microsecond"):
        graph.compute(scheduler=scheduler)
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(store, "u")
    assert _objects(store, "u") == []


def test_failing_write_task_in_graph_mode_leaves_nothing(store: str) -> None:
    ddf = _ddf().map_partitions(_bad_partition)
    graph = kdd.store_dataset_from_ddf(ddf, store, "u", partition_on=["p"])
    with pytest.raises(ka.InvalidArgumentError, match="sub-microsecond"):
        dask.compute(graph)
    assert _objects(store, "u") == []


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_failing_upstream_task_leaves_nothing(store: str, scheduler: str) -> None:
    _stored(store, "u")
    before = sorted(_objects(store, "u"))
    graph = kdd.update_dataset_from_ddf(_ddf().map_partitions(_boom), store, "u")
    with pytest.raises(RuntimeError, match="upstream boom"):
        graph.compute(scheduler=scheduler)
    assert ka.dataset(store, "u").count_rows() == 12
    assert sorted(_objects(store, "u")) == before


def test_partitions_with_conflicting_types_leave_nothing(store: str) -> None:
    parts = [
        dask.delayed(pd.DataFrame({"a": [1, 2]})),
        dask.delayed(pd.DataFrame({"a": ["x", "y"]})),
    ]
    with pytest.raises(ka.SchemaMismatchError, match="'a'"):
        kdl.store_delayed_as_dataset(parts, store, "u").compute()
    assert _objects(store, "u") == []


def test_partitions_with_a_null_column_take_the_type_of_the_others(store: str) -> None:
    parts = [
        dask.delayed(pd.DataFrame({"a": [1, 2], "b": [None, None]})),
        dask.delayed(pd.DataFrame({"a": [3], "b": ["z"]})),
    ]
    meta = kdl.store_delayed_as_dataset(parts, store, "u").compute()
    assert pa.types.is_large_string(meta.schema.field("b").type)
    back = eager.read_table("u", store).sort_values("a", ignore_index=True)
    assert back["b"].tolist()[2] == "z" and back["b"].isna().sum() == 2


# -- dataframe: reading -----------------------------------------------------------


def test_read_dataset_as_ddf_has_one_partition_per_file_and_meta_from_schema(
    store: str,
) -> None:
    _stored(store, "u")
    ddf = kdd.read_dataset_as_ddf("u", store)
    assert ddf.npartitions == 9
    want = eager.read_table("u", store)
    assert dict(ddf.dtypes) == dict(want.dtypes)
    _assert_same(ddf.compute(), _df())


def test_read_dataset_as_ddf_prunes_files_when_building_the_graph(store: str) -> None:
    _stored(store, "u")
    by_partition = kdd.read_dataset_as_ddf("u", store, predicates=[[("p", "==", 1)]])
    assert by_partition.npartitions == 3
    assert set(by_partition.compute()["p"]) == {1}
    # x == "v1" holds in rows 1, 5, 9: p = 1, 2, 0 in dask partitions 0, 1, 2
    by_index = kdd.read_dataset_as_ddf("u", store, predicates=[[("x", "==", "v1")]])
    assert by_index.npartitions == 3
    assert sorted(by_index.compute()["y"]) == [1.0, 5.0, 9.0]
    both = kdd.read_dataset_as_ddf(
        "u", store, predicates=[[("x", "==", "v1"), ("p", "==", 1)], [("y", ">", 10.0)]]
    )
    assert sorted(both.compute()["y"]) == [1.0, 11.0]
    nothing = kdd.read_dataset_as_ddf("u", store, predicates=[[("p", "==", 7)]])
    assert len(nothing.compute()) == 0
    assert list(nothing.columns) == ["p", "x", "y", "t"]


def test_read_dataset_as_ddf_columns_and_projection(store: str) -> None:
    _stored(store, "u")
    ddf = kdd.read_dataset_as_ddf("u", store, columns=["y", "p"])
    assert list(ddf.columns) == ["y", "p"]
    assert list(ddf.compute().columns) == ["y", "p"]
    assert sorted(kdd.read_dataset_as_ddf("u", store)["y"].compute()) == list(range(12))
    with pytest.raises(ka.InvalidArgumentError, match="nope"):
        kdd.read_dataset_as_ddf("u", store, columns=["nope"])


def test_read_dataset_as_ddf_categoricals(store: str) -> None:
    _stored(store, "u")
    ddf = kdd.read_dataset_as_ddf("u", store, categoricals=["x", "p"])
    assert ddf["x"].cat.known and ddf["p"].cat.known  # indexed: dataset-wide categories
    assert list(ddf.dtypes["x"].categories) == ["v0", "v1", "v2", "v3"]
    out = ddf.compute()
    assert out["x"].dtype == ddf.dtypes["x"]
    plain = kdd.read_dataset_as_ddf("u", store, columns=["y", "t"], categoricals=["y"])
    assert not plain["y"].cat.known


def test_read_dataset_as_ddf_dispatch_by_and_dask_index_on(store: str) -> None:
    _stored(store, "u")
    by_p = kdd.read_dataset_as_ddf("u", store, dispatch_by=["p"])
    assert by_p.npartitions == 3
    assert [set(by_p.get_partition(i).compute()["p"]) for i in range(3)] == [{0}, {1}, {2}]
    by_x = kdd.read_dataset_as_ddf("u", store, dispatch_by=["x"])
    assert by_x.npartitions == 4
    assert [len(by_x.get_partition(i).compute()) for i in range(4)] == [3, 3, 3, 3]
    indexed = kdd.read_dataset_as_ddf("u", store, dask_index_on="p")
    assert indexed.divisions == (0, 1, 2, 2)
    assert indexed.index.name == "p"
    assert sorted(indexed.loc[1].compute()["y"]) == [1.0, 4.0, 7.0, 10.0]
    with pytest.raises(ValueError, match="dispatch_by"):
        kdd.read_dataset_as_ddf("u", store, dask_index_on="p", dispatch_by=["p"])
    with pytest.raises(ka.InvalidArgumentError, match="cannot dispatch"):
        kdd.read_dataset_as_ddf("u", store, dispatch_by=["y"])


def test_hash_dataset(store: str) -> None:
    _stored(store, "u")
    per_file = kdd.hash_dataset(store, "u").compute()
    assert len(per_file) == 9 and per_file.dtype == "uint64"
    per_group = kdd.hash_dataset(store, "u", group_key=["p"], subset=["y"]).compute()
    assert sorted(per_group.index) == [0, 1, 2]
    again = kdd.hash_dataset(store, "u", group_key=["p"], subset=["y"]).compute()
    pd.testing.assert_series_equal(per_group.sort_index(), again.sort_index())


@pytest.mark.filterwarnings("ignore")  # plateau and minimalkv deprecations
def test_plateau_reads_what_dask_wrote_and_hashes_alike(store: str) -> None:
    plateau_eager = pytest.importorskip("plateau.io.eager")
    plateau_ddf = pytest.importorskip("plateau.io.dask.dataframe")
    minimalkv = pytest.importorskip("minimalkv")
    _stored(store, "u")

    def factory() -> Any:
        return minimalkv.get_store_from_url(f"hfs://{store}")

    _assert_same(plateau_eager.read_table("u", factory), _df())
    theirs = plateau_ddf.hash_dataset(factory, "u", subset=["y"], group_key=["p"]).compute()
    ours = kdd.hash_dataset(store, "u", subset=["y"], group_key=["p"]).compute()
    pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index())


# -- delayed ------------------------------------------------------------------------


def _delayed_frames() -> list[Any]:
    df = _df()
    return [dask.delayed(df.iloc[i : i + 4]) for i in range(0, 12, 4)]


def test_delayed_round_trip_and_pruning(store: str) -> None:
    graph = kdl.store_delayed_as_dataset(
        _delayed_frames(), store, "u", partition_on=["p"], secondary_indices=["x"]
    )
    meta = graph.compute()
    assert len(meta.files) == 9
    parts = kdl.read_dataset_as_delayed("u", store)
    assert len(parts) == 9
    _assert_same(pd.concat(dask.compute(*parts)), _df())
    pruned = kdl.read_dataset_as_delayed("u", store, predicates=[[("x", "==", "v2")]])
    assert len(pruned) == 3
    assert len(kdl.read_table_as_delayed("u", store, dispatch_by=["p"])) == 3


def test_update_dataset_from_delayed_with_delete_scope(store: str) -> None:
    kdl.store_delayed_as_dataset(_delayed_frames(), store, "u", partition_on=["p"]).compute()
    new = dask.delayed(pd.DataFrame({"p": [2], "x": ["n"], "y": [99.0], "t": [pd.Timestamp(0)]}))
    meta = kdl.update_dataset_from_delayed([new], store, "u", delete_scope=[{"p": 2}]).compute()
    assert meta.total_rows == 9
    only = kdl.update_dataset_from_delayed([], store, "u", delete_scope=[{"p": 2}]).compute()
    assert only.total_rows == 8


def test_store_delayed_picks_a_uuid_and_accepts_lists_and_none(store: str) -> None:
    df = _df(4)
    meta = kdl.store_delayed_as_dataset(
        [dask.delayed([df, df]), dask.delayed(None)], store
    ).compute()
    assert len(meta.uuid) == 32 and meta.total_rows == 8


def test_delete_and_garbage_collect_delayed(store: str) -> None:
    _stored(store, "u")
    stray = "u/table/p=0/left-by-a-crashed-writer.parquet"
    resolve_store(store).put(stray, b"not committed")
    (gc,) = kdl.garbage_collect_dataset__delayed("u", store, grace_period=timedelta(0), force=True)
    assert gc.compute() == [stray]
    assert ka.dataset(store, "u").count_rows() == 12
    kdl.delete_dataset__delayed("u", store).compute()
    assert _objects(store, "u") == []
    with pytest.raises(ka.DatasetNotFoundError):
        kdl.delete_dataset__delayed("u", store)


# -- bag ----------------------------------------------------------------------------


def test_bag_round_trip_pruning_and_index_build(store: str) -> None:
    df = _df()
    bag = db.from_sequence([df.iloc[i : i + 3] for i in range(0, 12, 3)], npartitions=2)
    meta = kbag.store_bag_as_dataset(bag, store, "u", partition_on=["p"]).compute(scheduler="sync")
    assert meta.total_rows == 12
    frames = kbag.read_dataset_as_dataframe_bag("u", store, partition_size=3)
    assert frames.npartitions == -(-len(meta.files) // 3)
    _assert_same(pd.concat(frames.compute(scheduler="sync")), df)
    meta = kbag.build_dataset_indices__bag(store, "u", ["x"], partition_size=2).compute(
        scheduler="sync"
    )
    assert set(meta.indices) == {"x"}
    pruned = kbag.read_dataset_as_dataframe_bag("u", store, predicates=[[("x", "==", "v3")]])
    got = pd.concat(pruned.compute(scheduler="sync"))
    assert sorted(got["y"]) == [3.0, 7.0, 11.0]
    assert pruned.count().compute(scheduler="sync") <= 3


# -- optional dependency --------------------------------------------------------------


def test_without_dask_the_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask", None)
    for name in ("ktk_arrow.io.dask.dataframe", "ktk_arrow.io._distributed"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ktk-arrow\[dask\]'"):
        importlib.import_module("ktk_arrow.io.dask.dataframe")


# -- a real cluster: everything pickles ---------------------------------------------


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client_,
    ):
        yield client_


def _count(dataset: ka.KartothekDataset) -> tuple[int, list[float]]:
    table = dataset.to_table()
    return table.num_rows, sorted(table.column("y").to_pylist())


def test_cluster_write_then_read_ddf(client: Any, store: str) -> None:
    meta = kdd.store_dataset_from_ddf(
        _ddf(), store, "u", partition_on=["p"], secondary_indices=["x"]
    ).compute()
    assert len(meta.files) == 9
    ddf = kdd.read_dataset_as_ddf("u", store, predicates=[[("x", "==", "v1")]])
    assert ddf.npartitions == 3
    assert sorted(ddf.compute()["y"]) == [1.0, 5.0, 9.0]
    _assert_same(kdd.read_dataset_as_ddf("u", store).compute(), _df())


def test_cluster_update_and_graph_mode(client: Any, store: str) -> None:
    _stored(store, "u")
    new = dd.from_pandas(_df(4).assign(p=1), npartitions=2)
    graph = kdd.update_dataset_from_ddf(new, store, "u", delete_scope=[{"p": 1}])
    (meta,) = dask.compute(graph)  # the commit runs as the graph's last task
    assert meta.total_rows == 12 - 4 + 4
    future = client.compute(kdl.update_dataset_from_delayed([], store, "u"))
    assert future.result().total_rows == 12


def test_cluster_failing_task_leaves_nothing(client: Any, store: str) -> None:
    graph = kdd.store_dataset_from_ddf(_ddf().map_partitions(_boom), store, "u", partition_on=["p"])
    with pytest.raises(RuntimeError, match="upstream boom"):
        graph.compute()
    graph = kdd.store_dataset_from_ddf(
        _ddf().map_partitions(_bad_partition), store, "u", partition_on=["p"]
    )
    with pytest.raises(ka.InvalidArgumentError, match="sub-microsecond"):
        graph.compute()
    assert _objects(store, "u") == []


def test_cluster_delayed_and_bag(client: Any, store: str) -> None:
    meta = kdl.store_delayed_as_dataset(
        _delayed_frames(), store, "u", partition_on=["p"], secondary_indices=["x"]
    ).compute()
    assert meta.total_rows == 12
    parts = kdl.read_dataset_as_delayed("u", store, predicates=[[("p", "==", 2)]])
    assert sum(len(df) for df in dask.compute(*parts)) == 4
    bag = kbag.read_dataset_as_dataframe_bag("u", store)
    meta = kbag.store_bag_as_dataset(bag, store, "copy").compute()
    assert meta.total_rows == 12
    meta = kbag.build_dataset_indices__bag(store, "copy", ["x"]).compute()
    assert "x" in meta.indices


def test_cluster_filtered_dataset_ships_to_a_worker(client: Any, store: str) -> None:
    _stored(store, "u")
    filtered = ka.dataset(store, "u", filter=[[("x", "==", "v2"), ("y", ">", 3.0)]])
    rows, ys = client.submit(_count, filtered).result()
    assert (rows, ys) == (2, [6.0, 10.0])


def test_integer_columns_with_nulls_in_some_files_have_one_dtype(tmp_path):
    import dask

    from ktk_arrow.io.dask.dataframe import read_dataset_as_ddf

    root = str(tmp_path)
    with_nulls = pd.DataFrame({"p": ["a", "a"], "x": pd.array([1, None], dtype="Int64")})
    without = pd.DataFrame({"p": ["b", "b"], "x": pd.array([2, 3], dtype="Int64")})
    all_null = pd.DataFrame({"p": ["c"], "x": pd.array([None], dtype="Int64")})
    ka.write_dataset([with_nulls, without, all_null], root, "d", partition_on=["p"])
    ddf = read_dataset_as_ddf("d", root)
    assert ddf.dtypes["x"] == pd.Int64Dtype()
    parts = dask.compute(*ddf.to_delayed())
    assert [part["x"].dtype for part in parts] == [pd.Int64Dtype()] * 3
    assert ddf.x.sum().compute() == 6
    # without nulls anywhere, plain int64 as plateau reads it
    ka.write_dataset(without, root, "e", partition_on=["p"])
    assert read_dataset_as_ddf("e", root).dtypes["x"] == np.int64


def test_bool_columns_with_nulls_in_some_files_have_one_dtype(tmp_path):
    import dask

    from ktk_arrow.io.dask.dataframe import read_dataset_as_ddf

    root = str(tmp_path)
    frames = [
        pd.DataFrame({"p": ["a"], "b": pd.array([None], dtype="boolean")}),
        pd.DataFrame({"p": ["b", "b"], "b": pd.array([True, False], dtype="boolean")}),
    ]
    ka.write_dataset(frames, root, "d", partition_on=["p"])
    ddf = read_dataset_as_ddf("d", root)
    assert ddf.dtypes["b"] == pd.BooleanDtype()
    assert [part["b"].dtype for part in dask.compute(*ddf.to_delayed())] == [pd.BooleanDtype()] * 2
    assert ka.dataset(root, "d").count_rows(filter=[[("b", "==", True)]]) == 1
