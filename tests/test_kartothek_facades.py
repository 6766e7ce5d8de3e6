"""The kartothek facades as a drop-in for plateau pipelines, one suite for every backend.

Each test runs through the ``backend`` fixture: ``eager`` (``io.eager``),
``iter`` (``io.iter``), ``delayed``, ``bag`` and ``ddf`` (``io.dask.*``), all
behind the same ``store`` / ``update`` / ``read`` adapters, and where
plateau is right the result is compared with what plateau (from PyPI)
returns for the same input.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
db = pytest.importorskip("dask.bag")
pytest.importorskip("plateau")
minimalkv = pytest.importorskip("minimalkv")

import plateau.io.eager as pl  # noqa: E402
from plateau.core.dataset import DatasetMetadata as PlateauMetadata  # noqa: E402

import ktk_arrow as ka  # noqa: E402
from ktk_arrow import planning  # noqa: E402
from ktk_arrow.errors import InvalidArgumentError  # noqa: E402
from ktk_arrow.io import eager  # noqa: E402
from ktk_arrow.io import iter as kiter  # noqa: E402
from ktk_arrow.io.dask import bag as kbag  # noqa: E402
from ktk_arrow.io.dask import dataframe as kdd  # noqa: E402
from ktk_arrow.io.dask import delayed as kdl  # noqa: E402
from ktk_arrow.spec import keys  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:.*adopted.*:UserWarning"
)

UUID = "ds"


@pytest.fixture(autouse=True)
def _sync_scheduler() -> Iterator[None]:
    with dask.config.set(scheduler="sync"):
        yield


def frames_of(data: Any) -> list[pd.DataFrame]:
    """kartothek's nested input, flattened (the ddf adapter needs plain frames)."""
    out: list[pd.DataFrame] = []
    for item in data if isinstance(data, list) else [data]:
        out.extend(frames_of(item) if isinstance(item, list) else [item])
    return out


@dataclass
class Backend:
    """One kartothek API behind common adapters; ``root`` is a local store."""

    name: str
    root: str

    # -- writing --------------------------------------------------------------
    def store(self, dfs: Any, uuid: str | None = UUID, **kw: Any) -> Any:
        if self.name == "eager":
            return eager.store_dataframes_as_dataset(self.root, uuid, dfs, **kw)
        if self.name == "iter":
            return kiter.store_dataframes_as_dataset__iter(iter(dfs), self.root, uuid, **kw)
        if self.name == "delayed":
            tasks = [dask.delayed(df) for df in dfs]
            return kdl.store_delayed_as_dataset(tasks, self.root, uuid, **kw).compute()
        if self.name == "bag":
            bag = db.from_sequence(dfs, partition_size=1)
            return kbag.store_bag_as_dataset(bag, self.root, uuid, **kw).compute()
        kw = _ddf_args(kw)
        return kdd.store_dataset_from_ddf(_ddf(dfs), self.root, uuid, **kw).compute()

    def update(self, dfs: Any, uuid: str | None = UUID, **kw: Any) -> Any:
        if self.name == "eager":
            return eager.update_dataset_from_dataframes(dfs, self.root, uuid, **kw)
        if self.name == "iter":
            return kiter.update_dataset_from_dataframes__iter(iter(dfs), self.root, uuid, **kw)
        if self.name in ("delayed", "bag"):  # kartothek has no bag update: delayed it is
            tasks = [dask.delayed(df) for df in dfs]
            return kdl.update_dataset_from_delayed(tasks, self.root, uuid, **kw).compute()
        kw = _ddf_args(kw)
        return kdd.update_dataset_from_ddf(_ddf(dfs), self.root, uuid, **kw).compute()

    # -- reading --------------------------------------------------------------
    def read(self, uuid: str | None = UUID, **kw: Any) -> list[pd.DataFrame]:
        """One DataFrame per file (per dispatch_by group)."""
        if self.name == "eager":
            kw.pop("table", None)
            return eager.read_dataset_as_dataframes(uuid, self.root, **kw)
        if self.name == "iter":
            kw.pop("table", None)
            return list(kiter.read_dataset_as_dataframes__iterator(uuid, self.root, **kw))
        if self.name == "delayed":
            return list(
                dask.compute(*kdl.read_table_as_delayed(uuid, self.root, **kw), scheduler="sync")
            )
        if self.name == "bag":
            kw.pop("table", None)
            return list(kbag.read_dataset_as_dataframe_bag(uuid, self.root, **kw).compute())
        ddf = kdd.read_dataset_as_ddf(uuid, self.root, **kw)
        return list(dask.compute(*ddf.to_delayed()))


def _ddf_args(kw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kw)
    if "table_name" in kw:
        kw["table"] = kw.pop("table_name")
    return kw


def _ddf(dfs: Any) -> Any:
    parts = frames_of(dfs)
    return dd.from_delayed([dask.delayed(df) for df in parts], meta=parts[0].iloc[:0])


BACKENDS = ("eager", "iter", "delayed", "bag", "ddf")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    root = tmp_path / "ours"
    root.mkdir()
    return Backend(request.param, str(root))


@pytest.fixture
def proot(tmp_path: Path) -> str:
    path = tmp_path / "plateau"
    path.mkdir()
    return str(path)


def pstore(root: str) -> Callable[[], Any]:
    """plateau's store factory on ``root``."""
    return functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")


def df_a() -> pd.DataFrame:
    return pd.DataFrame({"p": [1, 1, 2], "x": [1, 2, 3], "i": ["a", "b", "a"]})


def df_b() -> pd.DataFrame:
    return pd.DataFrame({"p": [3, 3, 3], "x": [4, 5, 6], "i": ["a", "b", "a"]})


def rows(frames: Any) -> pd.DataFrame:
    """All rows of some frames, sorted by ``x``, columns by name, plain dtypes."""
    if isinstance(frames, pd.DataFrame):
        frames = [frames]
    out = pd.concat(list(frames), ignore_index=True) if len(frames) else pd.DataFrame()
    out = out[sorted(out.columns)].sort_values(sorted(out.columns)).reset_index(drop=True)
    return out


def files_under(root: str, prefix: str) -> list[str]:
    out = []
    for directory, _, names in os.walk(os.path.join(root, prefix)):
        out += [os.path.relpath(os.path.join(directory, n), root) for n in names]
    return sorted(out)


def group_rows(frames: list[pd.DataFrame]) -> list[list[tuple[Any, ...]]]:
    """Each frame's rows as sorted tuples (columns by name): groups compared as sets of rows."""
    out = []
    for df in frames:
        df = df[sorted(df.columns)]
        out.append(sorted(tuple(r) for r in df.itertuples(index=False)))
    return out


# -- 1. table names other than "table" ------------------------------------------------


def test_another_table_name_is_written_updated_and_read_by_us_and_plateau(
    backend: Backend,
) -> None:
    backend.store([df_a()], partition_on=["p"], secondary_indices=["i"], table_name="foo")
    backend.update([df_b()], table_name="foo")
    backend.update([df_b().assign(x=[7, 8, 9])])  # the default name means "the dataset's"
    want = rows([df_a(), df_b(), df_b().assign(x=[7, 8, 9])])

    data = files_under(backend.root, UUID)
    assert f"{UUID}/foo/_common_metadata" in data
    assert all(f.startswith((f"{UUID}/foo/", f"{UUID}/indices/", f"{UUID}/_ktk/")) for f in data)
    pd.testing.assert_frame_equal(rows(backend.read(table="foo")), want)
    pd.testing.assert_frame_equal(rows(backend.read(columns={"foo": ["p", "x", "i"]})), want)

    # plateau reads it, with its index answering on the new table
    store = pstore(backend.root)
    meta = PlateauMetadata.load_from_store(UUID, store())
    assert meta.table_name == "foo"
    pd.testing.assert_frame_equal(rows(pl.read_table(UUID, store)), want)
    got = pl.read_table(UUID, store, predicates=[[("i", "==", "b")]])
    pd.testing.assert_frame_equal(rows(got), want[want.i == "b"].reset_index(drop=True))
    # ... and appends to it; we read both
    pl.update_dataset_from_dataframes(
        [df_a().assign(x=[10, 11, 12])], store, UUID, table_name="foo"
    )
    want = rows([want, df_a().assign(x=[10, 11, 12])])
    pd.testing.assert_frame_equal(rows(backend.read()), want)
    assert ka.dataset(backend.root, UUID).to_table().num_rows == len(want)


def test_a_dataset_keeps_its_table_name_another_one_is_refused(backend: Backend) -> None:
    backend.store([df_a()], table_name="foo")
    with pytest.raises(InvalidArgumentError, match="has the table 'foo'"):
        backend.update([df_b()], table_name="bar")
    with pytest.raises(InvalidArgumentError, match="named 'foo'"):
        eager.read_table(UUID, backend.root, table="bar")
    if backend.name in ("delayed", "ddf"):  # the read APIs that take table=
        with pytest.raises(InvalidArgumentError, match="named 'foo'"):
            backend.read(table="bar")
    assert ka.dataset(backend.root, UUID).to_table().num_rows == 3  # nothing was written


def test_a_dataset_without_files_keeps_its_table_name(tmp_path: Path) -> None:
    root = str(tmp_path)
    eager.store_dataframes_as_dataset(
        root, UUID, [df_a().iloc[:0]], partition_on=["p"], table_name="foo"
    )
    assert ka.dataset(root, UUID).metadata.table == "foo"
    assert len(pl.read_table(UUID, pstore(root))) == 0  # plateau finds foo/_common_metadata
    eager.update_dataset_from_dataframes([df_a()], root, UUID)
    assert all(f.startswith(f"{UUID}/foo/") for f in files_under(root, f"{UUID}/foo"))
    assert not os.path.exists(os.path.join(root, UUID, "table"))
    pd.testing.assert_frame_equal(rows(pl.read_table(UUID, pstore(root))), rows(df_a()))


def test_compaction_keeps_the_table_name(tmp_path: Path) -> None:
    root = str(tmp_path)
    eager.store_dataframes_as_dataset(root, UUID, [df_a(), df_b()], table_name="foo")
    importlib.import_module("ktk_arrow.compact").compact(root, UUID)
    assert len(ka.dataset(root, UUID).files) == 1
    assert not os.path.exists(os.path.join(root, UUID, "table"))
    pd.testing.assert_frame_equal(rows(pl.read_table(UUID, pstore(root))), rows([df_a(), df_b()]))


@pytest.mark.parametrize("name", ["", "indices", "_ktk", "a/b", "..", 5])
def test_table_names_that_collide_with_other_keys_are_refused(tmp_path: Path, name: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid table name"):
        eager.store_dataframes_as_dataset(str(tmp_path), UUID, [df_a()], table_name=name)


def test_we_read_plateau_datasets_with_another_table_name(backend: Backend) -> None:
    store = pstore(backend.root)
    pl.store_dataframes_as_dataset(
        store, UUID, [df_a(), df_b()], partition_on=["p"], secondary_indices=["i"], table_name="t2"
    )
    assert ka.dataset(backend.root, UUID).metadata.table == "t2"
    pd.testing.assert_frame_equal(rows(backend.read(table="t2")), rows([df_a(), df_b()]))
    got = backend.read(predicates=[[("i", "==", "b")]], dispatch_by=["p"])
    assert group_rows(got) == [[("b", 1, 2)], [("b", 3, 5)]]


# -- 2. dispatch_by ---------------------------------------------------------------------


def wide_a() -> pd.DataFrame:
    return pd.DataFrame({"p": [1, 1, 1, 2, 2], "x": [0, 5, 10, 0, 10], "i": list("abaab")})


def wide_b() -> pd.DataFrame:
    return pd.DataFrame({"p": [3, 3, 3], "x": [0, 6, 10], "i": list("bab")})


def _indexed(backend: Backend, proot: str) -> Callable[[], Any]:
    """The same dataset written by us and by plateau: partitioned on p, indexed on i.

    Every file holds x = 0 and x = 10, so file statistics prune no file for
    a predicate on x in between (plateau has no statistics; see
    ``test_file_statistics_prune_files_plateau_reads_as_empty_frames``).
    """
    backend.store([wide_a(), wide_b()], partition_on=["p"], secondary_indices=["i"])
    pl.store_dataframes_as_dataset(
        pstore(proot), UUID, [wide_a(), wide_b()], partition_on=["p"], secondary_indices=["i"]
    )
    return pstore(proot)


@pytest.mark.parametrize(
    "dispatch_by", [["i"], ["i", "p"], ["p"], []], ids=["index", "index+key", "key", "empty"]
)
def test_dispatch_by_groups_like_plateau(backend: Backend, proot: str, dispatch_by: Any) -> None:
    theirs = pl.read_dataset_as_dataframes(UUID, _indexed(backend, proot), dispatch_by=dispatch_by)
    ours = backend.read(dispatch_by=dispatch_by)
    assert group_rows(ours) == group_rows(theirs)
    if dispatch_by == []:
        assert len(ours) == 1  # ONE group of every file, not one per file


@pytest.mark.parametrize(
    ("dispatch_by", "predicates"),
    [
        (["i"], [[("i", "==", "a")]]),  # no group for "b", whose files also hold "a"
        (["i"], [[("x", "==", 5)]]),  # the "a" group exists, its rows are filtered out
        (["p"], [[("x", "==", 5)]]),  # p=2 and p=3: empty frames
        (["p"], [[("i", "==", "b")]]),
        (["i", "p"], [[("i", "==", "b")], [("p", "==", 2)]]),
        (["i"], [[("i", "in", ["b"]), ("x", "<", 6)], [("p", "==", 3), ("i", "!=", "b")]]),
        ([], [[("x", ">", 4)]]),
        (None, [[("x", "==", 6)]]),
    ],
)
def test_dispatch_by_with_predicates_gives_plateau_s_groups(
    backend: Backend, proot: str, dispatch_by: Any, predicates: Any
) -> None:
    store = _indexed(backend, proot)
    theirs = pl.read_dataset_as_dataframes(
        UUID, store, dispatch_by=dispatch_by, predicates=predicates
    )
    ours = backend.read(dispatch_by=dispatch_by, predicates=predicates)
    assert group_rows(ours) == group_rows(theirs)


def test_file_statistics_prune_files_plateau_reads_as_empty_frames(
    backend: Backend, proot: str
) -> None:
    backend.store([df_a(), df_b()], partition_on=["p"])
    pl.store_dataframes_as_dataset(pstore(proot), UUID, [df_a(), df_b()], partition_on=["p"])
    theirs = pl.read_dataset_as_dataframes(UUID, pstore(proot), predicates=[[("x", "==", 3)]])
    ours = backend.read(predicates=[[("x", "==", 3)]])
    # x == 3 lies outside the value ranges of the p=1 and p=3 files: we do not read them
    assert group_rows(theirs) == [[], [("a", 2, 3)], []]
    assert group_rows(ours) == [[("a", 2, 3)]]


def test_frames_emptied_by_predicates_are_returned_typed_like_plateau(
    backend: Backend, proot: str
) -> None:
    # x == 2 lies inside both files' value ranges, so statistics prune neither
    first, second = (
        pd.DataFrame({"x": [1, 3], "s": ["u", "v"]}),
        pd.DataFrame({"x": [1, 2], "s": ["w", "z"]}),
    )
    backend.store([first, second])
    pl.store_dataframes_as_dataset(pstore(proot), UUID, [first, second])
    theirs = pl.read_dataset_as_dataframes(UUID, pstore(proot), predicates=[[("x", "==", 2)]])
    ours = backend.read(predicates=[[("x", "==", 2)]])
    assert sorted(len(df) for df in ours) == sorted(len(df) for df in theirs) == [0, 1]
    for df in ours:
        assert list(df.columns) == ["x", "s"]
        assert df["x"].dtype == np.int64 and df["s"].dtype == "str"


# -- 3. empty input ---------------------------------------------------------------------


def test_an_empty_dataframe_creates_one_empty_partition_like_plateau(
    backend: Backend, proot: str
) -> None:
    empty = df_a().iloc[:0]
    backend.store([empty])
    pl.store_dataframes_as_dataset(pstore(proot), UUID, [empty])
    ours, theirs = backend.read(), pl.read_dataset_as_dataframes(UUID, pstore(proot))
    assert len(ours) == len(theirs) == 1
    for got in (ours[0], eager.read_table(UUID, backend.root)):
        assert len(got) == 0
        assert dict(got.dtypes) == dict(theirs[0].dtypes) == dict(empty.dtypes)
    # plateau reads ours: the schema is stored, with one file without rows
    got = pl.read_dataset_as_dataframes(UUID, pstore(backend.root))
    assert len(got) == 1 and dict(got[0].dtypes) == dict(empty.dtypes)
    assert len(ka.dataset(backend.root, UUID).files) == 1


def test_empty_frames_appended_to_a_dataset_are_a_no_op(backend: Backend) -> None:
    backend.store([df_a()])
    backend.update([df_a().iloc[:0]])
    assert [snap.operation for snap in ka.history(backend.root, UUID)] == ["create"]
    assert [len(df) for df in backend.read()] == [3]


def test_an_empty_partitioned_dataframe_stores_the_schema_without_files(
    backend: Backend, proot: str
) -> None:
    empty = df_a().iloc[:0]
    backend.store([empty], partition_on=["p"])
    pl.store_dataframes_as_dataset(pstore(proot), UUID, [empty], partition_on=["p"])
    assert pl.read_dataset_as_dataframes(UUID, pstore(proot)) == []
    if backend.name == "ddf":  # a Dask DataFrame has at least one partition
        assert [len(df) for df in backend.read()] == [0]
    else:
        assert backend.read() == []
    assert ka.dataset(backend.root, UUID).files == []
    got, theirs = eager.read_table(UUID, backend.root), pl.read_table(UUID, pstore(proot))
    assert len(got) == 0 and dict(got.dtypes) == dict(theirs.dtypes)
    assert len(pl.read_table(UUID, pstore(backend.root))) == 0


def test_columns_empty_gives_rows_without_columns_like_plateau(
    backend: Backend, proot: str
) -> None:
    store = _indexed(backend, proot)
    theirs = pl.read_dataset_as_dataframes(UUID, store, columns=[])
    ours = backend.read(columns=[])
    assert sorted(df.shape for df in ours) == sorted(df.shape for df in theirs)
    for df in ours:
        assert df.columns.dtype == theirs[0].columns.dtype == "str"
    table = eager.read_table(UUID, backend.root, columns=[])
    assert table.shape == (8, 0) and table.columns.dtype == "str"


def test_a_dataframe_without_columns_is_a_clear_error(backend: Backend) -> None:
    with pytest.raises(InvalidArgumentError, match="no columns"):
        backend.store([pd.DataFrame()])
    assert not os.listdir(backend.root)


# -- 4. input shapes --------------------------------------------------------------------


# a bag / ddf holds frames, not lists of them
@pytest.mark.parametrize("backend", ["eager", "iter", "delayed"], indirect=True)
def test_nested_lists_of_frames_are_batches_like_plateau(backend: Backend, proot: str) -> None:
    nested = [[df_a(), df_b()], df_a().assign(x=[7, 8, 9])]
    backend.store(nested)
    pl.store_dataframes_as_dataset(pstore(proot), UUID, nested)
    ours, theirs = backend.read(), pl.read_dataset_as_dataframes(UUID, pstore(proot))
    assert sorted(group_rows(ours)) == sorted(group_rows(theirs))
    assert len(ours) == 3


def test_sort_partitions_by_takes_a_list(backend: Backend) -> None:
    shuffled = pd.DataFrame({"p": [1, 1, 1, 2], "x": [3, 1, 2, 0], "y": [0, 1, 0, 0]})
    backend.store([shuffled], partition_on=["p"])
    backend.update([shuffled], sort_partitions_by=["y", "x"])
    backend.update([shuffled], sort_partitions_by="x")
    written = [list(df["x"]) for df in backend.read() if len(df) == 3]
    # as given, by (y, x), by x
    assert sorted(written) == [[1, 2, 3], [2, 3, 1], [3, 1, 2]]


def test_dataset_uuid_none_as_in_plateau(backend: Backend) -> None:
    if backend.name == "ddf":  # plateau: "Need to supply ... dataset_uuid"
        with pytest.raises(InvalidArgumentError, match="dataset_uuid is required"):
            backend.store([df_a()], uuid=None)
    else:  # plateau picks a fresh uuid
        meta = backend.store([df_a()], uuid=None)
        assert keys.UUID_RE.fullmatch(meta.uuid)
        pd.testing.assert_frame_equal(rows(backend.read(meta.uuid)), rows(df_a()))
    # updates and reads need it (plateau fails with a TypeError there)
    with pytest.raises(InvalidArgumentError, match="dataset_uuid is required"):
        backend.update([df_a()], uuid=None)
    with pytest.raises(InvalidArgumentError, match="dataset_uuid is required"):
        backend.read(uuid=None)


# -- 5. index values --------------------------------------------------------------------


def test_index_builds_keep_uint64_values_above_the_int64_maximum(tmp_path: Path) -> None:
    big = 2**63 + 5
    df = pd.DataFrame({"u": np.array([big, 1, big], dtype="uint64"), "x": [1, 2, 3]})
    for uuid, build in (
        ("bag", lambda: kbag.build_dataset_indices__bag(str(tmp_path), "bag", ["u"]).compute()),
        ("eager", lambda: eager.build_dataset_indices(str(tmp_path), "eager", ["u"])),
    ):
        eager.store_dataframes_as_dataset(str(tmp_path), uuid, [df.iloc[:1], df.iloc[1:]])
        build()
        got = eager.read_table(uuid, str(tmp_path), predicates=[[("u", "==", big)]])
        assert sorted(got["x"]) == [1, 3]
        assert len(ka.dataset(str(tmp_path), uuid, filter=[[("u", "==", big)]]).files) == 2
        # plateau's index agrees
        index = pl.read_table(uuid, pstore(str(tmp_path)), predicates=[[("u", "==", big)]])
        assert sorted(index["x"]) == [1, 3]


# -- 6. string types across writers ------------------------------------------------------


def test_plateau_appends_pandas_frames_to_our_arrow_string_dataset(tmp_path: Path) -> None:
    root = str(tmp_path)
    table = pa.table(
        {"s": pa.array(["a", "b"], pa.string()), "c": pa.array(["x", "y"]).dictionary_encode()}
    )
    ka.write_dataset(table, root, UUID)
    more = pd.DataFrame({"s": ["c"], "c": ["z"]})  # pandas 3: str columns, large_string
    pl.update_dataset_from_dataframes([more], pstore(root), UUID)
    got = eager.read_table(UUID, root)
    assert sorted(got["s"]) == ["a", "b", "c"]
    assert sorted(got["c"].astype(str)) == ["x", "y", "z"]
    assert sorted(pl.read_table(UUID, pstore(root))["s"]) == ["a", "b", "c"]
    # and we append on top again, from Arrow strings
    ka.write_dataset(table, root, UUID, mode="append")
    assert ka.dataset(root, UUID).to_table().num_rows == 5


def test_we_append_arrow_strings_to_a_plateau_dataset(tmp_path: Path) -> None:
    root = str(tmp_path)
    pl.store_dataframes_as_dataset(pstore(root), UUID, [pd.DataFrame({"s": ["a"], "x": [1]})])
    ka.write_dataset(
        pa.table({"s": pa.array(["b"], pa.string()), "x": [2]}), root, UUID, mode="append"
    )
    eager.update_dataset_from_dataframes(
        [pd.DataFrame({"s": pd.array(["c"], dtype="string"), "x": [3]})], root, UUID
    )
    pl.update_dataset_from_dataframes([pd.DataFrame({"s": ["d"], "x": [4]})], pstore(root), UUID)
    assert sorted(eager.read_table(UUID, root)["s"]) == ["a", "b", "c", "d"]
    assert sorted(pl.read_table(UUID, pstore(root))["s"]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("dtype", [object, "str", "string", "category"])
def test_plateau_appends_frames_of_the_string_dtype_we_were_created_from(
    tmp_path: Path, dtype: Any
) -> None:
    root = str(tmp_path)
    frame = pd.DataFrame({"s": pd.Series(["a", None], dtype=dtype), "x": [1, 2]})
    eager.store_dataframes_as_dataset(root, UUID, [frame])
    pl.update_dataset_from_dataframes([frame], pstore(root), UUID)
    eager.update_dataset_from_dataframes([frame], root, UUID)
    assert sorted(eager.read_table(UUID, root)["x"]) == [1, 1, 1, 2, 2, 2]
    assert len(pl.read_table(UUID, pstore(root))) == 6


# -- 7. Arrow PyCapsule input ----------------------------------------------------------


class CStream:
    """Only ``__arrow_c_stream__``, as nanoarrow and other producers offer."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.table.__arrow_c_stream__(requested_schema)


def _capsule_inputs() -> dict[str, Callable[[pa.Table], Any]]:
    out: dict[str, Callable[[pa.Table], Any]] = {
        "c-stream": CStream,
        "c-streams": lambda t: [CStream(t.slice(0, 2)), CStream(t.slice(2))],
    }
    try:
        import polars as pol

        out["polars"] = pol.from_arrow
        out["polars-list"] = lambda t: [pol.from_arrow(t.slice(0, 2)), pol.from_arrow(t.slice(2))]
        out["polars-lazy"] = lambda t: pol.from_arrow(t).lazy().filter(pol.col("x") > -1)
    except ImportError:
        pass
    try:
        import duckdb

        def relation(t: pa.Table) -> Any:
            conn = duckdb.connect()
            conn.register("t", t)
            return conn.sql("select * from t")

        out["duckdb"] = relation
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("kind", sorted(_capsule_inputs()))
def test_write_dataset_accepts_arrow_c_stream_producers(tmp_path: Path, kind: str) -> None:
    table = pa.table(
        {
            "p": ["a", "a", "b", "b"],
            "x": [1, 2, 3, 4],
            "ts": pa.array([0, 1, 2, 3], pa.timestamp("us")),
        }
    )
    ka.write_dataset(_capsule_inputs()[kind](table), str(tmp_path), UUID, partition_on=["p"])
    ds = ka.dataset(str(tmp_path), UUID)
    got = ds.to_table().sort_by("x")
    assert got.column("x").to_pylist() == [1, 2, 3, 4]
    assert got.column("p").to_pylist() == ["a", "a", "b", "b"]
    assert ds.schema.field("ts").type == pa.timestamp("us")
    # Polars exports string views; the stored type is plateau's string type
    assert ds.schema.field("p").type in (pa.string(), pa.large_string())
    assert sorted(pl.read_table(UUID, pstore(str(tmp_path)))["x"]) == [1, 2, 3, 4]


def test_polars_string_and_binary_views_are_stored_as_plateau_appends_them(tmp_path: Path) -> None:
    pol = pytest.importorskip("polars")
    frame = pol.DataFrame({"s": ["a", None], "b": [b"x", b"y"], "x": [1, 2]})
    assert pa.RecordBatchReader.from_stream(frame).schema.field("s").type == pa.string_view()
    ka.write_dataset(frame, str(tmp_path), UUID)
    schema = ka.dataset(str(tmp_path), UUID).schema
    assert schema.field("s").type == pa.large_string()
    assert schema.field("b").type == pa.binary()
    got = eager.read_table(UUID, str(tmp_path))
    assert list(got["s"].fillna("-")) == ["a", "-"] and list(got["b"]) == [b"x", b"y"]
    pl.update_dataset_from_dataframes([got], pstore(str(tmp_path)), UUID)
    assert len(eager.read_table(UUID, str(tmp_path))) == 4


def test_a_polars_series_is_a_clear_error(tmp_path: Path) -> None:
    pol = pytest.importorskip("polars")
    with pytest.raises(InvalidArgumentError, match="not a table"):
        ka.write_dataset(pol.Series("x", [1, 2]), str(tmp_path), UUID)


# -- 8. read_table plans once ----------------------------------------------------------


def test_read_table_with_predicates_plans_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    eager.store_dataframes_as_dataset(
        root, UUID, [df_a(), df_b()], partition_on=["p"], secondary_indices=["i"]
    )
    calls: list[Any] = []
    real = planning.plan

    def counting(meta: Any, scan_filter: Any = planning.NO_FILTER, *a: Any, **k: Any) -> Any:
        calls.append(scan_filter)
        return real(meta, scan_filter, *a, **k)

    monkeypatch.setattr(planning, "plan", counting)
    got = eager.read_table(UUID, root, predicates=[[("i", "==", "b"), ("p", "==", 3)]])
    assert list(got["x"]) == [5]
    assert len(calls) == 1 and not calls[0].is_empty
    calls.clear()
    frames = eager.read_dataset_as_dataframes(UUID, root, predicates=[[("p", "==", 3)]])
    assert [list(df["x"]) for df in frames] == [[4, 5, 6]]
    assert len(calls) == 1
