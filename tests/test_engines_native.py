"""Polars and DuckDB read a dataset with their own parquet readers, and get our rows.

``to_polars`` / ``scan_kartothek`` / ``to_duckdb`` must return exactly what
``ka.dataset(...).to_table()`` returns (partition columns typed and decoded
our way, filters with our null semantics), hand the native reader only the
planned files, and the fragment cache must spare a repeated query its footer
reads.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.local import LocalFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
import ktk_arrow.duckdb as kduck
import ktk_arrow.polars as kpl
from ktk_arrow.storage import LocalStore

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

UUID = "engines"
PARTITIONS = ["p", "i", "d", "b"]
ROWS = 48


def _table() -> pa.Table:
    n = ROWS
    p = ["US/CA", "DE", None, "a b&c=d"]
    floats = [float(k) / 4 if k % 7 else (math.nan if k % 2 else None) for k in range(n)]
    return pa.table(
        {
            "p": pa.array([p[k % 4] for k in range(n)], pa.string()),
            "i": pa.array([k % 3 - 1 for k in range(n)], pa.int64()),
            "d": pa.array([dt.date(2020, 1, 1 + k % 2) for k in range(n)], pa.date32()),
            "b": pa.array([k % 5 == 0 for k in range(n)], pa.bool_()),
            "x": pa.array(list(range(n)), pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "s": pa.array([None if k % 11 == 0 else f"s{k % 6}" for k in range(n)], pa.string()),
            "t": pa.array([dt.datetime(2021, 1, 1, 0, 0, k) for k in range(n)], pa.timestamp("us")),
        }
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("engines"))
    ka.write_dataset(_table(), path, UUID, partition_on=PARTITIONS, secondary_indices=["x"])
    return path


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """The rows as sortable tuples (NaN and null distinguishable, NaN equal to itself)."""

    def norm(v: Any) -> Any:
        if v is None:
            return ("0null",)
        if isinstance(v, float) and math.isnan(v):
            return ("1nan",)
        return ("2", type(v).__name__, v)

    return sorted(tuple(norm(v) for v in row.values()) for row in table.to_pylist())


def _polars(frame: Any) -> pa.Table:
    return frame.collect().to_arrow() if hasattr(frame, "collect") else frame.to_arrow()


def _stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _same(expected: pa.Table, got: pa.Table) -> None:
    assert got.column_names == expected.column_names
    for name in expected.column_names:
        # engines have their own string type (Polars: string_view); every other type
        # must be ours exactly
        want, have = expected.schema.field(name).type, got.schema.field(name).type
        if _stringish(want):
            assert _stringish(have), (name, have)
        else:
            assert have == want, (name, have, want)
    assert _rows(got.cast(expected.schema)) == _rows(expected)


def _oracle(root: str, dnf: Any) -> pa.Table:
    """The rows ``dnf`` selects, filtered in memory (no parquet statistics involved)."""
    ds = ka.dataset(root, UUID)
    return ds.to_table().filter(ds.filter(dnf)._ktk_filter.expression)


def _touches_floats(dnf: Any) -> bool:
    """Whether ``dnf`` has a term on the float column.

    pyarrow's parquet scan trusts row-group statistics that ignore NaN (min/max
    skip it, ``null_count`` does not count it), so a null-matching term on a
    float column (``== None``, ``!=``, ``in [None]``) misses NaN rows in row
    groups without a real null: ``to_table`` is compared only without such terms.
    """
    return any(term[0] == "f" for clause in dnf for term in clause)


# -- full, projected, filtered ------------------------------------------------------


def test_full_scan_equals_to_table(root: str) -> None:
    ds = ka.dataset(root, UUID)
    expected = ds.to_table()
    assert expected.num_rows == ROWS
    _same(expected, _polars(ds.to_polars()))
    _same(expected, _polars(kpl.scan_kartothek(root, UUID)))
    _same(expected, ds.to_duckdb(duckdb.connect()).to_arrow_table())


def test_partition_values_are_decoded_and_typed(root: str) -> None:
    ds = ka.dataset(root, UUID)
    frame = ds.to_polars().collect()
    assert set(frame["p"].to_list()) == {"US/CA", "DE", None, "a b&c=d"}
    assert frame.schema["i"] == pl.Int64
    assert frame.schema["d"] == pl.Date
    assert frame.schema["b"] == pl.Boolean
    rel = ds.to_duckdb(duckdb.connect())
    types = dict(zip(rel.columns, map(str, rel.types)))
    assert types == {
        "p": "VARCHAR",
        "i": "BIGINT",
        "d": "DATE",
        "b": "BOOLEAN",
        "x": "BIGINT",
        "f": "DOUBLE",
        "s": "VARCHAR",
        "t": "TIMESTAMP",
    }
    assert sorted(r[0] for r in rel.filter("p IS NULL").aggregate("count(*)").fetchall()) == [12]


def test_projected_scan(root: str) -> None:
    ds = ka.dataset(root, UUID)
    expected = ds.to_table(columns=["x", "p", "b"])
    _same(expected, _polars(ds.to_polars().select("x", "p", "b")))
    _same(expected, ds.to_duckdb(duckdb.connect()).select("x", "p", "b").to_arrow_table())
    total = ds.to_polars().select(pl.col("x").sum()).collect().item()
    assert total == sum(range(ROWS))


@pytest.mark.parametrize(
    "dnf",
    [
        [[("p", "==", "US/CA")]],
        [[("p", "==", None)], [("b", "==", True), ("i", ">", -1)]],
        [[("d", "==", dt.date(2020, 1, 2)), ("f", "!=", 1.0)]],
        [[("s", "not in", ["s1", "s2"])]],
        [[("s", "in", ["s1", None]), ("f", "<", 5.0)]],
        [[("f", "==", None)]],
        [[("x", ">=", 40), ("t", "<", dt.datetime(2021, 1, 1, 0, 0, 45))]],
    ],
)
def test_filtered_scan(root: str, dnf: list[list[tuple[str, str, Any]]]) -> None:
    expected = _oracle(root, dnf)
    if not _touches_floats(dnf):
        _same(expected, ka.dataset(root, UUID, filter=dnf).to_table())
    _same(expected, _polars(kpl.scan_kartothek(root, UUID, filter=dnf)))
    _same(expected, _polars(ka.dataset(root, UUID).filter(dnf).to_polars()))
    _same(expected, ka.dataset(root, UUID).filter(dnf).to_duckdb(duckdb.connect()).to_arrow_table())


def test_polars_filter_after_the_scan_is_planned_by_us(root: str, monkeypatch) -> None:
    seen = _record_polars_sources(monkeypatch)
    ds = ka.dataset(root, UUID)
    got = ds.to_polars().filter((pl.col("x") == 7) & (pl.col("p") == "US/CA")).collect()
    assert got["x"].to_list() == []  # x = 7 is in partition "a b&c=d"
    got = ds.to_polars().filter(pl.col("x") == 7).collect()
    assert got["x"].to_list() == [7]
    expected = ds.filter([[("x", "==", 7)]]).tasks
    assert len(expected) == 1
    assert sorted(seen[-1]) == [f"{root}/{t.key}" for t in expected]


def test_an_expression_filter_the_predicate_form_cannot_express_falls_back(root: str) -> None:
    expr = pc.starts_with(pc.field("s"), "s1") | (pc.field("x") == 3)
    ds = ka.dataset(root, UUID).filter(expr)
    assert kpl.fallback_reason(ds) is not None
    assert kduck.fallback_reason(ds) is not None
    expected = ds.to_table()
    _same(expected, _polars(ds.to_polars()))
    _same(expected, ds.to_duckdb(duckdb.connect()).to_arrow_table())


# -- pruning: the native scan gets only the planned files --------------------------


def _record_polars_sources(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    original = pl.scan_parquet

    def scan_parquet(source: Any, **kwargs: Any) -> Any:
        seen.append(list(source))
        assert kwargs["hive_partitioning"] is False
        return original(source, **kwargs)

    monkeypatch.setattr(pl, "scan_parquet", scan_parquet)
    return seen


class _RecordingConnection:
    """A DuckDB connection that records the files handed to ``read_parquet``."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.files: list[list[str]] = []

    def sql(self, query: str, **kwargs: Any) -> Any:
        assert "hive_partitioning=false" in query
        self.files.append(list(kwargs["params"]["files"]))
        return self.con.sql(query, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_index_point_query_hands_only_the_matching_file(root: str, monkeypatch) -> None:
    seen = _record_polars_sources(monkeypatch)
    dnf = [[("x", "==", 13)]]
    planned = ka.dataset(root, UUID, filter=dnf)
    assert len(planned.tasks) == 1
    want = [f"{root}/{planned.tasks[0].key}"]
    got = kpl.scan_kartothek(root, UUID, filter=dnf).collect()
    assert got["x"].to_list() == [13]
    assert [sorted(s) for s in seen] == [want]
    con = _RecordingConnection()
    rel = planned.to_duckdb(con)
    assert rel.select("x").fetchall() == [(13,)]
    assert con.files == [want]


def test_empty_dataset_has_the_schema(root: str) -> None:
    ds = ka.dataset(root, UUID, filter=[[("p", "==", "nowhere")]])
    assert ds.tasks == []
    expected = ds.to_table()
    frame = ds.to_polars().collect()
    assert frame.height == 0
    assert frame.columns == expected.column_names
    assert frame.schema["d"] == pl.Date
    rel = ds.to_duckdb(duckdb.connect())
    table = rel.to_arrow_table()
    assert table.num_rows == 0
    assert table.schema.names == expected.column_names
    assert table.schema.field("d").type == pa.date32()


def test_many_partitions_join_the_file_paths(root: str, monkeypatch) -> None:
    monkeypatch.setattr(kpl, "MAX_CONCAT_PARTITIONS", 1)
    ds = ka.dataset(root, UUID)
    _same(ds.to_table(), _polars(ds.to_polars()))
    dnf = [[("p", "==", None), ("f", ">", 1.0)]]
    _same(ds.to_table(filter=dnf), _polars(ds.filter(dnf).to_polars()))


def test_unpartitioned_dataset(tmp_path) -> None:
    table = _table().drop_columns(PARTITIONS)
    ka.write_dataset(table, str(tmp_path), "flat", max_rows_per_file=10)
    ds = ka.dataset(str(tmp_path), "flat")
    _same(ds.to_table(), _polars(ds.to_polars()))
    _same(ds.to_table(), ds.to_duckdb(duckdb.connect()).to_arrow_table())


def test_memory_store_falls_back_to_the_arrow_scan() -> None:
    url = "memory://engines-fallback"
    ka.write_dataset(_table(), url, UUID, partition_on=["p"])
    ds = ka.dataset(url, UUID)
    assert kpl.fallback_reason(ds) is not None
    _same(ds.to_table(), _polars(ds.to_polars()))
    _same(ds.to_table(), ds.to_duckdb(duckdb.connect()).to_arrow_table())


# -- random filters: three engines, one answer --------------------------------------

_VALUES = {
    "p": st.sampled_from(["US/CA", "DE", "a b&c=d", "zz", None]),
    "i": st.sampled_from([-1, 0, 1, 5, None]),
    "b": st.sampled_from([True, False, None]),
    "x": st.integers(-2, ROWS + 2),
    "f": st.sampled_from([0.0, 0.25, 1.5, 5.0, math.nan, None]),
    "s": st.sampled_from(["s0", "s3", "s5", "q", None]),
}


@st.composite
def _terms(draw: Any) -> tuple[str, str, Any]:
    column = draw(st.sampled_from(sorted(_VALUES)))
    if draw(st.booleans()):
        return (
            column,
            draw(st.sampled_from(["in", "not in"])),
            draw(st.lists(_VALUES[column], max_size=3)),
        )
    value = draw(_VALUES[column])
    null = value is None or (isinstance(value, float) and math.isnan(value))
    ops = ["==", "!="] if null else ["==", "!=", "<", "<=", ">", ">="]
    return column, draw(st.sampled_from(ops)), value


DNFS = st.lists(st.lists(_terms(), min_size=1, max_size=3), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dnf=DNFS)
def test_random_filters_agree_across_engines(root: str, dnf: list[list[Any]]) -> None:
    ds = ka.dataset(root, UUID)
    expected = _oracle(root, dnf)
    if not _touches_floats(dnf):
        _same(expected, ds.to_table(filter=dnf))
    narrowed = ds.filter(dnf)
    _same(expected, _polars(narrowed.to_polars()))
    _same(expected, narrowed.to_duckdb(duckdb.connect()).to_arrow_table())


# -- fragment cache ----------------------------------------------------------------


class _CountingFs(LocalFileSystem):
    opened: list[str] = []

    def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith(".parquet") and "/table/" in path:
            _CountingFs.opened.append(path)
        return super()._open(path, *args, **kwargs)


class _CountingStore(LocalStore):
    """Local disk read by Arrow through fsspec, so each data file opened is counted."""

    def arrow_filesystem(self) -> pafs.FileSystem:
        return pafs.PyFileSystem(pafs.FSSpecHandler(_CountingFs()))


def test_second_selective_query_reads_no_footer(tmp_path) -> None:
    # one file, two row groups: x 0..4 and 20..24; its min/max (0..24) cannot exclude 12
    table = pa.table({"x": pa.array([0, 1, 2, 3, 4, 20, 21, 22, 23, 24], pa.int64())})
    ka.write_dataset(table, str(tmp_path), "rg", row_group_size=5)
    ds = ka.dataset(_CountingStore(str(tmp_path)), "rg")
    no_rows = pc.field("x") == 12
    _CountingFs.opened.clear()
    first = ds.to_table(filter=no_rows)
    assert first.num_rows == 0
    assert len(_CountingFs.opened) == 1  # the footer, to learn the row groups
    _CountingFs.opened.clear()
    second = ds.to_table(filter=no_rows)
    assert second.equals(first)
    assert _CountingFs.opened == []  # row groups pruned from the cached footer
    # a narrowed child, and a filtered dataset, share the cache
    assert ds.filter(pc.field("x") >= 0).to_table(filter=no_rows).num_rows == 0
    assert ds.scanner(filter=no_rows).to_table().num_rows == 0
    assert _CountingFs.opened == []
    some = pc.field("x") == 21
    assert ds.to_table(filter=some).column("x").to_pylist() == [21]
    assert ds.to_table(filter=some).equals(ds.to_table(filter=some))


def test_fragment_cache_holds_one_fragment_per_planned_file(root: str) -> None:
    ds = ka.dataset(root, UUID)
    for k in range(5):
        ds.to_table(filter=pc.field("x") == k)
        ds.filter([[("p", "==", "DE")]]).to_table()
    assert len(ds._fragment_cache) == len(ds.tasks)
    fresh = pds.FileSystemDataset(
        list(ds.get_fragments()), ds.schema, ds.format, ds.filesystem
    ).to_table()
    assert _rows(fresh) == _rows(ds.to_table())


def test_a_repeated_filter_is_planned_once(root: str, monkeypatch) -> None:
    ds = ka.dataset(root, UUID)
    calls: list[Any] = []
    original = ka.arrow.planning.plan

    def plan(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ka.arrow.planning, "plan", plan)
    first = ds.to_table(filter=[[("x", "==", 5)]])
    again = ds.to_table(filter=[[("x", "==", 5)]])
    assert again.equals(first) and first.column("x").to_pylist() == [5]
    assert len(calls) == 1
    ds.to_table(filter=pc.field("x") == 5)
    ds.to_table(filter=pc.field("x") == 5)
    assert len(calls) == 2
    # values of other types are other filters
    assert (
        ds.to_table(filter=[[("f", "<", 1)]]).num_rows
        == ds.to_table(filter=[[("f", "<", 1.0)]]).num_rows
    )
    assert len(calls) == 4


@pytest.mark.emulator
@pytest.mark.parametrize(
    "backend,scheme",
    [
        pytest.param("s3", "s3://", marks=pytest.mark.s3),
        pytest.param("azure", "az://", marks=pytest.mark.azure),
    ],
)
def test_object_stores_are_read_by_polars_natively(backend, scheme, request, monkeypatch) -> None:
    url, options = request.getfixturevalue(f"{backend}_url_and_options")
    ka.write_dataset(_table(), url, UUID, partition_on=["p"], storage_options=options)
    ds = ka.dataset(url, UUID, storage_options=options)
    assert kpl.fallback_reason(ds) is None
    seen = _record_polars_sources(monkeypatch)
    expected = ds.to_table()
    _same(expected, _polars(ds.to_polars()))
    assert all(s.startswith(scheme) for s in seen[-1])
    # DuckDB needs its httpfs/azure extensions for object stores: it reads through our Arrow scan
    assert kduck.fallback_reason(ds) is not None
    _same(expected, ds.to_duckdb(duckdb.connect()).to_arrow_table())


def test_count_rows_on_partition_columns_reads_no_file(tmp_path) -> None:
    ka.write_dataset(_table(), str(tmp_path), UUID, partition_on=["p", "b"])
    ds = ka.dataset(_CountingStore(str(tmp_path)), UUID)
    full = ds.to_table()
    _CountingFs.opened.clear()
    for dnf in ([[("p", "==", "US/CA")]], [[("p", "==", None)], [("b", "==", True)]]):
        expected = full.filter(ds.filter(dnf)._ktk_filter.expression).num_rows
        assert ds.count_rows(filter=dnf) == expected > 0
        assert ka.dataset(_CountingStore(str(tmp_path)), UUID, filter=dnf).count_rows() == expected
    assert _CountingFs.opened == []
    # a term on a data column needs the rows
    assert ds.count_rows(filter=[[("p", "==", "DE"), ("x", ">", 20)]]) == 7
    assert _CountingFs.opened != []


def test_plateau_written_dataset(tmp_path) -> None:
    """plateau's files hold the pandas index and unquoted values (``p=a/b``)."""
    import functools

    import minimalkv
    import pandas as pd
    import plateau.io.eager as plateau

    df = pd.DataFrame(
        {"p": ["a/b", "c", "c"], "x": [1, 2, 3], "f": [1.5, None, 2.0]}, index=[10, 11, 12]
    )
    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{tmp_path}")
    plateau.store_dataframes_as_dataset(
        store=store, dataset_uuid="plat", dfs=[df], partition_on=["p"], secondary_indices=["x"]
    )
    ds = ka.dataset(str(tmp_path), "plat")
    assert kpl.fallback_reason(ds) is None and kduck.fallback_reason(ds) is None
    expected = ds.to_table()
    assert sorted(expected.column("p").to_pylist()) == ["a/b", "c", "c"]
    _same(expected, _polars(ds.to_polars()))
    _same(expected, ds.to_duckdb(duckdb.connect()).to_arrow_table())
    _same(
        ds.to_table(filter=[[("x", "==", 2)]]), _polars(ds.filter([[("x", "==", 2)]]).to_polars())
    )
