"""Filters that select NaN rows of float columns return them, whatever the row groups hold.

Parquet statistics ignore NaN: a row group of NaN and 1.0 records min = max =
1.0 and no null, and Arrow's scanner prunes row groups by them, so a filter
selecting NaN (``f != 1.0``, ``is_nan``, kartothek's ``== None``) used to
lose those rows silently.  The oracles here are numpy over the values (no
statistics involved); every entry point is compared with them: the Arrow
dataset (``to_table``, ``to_batches``, ``count_rows``, ``head``, ``scanner``),
the eager and Dask facades, Polars and DuckDB.  Filters that select no NaN
keep their full pushdown: a file whose footer statistics lie shows it (Arrow
prunes the row group the statistics rule out, though it holds the row).
"""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import arrow, planning
from ktk_arrow.io import eager
from ktk_arrow.io.dask import dataframe as dask_dataframe
from ktk_arrow.spec import predicates

NAN = float("nan")
UUID = "nans"
FLOATS = (pa.float32(), pa.float64())
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- data and oracles -----------------------------------------------------------


def _table(values: list[float | None], type_: pa.DataType, parts: list[int] | None = None):
    columns: dict[str, Any] = {
        "i": pa.array(range(len(values)), pa.int64()),
        "f": pa.array(values, type_),
    }
    if parts is not None:
        columns["p"] = pa.array(parts, pa.int64())
    return pa.table(columns)


def _write(root: Path | str, table: pa.Table, rows_per_group: int, **kwargs: Any) -> None:
    ka.write_dataset(table, str(root), UUID, row_group_size=rows_per_group, **kwargs)


def _floats(values: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers with null as NaN, validity)``."""
    valid = np.array([v is not None for v in values], dtype=bool)
    numbers = np.array([NAN if v is None else v for v in values], dtype=np.float64)
    return numbers, valid


def _dnf_mask(values: list[float | None], op: str, value: Any) -> np.ndarray:
    """kartothek semantics (plateau's, through pandas): NaN and null are one value."""
    a, _valid = _floats(values)
    null = np.isnan(a)
    if op in ("in", "not in"):
        members = [v for v in value if v is not None and not math.isnan(v)]
        with_null = len(members) != len(value)
        hit = np.isin(a, members) | (null & with_null)
        return hit if op == "in" else ~hit
    if value is None or math.isnan(value):
        if op == "==":
            return null
        assert op in ("!=", "is distinct from")
        return ~null
    if op == "==":
        return a == value
    if op in ("!=", "is distinct from"):
        return null | (a != value)
    return {"<": a < value, "<=": a <= value, ">": a > value, ">=": a >= value}[op]


def _dnf_oracle(values: list[float | None], dnf: list[list[tuple[str, str, Any]]]) -> list[int]:
    """Row ids the DNF selects (every term on ``f``, or on the row id ``i``)."""
    ids = np.arange(len(values))
    selected = np.zeros(len(values), dtype=bool)
    for clause in dnf:
        clause_mask = np.ones(len(values), dtype=bool)
        for column, op, value in clause:
            if column == "i":
                clause_mask &= {"<": ids < value, ">=": ids >= value}[op]
            else:
                clause_mask &= _dnf_mask(values, op, value)
        selected |= clause_mask
    return [int(i) for i in ids[selected]]


def _arrow_mask(values: list[float | None], kind: str, value: Any) -> np.ndarray:
    """Arrow semantics: NaN is a value, a null comparison is null (dropped)."""
    a, valid = _floats(values)
    if kind == "!=":
        return valid & (a != value)
    if kind == "==":
        return valid & (a == value)
    if kind == "<":
        return valid & (a < value)
    if kind == "not <":
        return valid & ~(a < value)
    if kind == "is_nan":
        return valid & np.isnan(a)
    if kind == "not is_nan":
        return valid & ~np.isnan(a)
    if kind == "is_null nan":
        return ~valid | np.isnan(a)
    if kind == "is_null":
        return ~valid
    if kind == "not in":  # is_in matches NaN with NaN, a null with nothing here
        has_nan = any(math.isnan(v) for v in value)
        hit = valid & (np.isin(a, value) | (np.isnan(a) & has_nan))
        return ~hit
    raise AssertionError(kind)


def _arrow_expression(kind: str, value: Any) -> pc.Expression:
    f = pc.field("f")
    return {
        "!=": lambda: f != value,
        "==": lambda: f == value,
        "<": lambda: f < value,
        "not <": lambda: ~(f < value),
        "is_nan": lambda: pc.is_nan(f),
        "not is_nan": lambda: ~pc.is_nan(f),
        "is_null nan": lambda: pc.is_null(f, nan_is_null=True),
        "is_null": lambda: f.is_null(),
        "not in": lambda: ~f.isin(value),
    }[kind]()


def _ids(table: pa.Table) -> list[int]:
    return sorted(table.column("i").to_pylist())


def _lie_about(path: Path, true_value: int, claimed: int) -> None:
    """Make the footer statistics of int64 ``true_value`` say ``claimed`` (same size)."""
    raw = bytearray(path.read_bytes())
    footer_length = struct.unpack("<i", raw[-8:-4])[0]
    start = len(raw) - 8 - footer_length
    old, new = struct.pack("<q", true_value), struct.pack("<q", claimed)
    assert raw[start:].count(old) >= 2  # min and max of the row group
    raw[start:] = bytes(raw[start:]).replace(old, new)
    path.write_bytes(bytes(raw))


# -- strategies -----------------------------------------------------------------

value_st = st.sampled_from([None, NAN, 1.0, 0.5, 2.0])
values_st = st.lists(value_st, min_size=1, max_size=9)
number_st = st.sampled_from([1.0, 0.5, 2.0])
null_st = st.sampled_from([None, NAN])
set_st = st.lists(st.sampled_from([None, NAN, 1.0, 2.0]), max_size=3)


@st.composite
def term_st(draw: st.DrawFn) -> tuple[str, str, Any]:
    op = draw(
        st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is distinct from"])
    )
    if op in ("in", "not in"):
        return ("f", op, draw(set_st))
    if op in ("<", "<=", ">", ">="):
        return ("f", op, draw(number_st))
    return ("f", op, draw(st.one_of(null_st, number_st)))


@st.composite
def dnf_st(draw: st.DrawFn) -> list[list[tuple[str, str, Any]]]:
    clauses = []
    for _ in range(draw(st.integers(1, 2))):
        clause = [draw(term_st())]
        if draw(st.booleans()):
            clause.append(("i", draw(st.sampled_from(["<", ">="])), draw(st.integers(0, 8))))
        clauses.append(clause)
    return clauses


arrow_kind_st = st.sampled_from(
    ["!=", "==", "<", "not <", "is_nan", "not is_nan", "is_null nan", "is_null", "not in"]
)


# -- the reported cases -----------------------------------------------------------


def test_arrow_alone_prunes_nan_rows(tmp_path: Path) -> None:
    """The cause: Arrow's scanner of a plain parquet file misses the NaN row."""
    import pyarrow.dataset as ds

    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"f": [NAN, 1.0]}), path)
    assert ds.dataset(path).to_table(filter=pc.field("f") != 1.0).num_rows == 0


@pytest.mark.parametrize("type_", FLOATS, ids=str)
@pytest.mark.parametrize(
    ("dnf", "expected"),
    [
        ([[("f", "==", None)]], [0, 2, 3]),
        ([[("f", "==", NAN)]], [0, 2, 3]),
        ([[("f", "!=", 1.0)]], [0, 2, 3, 5]),
        ([[("f", "is distinct from", 1.0)]], [0, 2, 3, 5]),
        ([[("f", "not in", [1.0])]], [0, 2, 3, 5]),
        ([[("f", "in", [1.0, None])]], [0, 1, 2, 3, 4]),
        ([[("f", "not in", [1.0, None])]], [5]),
        ([[("f", "!=", None)]], [1, 4, 5]),
        ([[("f", "==", 1.0)]], [1, 4]),
    ],
)
def test_dnf_finds_nan_rows(
    tmp_path: Path, type_: pa.DataType, dnf: Any, expected: list[int]
) -> None:
    # row groups: [NaN, 1.0] (min = max = 1.0, no null), [NaN] alone, [NaN, 1.0], [2.0]
    _write(tmp_path, _table([NAN, 1.0, NAN, NAN, 1.0, 2.0], type_), 2)
    rows = [NAN, 1.0, NAN, NAN, 1.0, 2.0]
    assert _dnf_oracle(rows, dnf) == expected
    assert _ids(ka.dataset(str(tmp_path), UUID).to_table(filter=dnf)) == expected
    assert _ids(ka.dataset(str(tmp_path), UUID, filter=dnf).to_table()) == expected
    assert ka.dataset(str(tmp_path), UUID).count_rows(filter=dnf) == len(expected)
    frame = eager.read_table(UUID, str(tmp_path), predicates=dnf)
    assert sorted(frame["i"]) == expected


@pytest.mark.parametrize("type_", FLOATS, ids=str)
def test_expressions_find_nan_rows(tmp_path: Path, type_: pa.DataType) -> None:
    rows = [NAN, 1.0, None, 1.0, NAN, 1.0]
    _write(tmp_path, _table(rows, type_), 2)  # [NaN, 1.0], [null, 1.0], [NaN, 1.0]
    ds = ka.dataset(str(tmp_path), UUID)
    f = pc.field("f")
    assert _ids(ds.to_table(filter=f != 1.0)) == [0, 4]
    assert _ids(ds.to_table(filter=pc.is_nan(f))) == [0, 4]
    assert _ids(ds.to_table(filter=pc.is_null(f, nan_is_null=True))) == [0, 2, 4]
    assert _ids(ds.to_table(filter=~f.isin([1.0]))) == [0, 2, 4]
    assert _ids(ds.to_table(filter=~(f == 1.0))) == [0, 4]
    assert _ids(ds.to_table(filter=f.is_null())) == [2]


# -- properties -----------------------------------------------------------------


@SETTINGS
@given(
    values=values_st,
    type_=st.sampled_from(FLOATS),
    rows_per_group=st.integers(1, 3),
    rows_per_file=st.one_of(st.none(), st.integers(1, 4)),
    dnf=dnf_st(),
)
def test_dnf_matches_numpy(
    values: list[float | None],
    type_: pa.DataType,
    rows_per_group: int,
    rows_per_file: int | None,
    dnf: list[list[tuple[str, str, Any]]],
) -> None:
    expected = _dnf_oracle(values, dnf)
    with tempfile.TemporaryDirectory() as root:
        _write(root, _table(values, type_), rows_per_group, max_rows_per_file=rows_per_file)
        ds = ka.dataset(root, UUID)
        assert _ids(ds.to_table(filter=dnf)) == expected
        batches = list(ds.to_batches(filter=dnf, columns=["i"]))
        assert sorted(i for b in batches for i in b.column("i").to_pylist()) == expected
        assert ds.count_rows(filter=dnf) == len(expected)
        opened = ka.dataset(root, UUID, filter=dnf)
        assert _ids(opened.to_table()) == expected
        assert opened.count_rows() == len(expected)
        frame = eager.read_table(UUID, root, predicates=dnf)
        assert sorted(frame["i"]) == expected


@SETTINGS
@given(
    values=values_st,
    type_=st.sampled_from(FLOATS),
    rows_per_group=st.integers(1, 3),
    kind=arrow_kind_st,
    number=number_st,
    members=st.lists(st.sampled_from([NAN, 1.0, 2.0]), min_size=1, max_size=2),
    with_id=st.booleans(),
)
def test_expressions_match_numpy(
    values: list[float | None],
    type_: pa.DataType,
    rows_per_group: int,
    kind: str,
    number: float,
    members: list[float],
    with_id: bool,
) -> None:
    value = members if kind == "not in" else number
    expr = _arrow_expression(kind, value)
    mask = _arrow_mask(values, kind, value)
    if with_id:
        expr = expr & (pc.field("i") >= 2)
        mask &= np.arange(len(values)) >= 2
    expected = [int(i) for i in np.flatnonzero(mask)]
    table = _table(values, type_)
    assert _ids(table.filter(expr)) == expected  # the oracle agrees with Arrow in memory
    with tempfile.TemporaryDirectory() as root:
        _write(root, table, rows_per_group)
        ds = ka.dataset(root, UUID)
        assert _ids(ds.to_table(filter=expr)) == expected
        assert ds.count_rows(filter=expr) == len(expected)
        got = pa.Table.from_batches(list(ds.to_batches(filter=expr)), schema=ds.schema)
        assert _ids(got) == expected
        assert _ids(ka.dataset(root, UUID, filter=expr).to_table()) == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=values_st,
    rows_per_group=st.integers(1, 3),
    parts=st.lists(st.integers(0, 1), min_size=9, max_size=9),
    dnf=dnf_st(),
)
def test_partitioned_and_dask_match_numpy(
    values: list[float | None], rows_per_group: int, parts: list[int], dnf: Any
) -> None:
    """The float is a data column of a partitioned dataset; the Dask facade reads it."""
    expected = _dnf_oracle(values, dnf)
    with tempfile.TemporaryDirectory() as root:
        table = _table(values, pa.float64(), parts[: len(values)])
        _write(root, table, rows_per_group, partition_on=["p"])
        assert _ids(ka.dataset(root, UUID).to_table(filter=dnf)) == expected
        ddf = dask_dataframe.read_dataset_as_ddf(UUID, root, predicates=dnf)
        frame = ddf.compute(scheduler="sync")
        assert sorted(frame["i"]) == expected
        assert sorted(eager.read_table(UUID, root, predicates=dnf)["i"]) == expected


# -- every reader ---------------------------------------------------------------


def _nan_dataset(root: Path) -> list[float | None]:
    rows = [NAN, 1.0, None, 1.0, NAN, 1.0, 2.0, NAN]
    _write(root, _table(rows, pa.float64(), [0, 0, 0, 0, 1, 1, 1, 1]), 2, partition_on=["p"])
    return rows


def test_scanner_head_take_and_reader(tmp_path: Path) -> None:
    _nan_dataset(tmp_path)
    ds = ka.dataset(str(tmp_path), UUID)
    expr = pc.field("f") != 1.0
    assert _ids(ds.scanner(filter=expr).to_table()) == [0, 4, 6, 7]
    assert _ids(ds.to_reader(filter=expr).read_all()) == [0, 4, 6, 7]
    assert ds.head(2, filter=expr).column("i").to_pylist() == [0, 4]
    assert ds.take([1], filter=expr).column("i").to_pylist() == [4]
    # a projection without the filtered column, and one of expressions
    assert ds.to_table(filter=expr, columns=["i"]).column_names == ["i"]
    doubled = ds.to_table(filter=expr, columns={"twice": pc.field("i") * 2})
    assert sorted(doubled.column("twice").to_pylist()) == [0, 8, 12, 14]
    assert _ids(ds.filter(expr).to_table()) == [0, 4, 6, 7]
    assert _ids(ds.filter([[("f", "==", None)]]).to_table()) == [0, 2, 4, 7]


def test_batches_stream_in_file_order(tmp_path: Path) -> None:
    rows = [NAN if i % 3 == 0 else 1.0 for i in range(60)]
    _write(tmp_path, _table(rows, pa.float64()), 2, max_rows_per_file=10)
    ds = ka.dataset(str(tmp_path), UUID)
    batches = ds.to_batches(filter=[[("f", "!=", 1.0)]], columns=["i"], batch_size=4)
    got = [i for b in batches for i in b.column("i").to_pylist()]
    assert sorted(got) == list(range(0, 60, 3))
    # files are read in the planned order, and each file's rows in order
    order = {t.key: n for n, t in enumerate(ds.tasks)}
    assert got == sorted(got, key=lambda i: (order[_file_of(ds, i)], i))


def _file_of(ds: arrow.KartothekDataset, row: int) -> str:
    table = ds.to_table(filter=pc.field("i") == row, columns=["i", "__filename"])
    name = table.column("__filename")[0].as_py()
    return next(t.key for t in ds.tasks if name.endswith(t.key))


def test_memory_store(memory_url_and_options: tuple[str, dict[str, Any]]) -> None:
    url, options = memory_url_and_options
    rows = [NAN, 1.0, None, 1.0, NAN, 1.0]
    ka.write_dataset(
        _table(rows, pa.float32()), url, UUID, row_group_size=2, storage_options=options
    )
    ds = ka.dataset(url, UUID, storage_options=options)
    assert _ids(ds.to_table(filter=[[("f", "!=", 1.0)]])) == [0, 2, 4]
    assert _ids(ds.to_table(filter=pc.is_nan(pc.field("f")))) == [0, 4]
    assert ds.count_rows(filter=pc.field("f") != 1.0) == 2


def test_native_engines(tmp_path: Path) -> None:
    import duckdb

    rows = _nan_dataset(tmp_path)
    for dnf in ([[("f", "!=", 1.0)]], [[("f", "==", None)]], [[("f", "not in", [1.0])]]):
        expected = _dnf_oracle(rows, dnf)
        planned = ka.dataset(str(tmp_path), UUID, filter=dnf)
        assert sorted(planned.to_polars().collect()["i"].to_list()) == expected
        relation = planned.to_duckdb(duckdb.connect())
        assert sorted(r[0] for r in relation.select("i").fetchall()) == expected
    table = ka.dataset(str(tmp_path), UUID).to_table()
    f = pc.field("f")
    for expr in (f != 1.0, pc.is_nan(f), pc.is_null(f, nan_is_null=True), ~f.isin([1.0])):
        expected = _ids(table.filter(expr))
        planned = ka.dataset(str(tmp_path), UUID, filter=expr)
        assert sorted(planned.to_polars().collect()["i"].to_list()) == expected
        relation = planned.to_duckdb(duckdb.connect())
        assert sorted(r[0] for r in relation.select("i").fetchall()) == expected
    # DuckDB and Polars over the Arrow dataset: their filters reach our scanner
    ds = ka.dataset(str(tmp_path), UUID)
    con = duckdb.connect()
    con.register("t", ds)
    assert sorted(r[0] for r in con.sql("select i from t where f <> 1.0").fetchall()) == [
        0,
        4,
        6,
        7,
    ]
    assert sorted(r[0] for r in con.sql("select i from t where isnan(f)").fetchall()) == [0, 4, 7]
    import polars as pl

    frame = pl.scan_pyarrow_dataset(ds).filter(pl.col("f") != 1.0).collect()
    assert sorted(frame["i"].to_list()) == [0, 4, 6, 7]


# -- our own planning by stored statistics ------------------------------------------


def test_planning_keeps_files_with_nan(tmp_path: Path) -> None:
    """Files of NaN and 1.0 record min = max = 1.0: planning must not prune them."""
    rows = [NAN, 1.0, 1.0, NAN, 2.0, 2.0]
    _write(tmp_path, _table(rows, pa.float64()), 2, max_rows_per_file=2)
    ds = ka.dataset(str(tmp_path), UUID)
    stats = [e.stats["f"] for e in ds.metadata.files.values()]
    assert sorted(s[:2] for s in stats) == [[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]
    for dnf, files in (
        ([[("f", "!=", 1.0)]], 3),
        ([[("f", "==", None)]], 3),
        ([[("f", "not in", [1.0, 2.0])]], 3),
        ([[("f", ">", 1.5)]], 1),
        ([[("f", "==", 2.0)]], 1),
    ):
        assert len(ds.filter(dnf).tasks) == files, dnf
    assert len(ds.filter(pc.is_nan(pc.field("f"))).tasks) == 3


# -- pushdown is kept where NaN cannot matter ----------------------------------------

LIE = 987654321


def _lying_dataset(root: Path) -> None:
    """One file, one row group: ``i`` holds 7 but its statistics say min = max = LIE."""
    table = pa.table({"i": pa.array([7, 7], pa.int64()), "f": [NAN, 1.0]})
    ka.write_dataset(table, str(root), UUID)
    (path,) = (root / UUID / "table").glob("*.parquet")
    _lie_about(path, 7, LIE)


@pytest.mark.parametrize(
    "row_filter",
    [
        [[("i", "==", 7)]],
        [[("i", "==", 7), ("f", "!=", 1.0)]],
        [[("i", "==", 7), ("f", "==", None)]],
        pc.field("i") == 7,
        (pc.field("i") == 7) & (pc.field("f") != 1.0),
        (pc.field("i") == 7) & pc.is_nan(pc.field("f")),
    ],
    ids=repr,
)
def test_filters_keep_row_group_pushdown(tmp_path: Path, row_filter: Any) -> None:
    """Arrow still prunes by ``i``'s (lying) statistics: the row it rules out stays out."""
    _lying_dataset(tmp_path)
    ds = ka.dataset(str(tmp_path), UUID)
    assert ds.count_rows() == 2  # the data is there: only the statistics lie
    assert ds.to_table(filter=row_filter).num_rows == 0
    assert ds.count_rows(filter=row_filter) == 0
    assert ka.dataset(str(tmp_path), UUID, filter=row_filter).to_table().num_rows == 0
    if isinstance(row_filter, list):
        assert len(eager.read_table(UUID, str(tmp_path), predicates=row_filter)) == 0
        ddf = dask_dataframe.read_dataset_as_ddf(UUID, str(tmp_path), predicates=row_filter)
        assert len(ddf.compute(scheduler="sync")) == 0


def test_nan_filters_alone_are_applied_after_the_scan(tmp_path: Path) -> None:
    """With the lying file: a filter on ``f`` alone must not prune, and still finds the NaN."""
    _lying_dataset(tmp_path)
    ds = ka.dataset(str(tmp_path), UUID)
    assert ds.to_table(filter=[[("f", "!=", 1.0)]]).num_rows == 1
    assert ds.to_table(filter=pc.field("f") != 1.0).num_rows == 1


def test_split_of_filters() -> None:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float32()), ("s", pa.string())])

    def split(user_filter: Any) -> tuple[Any, Any]:
        return arrow.nan_safe_filter(planning.make_filter(user_filter, schema), schema)

    plain = [[("i", "==", 1), ("f", "<", 2.0), ("s", "!=", "a")], [("f", "in", [1.0])]]
    pushed, after = split(plain)
    assert after is None and pushed.equals(planning.make_filter(plain, schema).expression)
    pushed, after = split([[("i", "==", 1), ("f", "!=", 2.0)]])
    assert after is not None and pushed.equals(pc.field("i") == 1)
    pushed, after = split([[("f", "==", None)]])
    assert pushed is None and after is not None
    assert split(pc.field("f") < 1.0)[1] is None
    assert split(~pc.is_nan(pc.field("f")))[1] is None
    assert split(pc.field("s") != "x")[1] is None
    pushed, after = split((pc.field("i") > 3) & (pc.field("f") != 1.0))
    assert after is not None and pushed is not None
    assert predicates.expression_columns(pushed) == {"i"}


def test_facades(tmp_path: Path) -> None:
    from ktk_arrow.io import iter as ktk_iter

    rows = _nan_dataset(tmp_path)
    for dnf in ([[("f", "!=", 1.0)]], [[("f", "==", None)]], [[("f", "not in", [1.0, 2.0])]]):
        expected = _dnf_oracle(rows, dnf)
        frame = eager.read_table(UUID, str(tmp_path), predicates=dnf, columns=["i"])
        assert sorted(frame["i"]) == expected
        frames = eager.read_dataset_as_dataframes(UUID, str(tmp_path), predicates=dnf)
        assert sorted(i for df in frames for i in df["i"]) == expected
        frames = ktk_iter.read_dataset_as_dataframes__iterator(UUID, str(tmp_path), predicates=dnf)
        assert sorted(i for df in frames for i in df["i"]) == expected
        ddf = dask_dataframe.read_dataset_as_ddf(UUID, str(tmp_path), predicates=dnf)
        assert sorted(ddf.compute(scheduler="sync")["i"]) == expected
        # a projection lets Dask fuse the reads of several files into one scan
        assert sorted(ddf[["i"]].compute(scheduler="sync")["i"]) == expected
        assert len(ddf) == len(expected)
        ddf = dask_dataframe.read_dataset_as_ddf(
            UUID, str(tmp_path), predicates=dnf, columns=["i"], dispatch_by=["p"]
        )
        assert sorted(ddf.compute(scheduler="sync")["i"]) == expected


def test_fragment_index_and_damaged_files(tmp_path: Path) -> None:
    """What the Dask parts ask for (``__fragment_index``), and errors naming the file."""
    rows = [NAN, 1.0, None, 1.0, NAN, 1.0, 2.0, NAN]
    _write(tmp_path, _table(rows, pa.float64()), 2, max_rows_per_file=2)
    ds = ka.dataset(str(tmp_path), UUID)
    expr = pc.field("f") != 1.0
    table = arrow.read_planned(ds, columns=["i", "__fragment_index"], filter=expr)
    assert table.to_pydict() == {"i": [0, 4, 6, 7], "__fragment_index": [0, 2, 3, 3]}
    with pytest.raises(ka.InvalidArgumentError, match="__fragment_index"):
        ds.scanner(columns=["i", "__fragment_index"], filter=expr)
    missing = ds.tasks[2].key
    (tmp_path / missing).unlink()
    for read in (
        lambda: ds.to_table(filter=expr),
        lambda: list(ds.to_batches(filter=expr)),
        lambda: ds.count_rows(filter=expr),
        lambda: eager.read_table(UUID, str(tmp_path), predicates=[[("f", "!=", 1.0)]]),
    ):
        with pytest.raises(ka.StoreError, match=missing):
            read()


def _atom_st() -> st.SearchStrategy[pc.Expression]:
    kinds = st.sampled_from(
        ["!=", "==", "<", "not <", "is_nan", "not is_nan", "is_null nan", "is_null"]
    )
    f_atoms = st.builds(_arrow_expression, kinds, number_st)
    f_in = st.builds(
        lambda members, negate: (
            ~pc.field("f").isin(members) if negate else pc.field("f").isin(members)
        ),
        st.lists(st.sampled_from([NAN, 1.0, 2.0]), min_size=1, max_size=2),
        st.booleans(),
    )
    i_atoms = st.builds(lambda v: pc.field("i") >= v, st.integers(0, 8)) | st.builds(
        lambda v: pc.field("i") != v, st.integers(0, 8)
    )
    return f_atoms | f_in | i_atoms


expression_st = st.recursive(
    _atom_st(),
    lambda children: (
        st.builds(lambda a, b: a & b, children, children)
        | st.builds(lambda a, b: a | b, children, children)
        | st.builds(lambda a: ~a, children)
    ),
    max_leaves=4,
)


@SETTINGS
@given(
    values=values_st,
    type_=st.sampled_from(FLOATS),
    rows_per_group=st.integers(1, 3),
    expr=expression_st,
)
def test_composite_expressions_match_arrow_in_memory(
    values: list[float | None], type_: pa.DataType, rows_per_group: int, expr: pc.Expression
) -> None:
    """AND/OR/NOT of atoms: what Arrow keeps of the table in memory (no statistics there)."""
    table = _table(values, type_)
    expected = _ids(table.filter(expr))
    with tempfile.TemporaryDirectory() as root:
        _write(root, table, rows_per_group)
        ds = ka.dataset(root, UUID)
        assert _ids(ds.to_table(filter=expr)) == expected
        assert ds.count_rows(filter=expr) == len(expected)


def test_filter_matching_nothing_counts_nothing(tmp_path: Path) -> None:
    """A filter the predicate form reduces to "nothing" plans no file (count_rows trusts it)."""
    _write(tmp_path, _table([1.0, 2.0, NAN], pa.float64()), 2)
    ds = ka.dataset(str(tmp_path), UUID)
    i = pc.field("i")
    for nothing in (pc.scalar(False), ~((i >= 0) | (i != 0))):
        assert ds.count_rows(filter=nothing) == 0
        assert ds.to_table(filter=nothing).num_rows == 0
        assert ds.filter(nothing).tasks == []
        assert ka.dataset(str(tmp_path), UUID, filter=nothing).count_rows() == 0
