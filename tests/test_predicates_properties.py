"""Properties of spec/predicates on random small tables and random predicates.

* row filtering equals an independent pandas reference, Arrow's filter with
  to_expression(), the round trip through from_expression(), and plateau's
  own filter_df_from_predicates wherever plateau accepts the predicate;
* evaluate(), prune_by_index() and minmax_may_match() never drop data that
  has a matching row;
* from_expression() on random Arrow expressions (with NOT, AND, OR, null
  checks) selects exactly Arrow's rows when it says exact, a superset else.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktk_arrow.spec.predicates import (
    evaluate,
    filter_table,
    from_expression,
    minmax_may_match,
    parse_dnf,
    prune_by_index,
    to_expression,
)

NAN = float("nan")
SCHEMA = pa.schema(
    [("row", pa.int64()), ("i", pa.int64()), ("f", pa.float64()), ("s", pa.string())]
)
COLUMNS = ("i", "f", "s")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# data: nullable ints, floats with both NaN and null, nullable strings
CELLS: dict[str, st.SearchStrategy[Any]] = {
    "i": st.one_of(st.none(), st.integers(-3, 3)),
    "f": st.sampled_from([None, NAN, -1.5, 0.0, 1.5, 2.0]),
    "s": st.sampled_from([None, "", "a", "b", "c"]),
}
# predicate values: the data's values and a few more (int values for the float column too)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "i": st.integers(-4, 4),
    "f": st.sampled_from([-2, -1.5, 0.0, 1, 1.5, 2.0, 3.5]),
    "s": st.sampled_from(["", "a", "b", "c", "d"]),
}
NULLS = st.sampled_from([None, NAN])


@st.composite
def frames(draw: st.DrawFn) -> dict[str, list[Any]]:
    n = draw(st.integers(0, 8))
    data = {c: draw(st.lists(CELLS[c], min_size=n, max_size=n)) for c in COLUMNS}
    data["row"] = list(range(n))
    data["label"] = draw(st.lists(st.sampled_from(["p0", "p1", "p2"]), min_size=n, max_size=n))
    return data


def to_table(data: dict[str, list[Any]]) -> pa.Table:
    # from_pandas=False keeps NaN as a float value, distinct from null, as Arrow can hold it
    return pa.Table.from_arrays(
        [pa.array(data[f.name], f.type, from_pandas=False) for f in SCHEMA], schema=SCHEMA
    )


@st.composite
def terms(draw: st.DrawFn) -> tuple[str, str, Any]:
    column = draw(st.sampled_from(COLUMNS))
    op = draw(
        st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is distinct from"])
    )
    value: Any
    if op in ("in", "not in"):
        value = draw(st.lists(st.one_of(VALUES[column], NULLS), max_size=3))
    elif op in ("==", "!=", "is distinct from"):
        value = draw(st.one_of(VALUES[column], VALUES[column], NULLS))
    else:
        value = draw(VALUES[column])
    return column, op, value


DNFS = st.lists(st.lists(terms(), min_size=1, max_size=3), min_size=1, max_size=3)


# --------------------------------------------------------------------------
# an independent reference: pandas, plateau's semantics (NaN is null)
# --------------------------------------------------------------------------


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def reference_term(series: pd.Series, op: str, value: Any) -> pd.Series:
    null = series.isna()
    valid = series[~null]
    out = pd.Series(False, index=series.index)
    if op in ("in", "not in"):
        members = [v for v in value if not _is_null(v)]
        has_null = len(members) != len(value)
        hit = valid.isin(members) if members else pd.Series(False, index=valid.index)
        out[~null] = hit if op == "in" else ~hit
        out[null] = has_null if op == "in" else not has_null
        return out
    if _is_null(value):
        out[~null] = op != "=="
        out[null] = op == "=="
        return out
    compare: dict[str, Callable[[pd.Series], pd.Series]] = {
        "==": lambda s: s == value,
        "!=": lambda s: s != value,
        "is distinct from": lambda s: s != value,
        "<": lambda s: s < value,
        "<=": lambda s: s <= value,
        ">": lambda s: s > value,
        ">=": lambda s: s >= value,
    }
    out[~null] = compare[op](valid).astype(bool)
    out[null] = op in ("!=", "is distinct from")  # plateau 4.x: != keeps nulls
    return out


def reference_rows(data: dict[str, list[Any]], dnf: list[list[tuple[str, str, Any]]]) -> list[int]:
    df = pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in COLUMNS})
    mask = pd.Series(False, index=df.index)
    for conjunction in dnf:
        inner = pd.Series(True, index=df.index)
        for column, op, value in conjunction:
            inner &= reference_term(df[column], op, value)
        mask |= inner
    return [r for r, keep in zip(data["row"], mask) if keep]


def selected(table: pa.Table) -> list[int]:
    return table.column("row").to_pylist()


# --------------------------------------------------------------------------
# plateau, where it accepts the predicate
# --------------------------------------------------------------------------

plateau_generic = pytest.importorskip("plateau.serialization._generic")


def plateau_rows(table: pa.Table, dnf: list[list[tuple[str, str, Any]]]) -> list[int] | None:
    """plateau's rows, with values spelled as plateau wants them; None if it refuses."""
    df = table.to_pandas()
    if any(op == "not in" and len(v) == 0 for c in dnf for _, op, v in c):
        return None  # documented discrepancy: plateau selects nothing for `not in []`

    def spell(column: str, value: Any) -> Any:
        if df[column].dtype.kind == "f":
            return NAN if _is_null(value) else float(value)
        # plateau turns NaN in a list of strings into the string "nan"
        # (test_plateau_discrepancy_nan_in_a_list_of_strings): say None
        return None if _is_null(value) else value

    theirs = [
        [
            (c, op, [spell(c, v) for v in value] if op in ("in", "not in") else spell(c, value))
            for c, op, value in conjunction
        ]
        for conjunction in dnf
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plateau_generic.check_predicates(theirs)
            out = plateau_generic.filter_df_from_predicates(df, theirs)
    except (TypeError, ValueError):
        return None
    return [int(r) for r in out["row"]]


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------


@SETTINGS
@given(data=frames(), dnf=DNFS)
def test_row_filtering_agrees_everywhere(
    data: dict[str, list[Any]], dnf: list[list[tuple[str, str, Any]]]
) -> None:
    table = to_table(data)
    pred = parse_dnf(dnf, SCHEMA)
    expected = reference_rows(data, dnf)

    assert selected(filter_table(pred, table)) == expected
    expr = to_expression(pred)
    assert expr is not None
    assert selected(table.filter(expr)) == expected

    back, exact = from_expression(expr, SCHEMA)
    assert exact
    assert selected(filter_table(back, table)) == expected

    theirs = plateau_rows(table, dnf)
    if theirs is not None:
        assert theirs == expected


@SETTINGS
@given(data=frames(), dnf=DNFS, known=st.sets(st.sampled_from(COLUMNS)))
def test_pruning_never_drops_a_matching_row(
    data: dict[str, list[Any]], dnf: list[list[tuple[str, str, Any]]], known: set[str]
) -> None:
    pred = parse_dnf(dnf, SCHEMA)
    assert pred is not None
    matching = set(reference_rows(data, dnf))
    rows = [{c: data[c][r] for c in (*COLUMNS, "label")} for r in data["row"]]
    all_labels = ["p0", "p1", "p2", "empty"]
    needed = {rows[r]["label"] for r in matching}

    for r, row in enumerate(rows):
        # partition values of a subset of the columns: sound ...
        if r in matching:
            assert evaluate(pred, {c: row[c] for c in known})
        # ... and exact when every column is known
        assert evaluate(pred, {c: row[c] for c in COLUMNS}) is (r in matching)

    for column in COLUMNS:
        index: dict[Any, set[str]] = {}
        for row in rows:
            if not _is_null(row[column]):  # nulls (and NaN) are not indexed
                index.setdefault(row[column], set()).add(row["label"])
        kept = prune_by_index(pred, column, index, all_labels)
        if kept is not None:
            assert needed <= kept

    for label in all_labels:
        stats: dict[str, tuple[Any, Any, bool]] = {}
        mine = [row for row in rows if row["label"] == label]
        for column in COLUMNS:
            cells = [row[column] for row in mine]
            values = [v for v in cells if not _is_null(v)]
            # like parquet statistics: min/max ignore NaN, the null count ignores NaN
            stats[column] = (
                min(values) if values else None,
                max(values) if values else None,
                any(v is None for v in cells),
            )
        if label in needed:
            assert minmax_may_match(pred, stats)


# random Arrow expressions ----------------------------------------------------


@st.composite
def leaves(draw: st.DrawFn) -> pc.Expression:
    column = draw(st.sampled_from(COLUMNS))
    field = pc.field(column)
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "is_in", "is_null", "is_valid", "bool"]))
    if kind == "cmp":
        value = draw(VALUES[column] if column != "f" else st.one_of(VALUES["f"], st.just(NAN)))
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        flipped = draw(st.booleans())
        left, right = (pc.scalar(value), field) if flipped else (field, pc.scalar(value))
        return {
            "==": left == right,
            "!=": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[op]
    if kind == "is_in":
        members = draw(st.lists(st.one_of(VALUES[column], st.none()), max_size=3))
        values = pa.array(members, SCHEMA.field(column).type)
        return pc.is_in(field, value_set=values, skip_nulls=draw(st.booleans()))
    if kind == "is_null":
        return pc.is_null(field, nan_is_null=draw(st.booleans()))
    if kind == "is_valid":
        return pc.is_valid(field)
    return pc.scalar(draw(st.sampled_from([True, False])))


def _combine(children: st.SearchStrategy[pc.Expression]) -> st.SearchStrategy[pc.Expression]:
    return st.one_of(
        st.builds(lambda x: ~x, children),
        st.builds(lambda x, y: x & y, children, children),
        st.builds(lambda x, y: x | y, children, children),
        st.builds(lambda x, y: pc.Expression._call("and", [x, y]), children, children),
        st.builds(lambda x, y: pc.Expression._call("or", [x, y]), children, children),
        st.builds(lambda x, y: pc.Expression._call("xor", [x, y]), children, children),
    )


EXPRESSIONS = st.recursive(leaves(), _combine, max_leaves=8)


@SETTINGS
@given(data=frames(), expr=EXPRESSIONS)
def test_from_expression_is_exact_or_a_superset(
    data: dict[str, list[Any]], expr: pc.Expression
) -> None:
    table = to_table(data)
    pred, exact = from_expression(expr, SCHEMA)
    arrow = set(selected(table.filter(expr)))
    ours = set(selected(filter_table(pred, table)))
    if exact:
        assert ours == arrow
    else:
        assert ours >= arrow
