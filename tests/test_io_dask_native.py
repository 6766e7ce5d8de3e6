"""read_dataset_as_ddf at native speed: projection, row counts, fused reads, filters in Arrow.

Dask's optimizer pushes the columns a computation needs into the read,
answers lengths from the recorded row counts, and reads several small files
in one Arrow scan; the results must equal what ``ka.dataset`` reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import ktk_arrow as ka  # noqa: E402
from ktk_arrow import arrow  # noqa: E402
from ktk_arrow.io import _distributed  # noqa: E402
from ktk_arrow.io.dask import dataframe as kdd  # noqa: E402

UUID = "native"
FILES = 16
ROWS_PER_FILE = 25


@pytest.fixture(autouse=True)
def _sync() -> Iterator[None]:
    with dask.config.set(scheduler="sync"):
        yield


def _frames() -> Iterator[pd.DataFrame]:
    rng = np.random.default_rng(7)
    for i in range(FILES):
        start = i * ROWS_PER_FILE
        yield pd.DataFrame(
            {
                "p": [i % 4] * ROWS_PER_FILE,
                "x": [f"v{j % 5}" for j in range(start, start + ROWS_PER_FILE)],
                "n": np.arange(start, start + ROWS_PER_FILE, dtype="int64"),
                "y": rng.random(ROWS_PER_FILE),
            }
        )


def _write(root: Path) -> str:
    ka.write_dataset(
        _frames(),
        str(root),
        UUID,
        partition_on=["p"],
        secondary_indices=["x"],
        max_rows_per_file=ROWS_PER_FILE,
    )
    return str(root)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return _write(tmp_path / "store")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _write(tmp_path_factory.mktemp("native"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every Arrow scan a read task makes: its files, columns and row filter."""
    calls: list[dict[str, Any]] = []
    real = arrow.read_planned

    def spy(dataset_: Any, columns: Any = None, filter: Any = None) -> Any:
        calls.append(
            {"files": len(dataset_.tasks), "columns": list(columns or []), "filter": filter}
        )
        return real(dataset_, columns=columns, filter=filter)

    monkeypatch.setattr(_distributed.arrow, "read_planned", spy)
    return calls


def _data_files(root: str) -> list[Path]:
    return sorted(Path(root, UUID).rglob("*.parquet"))


# -- projection ----------------------------------------------------------------------


def test_a_column_selection_reaches_the_arrow_scan(store: str, reads: list[dict[str, Any]]) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store)
    total = ddf.y.sum().compute()
    assert total == pytest.approx(pd.concat(_frames()).y.sum())
    assert reads and {tuple(c for c in r["columns"] if not c.startswith("__")) for r in reads} == {
        ("y",)
    }
    # the optimized expression says so too
    (read,) = [e for e in ddf.y.simplify().expr.walk() if isinstance(e, kdd.KtkRead)]
    assert read.columns == ["y"]
    (fused,) = [
        e for e in ddf.y.optimize(fuse=False).expr.walk() if isinstance(e, kdd.KtkFusedRead)
    ]
    assert fused.operand("_expr").columns == ["y"]


def test_the_reader_follows_the_dataframe_io_function_protocol(store: str) -> None:
    from dask.dataframe.io.utils import DataFrameIOFunction

    plan = _distributed.plan_read(store, UUID, columns=["n", "y", "x"])
    assert isinstance(plan.reader, DataFrameIOFunction)
    projected = plan.reader.project_columns(["y", "n", "nope"])
    assert projected.columns == ["n", "y"] and plan.reader.columns == ["n", "y", "x"]
    got = projected(plan.parts[0])
    assert list(got.columns) == ["n", "y"] and len(got) == ROWS_PER_FILE


def test_kartothek_columns_and_a_projection_combine(
    store: str, reads: list[dict[str, Any]]
) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store, columns=["y", "n"], categoricals=["x"])
    assert list(ddf.columns) == ["y", "n"]
    assert sorted(ddf.n.compute()) == list(range(FILES * ROWS_PER_FILE))
    assert {c for r in reads for c in r["columns"] if not c.startswith("__")} == {"n"}


# -- row counts ------------------------------------------------------------------------


def test_lengths_come_from_the_metadata_without_reading_a_file(store: str) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store)
    by_p = kdd.read_dataset_as_ddf(UUID, store, dispatch_by=["p"])
    indexed = kdd.read_dataset_as_ddf(UUID, store, dask_index_on="p")
    for path in _data_files(store):
        path.write_bytes(b"not parquet")  # any read would fail now
    rows = FILES * ROWS_PER_FILE
    assert len(ddf) == rows
    assert ddf.shape[0].compute() == rows
    assert len(ddf.y) == rows and ddf.y.size.compute() == rows
    assert len(by_p) == rows and len(indexed) == rows
    with pytest.raises(ka.KtkError):
        ddf.y.sum().compute()  # the data really is unreadable


def test_a_length_under_predicates_reads_only_what_the_filter_needs(
    store: str, reads: list[dict[str, Any]]
) -> None:
    predicates = [[("n", "<", 130), ("x", "in", ["v1", "v2"])]]
    ddf = kdd.read_dataset_as_ddf(UUID, store, predicates=predicates)
    want = ka.dataset(store, UUID, filter=predicates).count_rows()
    assert len(ddf) == want == 52
    assert reads and all([c for c in r["columns"] if not c.startswith("__")] == [] for r in reads)
    assert all(r["filter"] is not None for r in reads)


def test_a_dataset_without_recorded_row_counts_reads_no_column_for_its_length(
    tmp_path: Path, reads: list[dict[str, Any]]
) -> None:
    import functools

    minimalkv = pytest.importorskip("minimalkv")
    plateau_eager = pytest.importorskip("plateau.io.eager")
    root = str(tmp_path / "plateau")
    Path(root).mkdir()
    frames = [pd.DataFrame({"p": [1, 1, 2], "x": [1, 2, 3]}), pd.DataFrame({"p": [3], "x": [4]})]
    plateau_eager.store_dataframes_as_dataset(
        functools.partial(minimalkv.get_store_from_url, f"hfs://{root}"),
        "u",
        frames,
        partition_on=["p"],
    )
    assert all(t.rows is None for t in ka.dataset(root, "u").tasks)  # plateau records none
    ddf = kdd.read_dataset_as_ddf("u", root)
    assert len(ddf) == 4
    assert reads and all([c for c in r["columns"] if not c.startswith("__")] == [] for r in reads)


# -- fused reads ---------------------------------------------------------------------


def test_small_files_are_read_several_per_task_once_columns_are_projected(
    store: str, reads: list[dict[str, Any]]
) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store)
    assert ddf.npartitions == FILES  # one partition per file, as in kartothek
    assert ddf.optimize().npartitions == FILES  # the whole frame is not fused
    tasks = math.ceil(FILES / math.ceil(math.sqrt(FILES)))
    assert ddf.y.optimize().npartitions == tasks
    assert len(ddf.y.optimize().__dask_graph__()) == tasks
    ddf.y.sum().compute()
    assert [r["files"] for r in reads] == [FILES // tasks] * tasks  # one scan per task
    # same rows and index as the unfused read, partition for partition
    pd.testing.assert_series_equal(ddf.y.compute(), ddf.compute().y)
    both = ddf[["n", "x"]].compute()
    pd.testing.assert_frame_equal(both, ddf.compute()[["n", "x"]])


def test_large_files_and_groups_are_not_fused(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    by_p = kdd.read_dataset_as_ddf(UUID, store, dispatch_by=["p"])
    assert by_p.y.optimize().npartitions == by_p.npartitions == 4
    indexed = kdd.read_dataset_as_ddf(UUID, store, dask_index_on="p")
    assert indexed.y.optimize().divisions == indexed.divisions == (0, 1, 2, 3, 3)
    monkeypatch.setattr(kdd, "FUSED_READ_BYTES", 1)  # every file is "large"
    assert kdd.read_dataset_as_ddf(UUID, store).y.optimize().npartitions == FILES


def test_fusion_can_be_turned_off_for_dask_operations_that_expect_partitions(
    store: str,
) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store)
    assert ddf.y.optimize().npartitions < FILES  # fused by default
    with dask.config.set({"ktk_arrow.fused-read-bytes": 0}):
        assert ddf.y.optimize().npartitions == FILES
        # these expect the partitions of the unoptimized frame
        values = ddf.n.to_dask_array(lengths=True)
        assert values.chunks == ((ROWS_PER_FILE,) * FILES,)
        assert int(values.sum().compute()) == sum(range(FILES * ROWS_PER_FILE))
        n, y = dask.persist(ddf.n, ddf.y)
        assert int(n.sum().compute()) == sum(range(FILES * ROWS_PER_FILE))
        assert len(y) == FILES * ROWS_PER_FILE


def test_fused_reads_under_predicates_keep_each_files_rows(store: str) -> None:
    predicates = [[("n", ">=", 40), ("y", "<", 0.5)], [("x", "==", "v3")]]
    ddf = kdd.read_dataset_as_ddf(UUID, store, predicates=predicates)
    assert ddf.y.optimize().npartitions < ddf.npartitions
    pd.testing.assert_series_equal(ddf.y.compute(), ddf.compute().y)
    assert ddf.n.sum().compute() == ddf.compute().n.sum()


def test_fused_reads_mix_with_other_uses_of_the_same_frame(store: str) -> None:
    ddf = kdd.read_dataset_as_ddf(UUID, store)
    whole = ddf.compute()
    assert len(ddf[ddf.y > 0.5]) == int((whole.y > 0.5).sum())
    assert (ddf.index.to_series() + ddf.n).sum().compute() == (whole.index + whole.n).sum()
    assert (ddf.y + ddf.n).sum().compute() == pytest.approx((whole.y + whole.n).sum())
    assert len(ddf.index) == len(whole)
    persisted = ddf[["y"]].persist()
    assert len(persisted) == len(whole)
    assert persisted.y.sum().compute() == pytest.approx(whole.y.sum())
    by_x = ddf.groupby("x").n.sum().compute().sort_index()
    pd.testing.assert_series_equal(by_x, whole.groupby("x").n.sum().sort_index())


def test_eager_and_iter_scan_only_the_columns_they_return(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ktk_arrow.io import _common, eager
    from ktk_arrow.io import iter as kiter

    scans: list[list[str]] = []
    real = arrow.read_planned

    def spy(dataset_: Any, columns: Any = None, filter: Any = None) -> Any:
        scans.append(list(columns or []))
        return real(dataset_, columns=columns, filter=filter)

    monkeypatch.setattr(_common.arrow, "read_planned", spy)
    monkeypatch.setattr(eager.arrow, "read_planned", spy)
    predicates = [[("n", "<", 60)]]
    frames = list(
        kiter.read_dataset_as_dataframes__iterator(
            UUID, store, columns=["y"], predicates=predicates
        )
    )
    assert frames and all(list(df.columns) == ["y"] for df in frames)
    table = eager.read_table(UUID, store, columns=["y"], predicates=predicates)
    assert len(table) == 60 and list(table.columns) == ["y"]
    assert scans and all(columns == ["y"] for columns in scans)


def test_without_dasks_expression_hooks_the_read_falls_back_to_from_map(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kdd, "_DASK_HOOKS", False)
    ddf = kdd.read_dataset_as_ddf(UUID, store, predicates=[[("p", "==", 1)]])
    assert not isinstance(ddf.expr, kdd.KtkRead)
    assert len(ddf) == 4 * ROWS_PER_FILE
    assert sorted(ddf.n.compute()) == sorted(n for f in _frames() if f.p.iloc[0] == 1 for n in f.n)


def test_graph_names_follow_the_dataset_state(store: str) -> None:
    first = kdd.read_dataset_as_ddf(UUID, store)
    assert kdd.read_dataset_as_ddf(UUID, store)._name == first._name
    assert kdd.read_dataset_as_ddf(UUID, store, columns=["y"])._name != first._name
    assert kdd.read_dataset_as_ddf(UUID, store, categoricals=["x"])._name != first._name
    ka.write_dataset(next(_frames()), store, UUID, mode="append")
    again = kdd.read_dataset_as_ddf(UUID, store)
    assert again._name != first._name and len(again) == (FILES + 1) * ROWS_PER_FILE


# -- filters: equal to ka.dataset ---------------------------------------------------------

_VALUES = {
    "p": st.integers(-1, 4),
    "x": st.sampled_from(["v0", "v1", "v2", "v3", "v4", "zz"]),
    "n": st.integers(-5, FILES * ROWS_PER_FILE + 5),
    "y": st.floats(0, 1),
}


@st.composite
def _terms(draw: st.DrawFn) -> tuple[str, str, Any]:
    column = draw(st.sampled_from(sorted(_VALUES)))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"]))
    if op == "in":
        return column, op, draw(st.lists(_VALUES[column], min_size=1, max_size=3))
    return column, op, draw(_VALUES[column])


_DNF = st.lists(st.lists(_terms(), min_size=1, max_size=3), min_size=1, max_size=3)


def _normal(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True)
    for name in out.columns:
        if isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype(out[name].dtype.categories.dtype)
    return out.sort_values(list(out.columns), ignore_index=True)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    predicates=_DNF,
    columns=st.sampled_from([None, ["n", "y"], ["x", "p", "y"]]),
    categoricals=st.sampled_from([None, ["x"], ["p", "x"]]),
)
def test_read_dataset_as_ddf_with_predicates_equals_ka_dataset(
    shared_store: str, predicates: Any, columns: Any, categoricals: Any
) -> None:
    want_table = ka.dataset(shared_store, UUID, filter=predicates).to_table(columns=columns)
    want = want_table.to_pandas()
    cats = [c for c in categoricals or [] if columns is None or c in columns] or None
    ddf = kdd.read_dataset_as_ddf(
        UUID, shared_store, predicates=predicates, columns=columns, categoricals=cats
    )
    got = ddf.compute()
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(_normal(got), _normal(want), check_dtype=False)
    assert len(ddf) == want_table.num_rows
    if "y" in got.columns:  # a projected, fused read
        assert ddf.y.sum().compute() == pytest.approx(float(pc.sum(want_table["y"]).as_py() or 0))


# -- a real cluster ------------------------------------------------------------------------


def test_on_a_cluster_sums_lengths_and_filters_agree(store: str) -> None:
    whole = pd.concat(_frames(), ignore_index=True)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
        dask.config.set(scheduler=None),
    ):
        ddf = kdd.read_dataset_as_ddf(UUID, store)
        assert ddf.y.sum().compute() == pytest.approx(whole.y.sum())
        assert len(ddf) == len(whole)
        filtered = kdd.read_dataset_as_ddf(UUID, store, predicates=[[("n", "<", 60)]])
        assert filtered.y.sum().compute() == pytest.approx(whole.y[whole.n < 60].sum())
        assert len(filtered) == 60
