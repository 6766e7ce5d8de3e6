"""spec/predicates: parsing kartothek DNF, row filtering, and the three pruning functions."""

from __future__ import annotations

import datetime as dt
import decimal
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ktk_arrow.errors import InvalidArgumentError, InvalidPredicateError
from ktk_arrow.spec.predicates import (
    Predicate,
    Term,
    columns,
    evaluate,
    filter_table,
    minmax_may_match,
    parse_dnf,
    prune_by_index,
    to_expression,
)

NAN = float("nan")
UTC = dt.timezone.utc

SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("i", pa.int64()),
        ("i8", pa.int8()),
        ("u", pa.uint32()),
        ("f", pa.float64()),
        ("f32", pa.float32()),
        ("s", pa.string()),
        ("ls", pa.large_string()),
        ("b", pa.bool_()),
        ("d", pa.date32()),
        ("ts", pa.timestamp("us")),
        ("tsz", pa.timestamp("us", tz="UTC")),
        ("tsb", pa.timestamp("ns", tz="Europe/Berlin")),
        ("cat", pa.dictionary(pa.int32(), pa.string())),
        ("dec", pa.decimal128(10, 2)),
        ("bin", pa.binary()),
        ("n", pa.null()),
        ("lst", pa.list_(pa.int64())),
    ]
)


def _table() -> pa.Table:
    """Six rows; row 2 is null in every column, float columns also hold a NaN."""
    d = dt.date
    ts = dt.datetime
    data: dict[str, list[Any]] = {
        "row": [0, 1, 2, 3, 4, 5],
        "i": [1, 2, None, 4, 2, -1],
        "i8": [1, 2, None, 4, 2, -1],
        "u": [1, 2, None, 4, 2, 0],
        "f": [1.5, NAN, None, -2.0, 1.5, 0.0],
        "f32": [0.1, NAN, None, -2.0, 0.1, 0.0],
        "s": ["a", "", None, "c", "a", "b"],
        "ls": ["a", "", None, "c", "a", "b"],
        "b": [True, False, None, True, False, True],
        "d": [d(2020, 1, 1), d(2020, 1, 2), None, d(2020, 1, 3), d(2020, 1, 1), d(2019, 12, 31)],
        "ts": [
            ts(2020, 1, 1),
            ts(2020, 1, 1, 12),
            None,
            ts(2020, 1, 3),
            ts(2020, 1, 1),
            ts(2019, 12, 31),
        ],
        "dec": [
            decimal.Decimal(x) if x else None for x in ("1.50", "2.00", None, "-1", "1.5", "0")
        ],
        "bin": [b"a", b"", None, b"c", b"a", b"b"],
        "n": [None] * 6,
        "lst": [[1], [], None, [2], [1], [3]],
    }
    data["tsz"] = [None if x is None else x.replace(tzinfo=UTC) for x in data["ts"]]
    data["tsb"] = data["tsz"]
    data["cat"] = data["s"]
    arrays = [pa.array(data[f.name], f.type) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


TABLE = _table()


def rows(predicates: Any, table: pa.Table = TABLE) -> list[int]:
    """Row numbers selected by kartothek ``predicates`` (via filter_table)."""
    pred = parse_dnf(predicates, table.schema)
    return filter_table(pred, table).column("row").to_pylist()


def expr_rows(predicates: Any, table: pa.Table = TABLE) -> list[int]:
    """Row numbers selected by Arrow with to_expression()."""
    expr = to_expression(parse_dnf(predicates, table.schema))
    result = table if expr is None else table.filter(expr)
    return result.column("row").to_pylist()


# --------------------------------------------------------------------------
# validation errors: each names the value and the fix
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicates", "fragments"),
    [
        ("i == 1", ["must be a list of lists", "'i == 1'", "[[('x', '==', 1)]]"]),
        ([], ["empty list", "predicates=None"]),
        (("i", "==", 1), ["single (column, op, value) tuple", "[[('i', '==', 1)]]"]),
        ([("i", "==", 1)], ["predicates[0] is the tuple ('i', '==', 1)", "[[('i', '==', 1)]]"]),
        ([[("i", "==", 1)], []], ["predicates[1] is an empty list", "remove it"]),
        ([{"i": 1}], ["predicates[0] must be a list of (column, op, value) tuples", "dict"]),
        ([["i"]], ["predicates[0][0] must be a (column, op, value) tuple", "'i'"]),
        ([[("i", "==")]], ["predicates[0][0] must be a (column, op, value) tuple", "('i', '==')"]),
        ([[(1, "==", 1)]], ["column name must be a str", "1 (int)"]),
        ([[("i", "=", 1)]], ["unknown operator '='", "did you mean '=='", "'not in'"]),
        ([[("i", "like", 1)]], ["unknown operator 'like'", "use one of", "'is distinct from'"]),
        ([[("zz", "==", 1)]], ["unknown column 'zz'", "known columns are", "'i'", "'tsz'"]),
        ([[("i", "==", "1")]], ["value '1' (str) for column 'i' of type int64", "expected an int"]),
        ([[("i", "==", 1.5)]], ["value 1.5 (float) for column 'i' of type int64", "an int"]),
        ([[("i", "==", True)]], ["value True (bool) for column 'i'", "an int"]),
        ([[("i", "==", 2**70)]], ["fits in 64 bits"]),
        ([[("f", "<", "1.5")]], ["value '1.5' (str) for column 'f' of type double", "a float"]),
        ([[("f", "<", True)]], ["value True (bool) for column 'f'"]),
        ([[("s", "==", 1)]], ["value 1 (int) for column 's' of type string", "a str"]),
        ([[("s", "==", b"a")]], ["value b'a' (bytes) for column 's'"]),
        ([[("cat", "==", 1)]], ["value 1 (int) for column 'cat'", "a str"]),
        ([[("b", "==", 1)]], ["value 1 (int) for column 'b' of type bool", "a bool"]),
        ([[("d", "==", "yesterday")]], ["value 'yesterday' (str) for column 'd' of type date32"]),
        ([[("d", "==", dt.datetime(2020, 1, 1, 12))]], ["has a time of day", "date(2020, 1, 1)"]),
        ([[("d", "==", 20200101)]], ["value 20200101 (int) for column 'd'", "a date"]),
        (
            [[("ts", "==", pd.Timestamp("2020-01-01", tz="UTC"))]],
            ["column 'ts' of type timestamp[us]", "tz-naive", "tz_localize(None)"],
        ),
        ([[("ts", "<", 5)]], ["value 5 (int) for column 'ts'", "a datetime"]),
        ([[("ts", "<", "not a date")]], ["value 'not a date' (str)", "a datetime"]),
        ([[("dec", "==", 1.5)]], ["value 1.5 (float) for column 'dec'", "Decimal('1.5')"]),
        ([[("bin", "==", "a")]], ["value 'a' (str) for column 'bin' of type binary", "bytes"]),
        ([[("lst", "==", 1)]], ["column 'lst' of type list<item: int64>", "cannot be filtered"]),
        ([[("i", "<", None)]], ["value None for column 'i' is null", "'<'", "'=='"]),
        ([[("f", ">=", NAN)]], ["value nan for column 'f' is null", "'>='"]),
        ([[("i", "in", 1)]], ["operator 'in' needs a list", "got 1 (int)", "('i', 'in', [1])"]),
        ([[("s", "not in", "abc")]], ["operator 'not in' needs a list", "'abc' (str)"]),
        ([[("i", "==", [1, 2])]], ["operator '==' needs a single value", "use 'in'"]),
        ([[("i", "in", [1, "2"])]], ["value '2' (str) for column 'i' of type int64"]),
        ([[("i", "==", 1)], [("s", "<", 3)]], ["predicates[1][0]", "value 3 (int)"]),
    ],
)
def test_invalid_predicates_raise_with_value_and_fix(predicates: Any, fragments: list[str]) -> None:
    with pytest.raises(InvalidPredicateError) as info:
        parse_dnf(predicates, SCHEMA)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_invalid_predicate_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown column"):
        parse_dnf([[("nope", "==", 1)]], SCHEMA)
    assert issubclass(InvalidPredicateError, InvalidArgumentError)


def test_none_means_everything() -> None:
    assert parse_dnf(None, SCHEMA) is None
    assert to_expression(None) is None
    assert filter_table(None, TABLE) is TABLE
    assert evaluate(None, {"i": 1}) is True
    assert minmax_may_match(None, {"i": (5, 6, False)}) is True
    assert columns(None) == set()


def test_predicate_without_clauses_matches_nothing_and_empty_clause_everything() -> None:
    nothing = Predicate(())
    everything = Predicate(((),))
    assert filter_table(nothing, TABLE).num_rows == 0
    assert filter_table(everything, TABLE).num_rows == TABLE.num_rows
    assert evaluate(nothing, {}) is False
    assert evaluate(everything, {"i": 1}) is True
    assert minmax_may_match(nothing, {}) is False
    assert prune_by_index(nothing, "i", {1: ["a"]}, ["a", "b"]) == set()
    assert prune_by_index(everything, "i", {1: ["a"]}, ["a", "b"]) is None


def test_parse_binds_terms_in_order_and_lists_columns() -> None:
    pred = parse_dnf([[("i", "==", 1), ("s", "in", ["a", "b"])], [("f", ">", 0)]], SCHEMA)
    assert pred == Predicate(
        (
            (Term("i", "==", 1), Term("s", "in", frozenset({"a", "b"}))),
            (Term("f", ">", 0.0),),
        )
    )
    assert pred is not None
    assert pred.clauses[0][0].type == pa.int64()
    assert columns(pred) == {"i", "s", "f"}


def test_tuples_are_accepted_for_the_outer_and_inner_lists() -> None:
    pred = parse_dnf(((("i", "==", 1), ["s", "==", "a"]),), SCHEMA)
    assert pred == Predicate(((Term("i", "==", 1), Term("s", "==", "a")),))


# --------------------------------------------------------------------------
# value coercion
# --------------------------------------------------------------------------


def _value(column: str, value: Any, op: str = "==") -> Any:
    pred = parse_dnf([[(column, op, value)]], SCHEMA)
    assert pred is not None
    return pred.clauses[0][0].value


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("i", np.int64(3), 3),
        ("i", np.uint8(3), 3),
        ("u", 2**40, 2**40),
        ("i8", 300, 300),
        ("f", 1, 1.0),
        ("f", np.float32(0.5), 0.5),
        ("f", np.int16(2), 2.0),
        ("f", decimal.Decimal("0.25"), 0.25),
        ("f32", 0.1, float(np.float32(0.1))),
        ("s", np.str_("a"), "a"),
        ("cat", "a", "a"),
        ("b", np.bool_(True), True),
        ("d", dt.date(2020, 1, 2), dt.date(2020, 1, 2)),
        ("d", "2020-01-02", dt.date(2020, 1, 2)),
        ("d", dt.datetime(2020, 1, 2), dt.date(2020, 1, 2)),
        ("d", pd.Timestamp("2020-01-02"), dt.date(2020, 1, 2)),
        ("d", np.datetime64("2020-01-02"), dt.date(2020, 1, 2)),
        ("ts", dt.datetime(2020, 1, 2, 3), pd.Timestamp("2020-01-02 03:00")),
        ("ts", "2020-01-02T03:00", pd.Timestamp("2020-01-02 03:00")),
        ("ts", dt.date(2020, 1, 2), pd.Timestamp("2020-01-02")),
        (
            "ts",
            np.datetime64("2020-01-02T03:00:00.000000001"),
            pd.Timestamp("2020-01-02 03:00:00.000000001"),
        ),
        (
            "tsz",
            pd.Timestamp("2020-01-02 04:00", tz="Europe/Berlin"),
            pd.Timestamp("2020-01-02 03:00", tz="UTC"),
        ),
        ("tsz", dt.datetime(2020, 1, 2, 3), pd.Timestamp("2020-01-02 03:00", tz="UTC")),
        ("tsb", "2020-01-02 03:00", pd.Timestamp("2020-01-02 03:00", tz="UTC")),
        ("dec", decimal.Decimal("1.5"), decimal.Decimal("1.5")),
        ("dec", 2, decimal.Decimal(2)),
        ("bin", bytearray(b"x"), b"x"),
        ("n", 5, 5),
        ("i", pa.scalar(7), 7),
    ],
)
def test_values_are_coerced_to_the_column_type(column: str, value: Any, expected: Any) -> None:
    got = _value(column, value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize("null", [None, NAN, np.nan, pd.NA, pd.NaT, np.datetime64("NaT")])
@pytest.mark.parametrize("column", ["i", "f", "s", "ts", "d", "cat"])
def test_every_null_spelling_becomes_none(column: str, null: Any) -> None:
    assert _value(column, null) is None
    assert _value(column, [null, null], op="in") == frozenset({None})


@pytest.mark.parametrize(
    "values", [[1, 2, 2], (1, 2), {1, 2}, np.array([1, 2]), pd.Series([1, 2]), pa.array([1, 2])]
)
def test_in_accepts_any_list_like_and_dedupes(values: Any) -> None:
    assert _value("i", values, op="in") == frozenset({1, 2})


def test_tz_aware_values_are_converted_to_the_column_time_zone() -> None:
    value = _value("tsb", pd.Timestamp("2020-01-01 00:00", tz="UTC"))
    assert str(value.tz) == "Europe/Berlin"
    assert value == pd.Timestamp("2020-01-01 01:00", tz="Europe/Berlin")


# --------------------------------------------------------------------------
# filter_table: each operator on each common type
# --------------------------------------------------------------------------

# Row 2 is null everywhere; f/f32 row 1 is NaN, which counts as null.
CASES: list[tuple[str, str, Any, list[int]]] = [
    # int
    ("i", "==", 2, [1, 4]),
    ("i", "!=", 2, [0, 2, 3, 5]),
    ("i", "is distinct from", 2, [0, 2, 3, 5]),
    ("i", "<", 2, [0, 5]),
    ("i", "<=", 2, [0, 1, 4, 5]),
    ("i", ">", 2, [3]),
    ("i", ">=", 2, [1, 3, 4]),
    ("i", "in", [1, 4], [0, 3]),
    ("i", "not in", [1, 4], [1, 2, 4, 5]),
    ("i", "in", [1, None], [0, 2]),
    ("i", "not in", [1, None], [1, 3, 4, 5]),
    ("i", "==", None, [2]),
    ("i", "!=", None, [0, 1, 3, 4, 5]),
    ("i", "is distinct from", None, [0, 1, 3, 4, 5]),
    ("i8", "<", 300, [0, 1, 3, 4, 5]),
    ("i8", "==", 300, []),
    ("u", ">", -1, [0, 1, 3, 4, 5]),
    # float: NaN (row 1) is null
    ("f", "==", 1.5, [0, 4]),
    ("f", "==", 1, []),
    ("f", "!=", 1.5, [1, 2, 3, 5]),
    ("f", "<", 1, [3, 5]),
    ("f", ">=", -2, [0, 3, 4, 5]),
    ("f", "==", None, [1, 2]),
    ("f", "==", NAN, [1, 2]),
    ("f", "!=", None, [0, 3, 4, 5]),
    ("f", "in", [1.5, NAN], [0, 1, 2, 4]),
    ("f", "not in", [1.5], [1, 2, 3, 5]),
    ("f", "not in", [1.5, None], [3, 5]),
    ("f32", "==", 0.1, [0, 4]),
    ("f32", "<", 0.1, [3, 5]),
    # strings, also large_string and dictionary
    ("s", "==", "a", [0, 4]),
    ("s", "==", "", [1]),
    ("s", "!=", "a", [1, 2, 3, 5]),
    ("s", "<", "b", [0, 1, 4]),
    ("s", ">", "a", [3, 5]),
    ("s", "in", ["a", "c"], [0, 3, 4]),
    ("s", "not in", ["a", "c"], [1, 2, 5]),
    ("s", "==", None, [2]),
    ("ls", "<=", "b", [0, 1, 4, 5]),
    ("ls", "not in", ["a", None], [1, 3, 5]),
    ("cat", "==", "a", [0, 4]),
    ("cat", "!=", "a", [1, 2, 3, 5]),
    ("cat", "<", "b", [0, 1, 4]),
    ("cat", "in", ["b", "zz"], [5]),
    ("cat", "not in", ["b"], [0, 1, 2, 3, 4]),
    ("cat", "==", None, [2]),
    # bool
    ("b", "==", True, [0, 3, 5]),
    ("b", "==", False, [1, 4]),
    ("b", "!=", True, [1, 2, 4]),
    ("b", "is distinct from", False, [0, 2, 3, 5]),
    ("b", "in", [False, None], [1, 2, 4]),
    # date
    ("d", "==", dt.date(2020, 1, 1), [0, 4]),
    ("d", "==", "2020-01-01", [0, 4]),
    ("d", "<", "2020-01-02", [0, 4, 5]),
    ("d", ">=", dt.datetime(2020, 1, 2), [1, 3]),
    ("d", "!=", dt.date(2020, 1, 1), [1, 2, 3, 5]),
    ("d", "in", [dt.date(2020, 1, 3), None], [2, 3]),
    # naive timestamp
    ("ts", "==", dt.datetime(2020, 1, 1), [0, 4]),
    ("ts", "==", pd.Timestamp("2020-01-01 00:00:00.000000001"), []),
    ("ts", ">", pd.Timestamp("2020-01-01 00:00:00.000000001"), [1, 3]),
    ("ts", "<", dt.date(2020, 1, 1), [5]),
    ("ts", ">=", "2020-01-01 12:00", [1, 3]),
    ("ts", "!=", dt.datetime(2020, 1, 1), [1, 2, 3, 5]),
    ("ts", "in", [dt.datetime(2020, 1, 3), dt.datetime(2019, 12, 31)], [3, 5]),
    # tz-aware timestamps: aware values compare as instants, naive ones are UTC
    ("tsz", "==", dt.datetime(2020, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), [0, 4]),
    ("tsz", "==", dt.datetime(2020, 1, 1), [0, 4]),
    ("tsz", "<", "2020-01-01T00:00:00+01:00", [5]),
    ("tsb", "==", pd.Timestamp("2020-01-01", tz="UTC"), [0, 4]),
    ("tsb", "not in", [pd.Timestamp("2020-01-01 01:00", tz="Europe/Berlin")], [1, 2, 3, 5]),
    ("tsb", ">", pd.Timestamp("2020-01-01 00:00:00.000000001", tz="UTC"), [1, 3]),
    # decimal, binary, all-null column
    ("dec", "==", decimal.Decimal("1.5"), [0, 4]),
    ("dec", "<", 1, [3, 5]),
    ("dec", "in", [decimal.Decimal("2.000"), decimal.Decimal("-1")], [1, 3]),
    ("bin", "==", b"a", [0, 4]),
    ("bin", "<", b"b", [0, 1, 4]),
    ("n", "==", 1, []),
    ("n", "!=", 1, [0, 1, 2, 3, 4, 5]),
    ("n", "==", None, [0, 1, 2, 3, 4, 5]),
    ("n", "in", ["x"], []),
    # empty lists
    ("i", "in", [], []),
    ("i", "not in", [], [0, 1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize(("column", "op", "value", "expected"), CASES)
def test_operator_on_type_selects_expected_rows(
    column: str, op: str, value: Any, expected: list[int]
) -> None:
    assert rows([[(column, op, value)]]) == expected
    assert expr_rows([[(column, op, value)]]) == expected


def test_clauses_are_or_and_terms_are_and() -> None:
    assert rows([[("i", ">", 0), ("s", "==", "a")], [("b", "==", False)]]) == [0, 1, 4]
    assert rows([[("i", ">", 0)], [("i", "==", None)]]) == [0, 1, 2, 3, 4]


def test_filter_table_rejects_columns_the_table_lacks() -> None:
    pred = parse_dnf([[("i", "==", 1)]], SCHEMA)
    with pytest.raises(InvalidPredicateError, match=r"column\(s\) 'i'.*'x'"):
        filter_table(pred, pa.table({"x": [1]}))


def test_filter_table_uses_the_table_types_for_hand_built_terms() -> None:
    pred = Predicate(((Term("f32", "==", float(np.float32(0.1))),),))
    assert filter_table(pred, TABLE).column("row").to_pylist() == [0, 4]
    pred = Predicate(((Term("i", "in", frozenset({1, 4})),),))
    assert filter_table(pred, TABLE).column("row").to_pylist() == [0, 3]


def test_to_expression_spells_null_handling_out() -> None:
    pred = parse_dnf([[("i", "!=", 2)]], SCHEMA)
    expr = to_expression(pred)
    assert expr is not None
    expected = (pc.field("i") != pa.scalar(2, pa.int64())) | pc.is_null(
        pc.field("i"), nan_is_null=True
    )
    assert expr.equals(expected)
    assert to_expression(Predicate(())).equals(pc.scalar(False))
    assert to_expression(Predicate(((),))).equals(pc.scalar(True))


def test_timestamp_literals_keep_sub_unit_precision() -> None:
    pred = parse_dnf([[("ts", ">", pd.Timestamp("2020-01-01 00:00:00.000000001"))]], SCHEMA)
    expr = to_expression(pred)
    assert expr is not None
    assert "000000001" in str(expr)


# --------------------------------------------------------------------------
# plateau parity: the same rows as plateau's filter_df_from_predicates
# --------------------------------------------------------------------------

plateau_generic = pytest.importorskip("plateau.serialization._generic")


def _plateau_rows(predicates: Any, table: pa.Table = TABLE) -> list[int]:
    unsupported = [c for c in ("lst", "n", "bin", "tsb") if c in table.schema.names]
    df = table.drop_columns(unsupported).to_pandas(date_as_object=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # != is deprecated; NaN casts warn
        plateau_generic.check_predicates(predicates)
        out = plateau_generic.filter_df_from_predicates(df, predicates)
    return [int(r) for r in out["row"]]


# (ours, the spelling plateau accepts for the same question); plateau needs a
# float for an int column with nulls (pandas reads it as float64), naive values
# for tz-aware columns, and NaN (not None) for null on a float column.
PARITY: list[tuple[Any, Any]] = [
    ([[("i", "==", 2)]], [[("i", "==", 2.0)]]),
    ([[("i", "!=", 2)]], [[("i", "!=", 2.0)]]),
    ([[("i", "is distinct from", 2)]], [[("i", "is distinct from", 2.0)]]),
    ([[("i", "<", 2)]], [[("i", "<", 2.0)]]),
    ([[("i", ">=", 2)]], [[("i", ">=", 2.0)]]),
    ([[("i", "in", [1, 4])]], [[("i", "in", [1.0, 4.0])]]),
    ([[("i", "not in", [1, 4])]], [[("i", "not in", [1.0, 4.0])]]),
    ([[("i", "in", [1, None])]], [[("i", "in", [1.0, NAN])]]),
    ([[("i", "not in", [1, None])]], [[("i", "not in", [1.0, NAN])]]),
    ([[("i", "==", None)]], [[("i", "==", NAN)]]),
    ([[("i", "!=", None)]], [[("i", "!=", NAN)]]),
    ([[("f", "==", 1.5)]], None),
    ([[("f", "!=", 1.5)]], None),
    ([[("f", "<", 1.0)]], None),
    ([[("f", "==", NAN)]], None),
    ([[("f", "!=", NAN)]], None),
    ([[("f", "in", [1.5, NAN])]], None),
    ([[("f", "not in", [1.5])]], None),
    ([[("s", "==", "a")]], None),
    ([[("s", "!=", "a")]], None),
    ([[("s", "is distinct from", "a")]], None),
    ([[("s", "<", "b")]], None),
    ([[("s", "in", ["a", None])]], None),
    ([[("s", "not in", ["a"])]], None),
    ([[("s", "not in", ["a", None])]], None),
    ([[("s", "==", None)]], None),
    ([[("s", "!=", None)]], None),
    ([[("cat", "==", "a")]], None),
    ([[("cat", "!=", "a")]], None),
    ([[("cat", "<", "b")]], None),
    ([[("cat", "not in", ["b"])]], None),
    ([[("b", "==", True)]], None),
    ([[("b", "!=", True)]], None),
    ([[("d", "==", dt.date(2020, 1, 1))]], None),
    ([[("d", "==", "2020-01-01")]], None),
    ([[("d", "<", dt.date(2020, 1, 2))]], None),
    ([[("d", "!=", dt.date(2020, 1, 1))]], None),
    ([[("ts", "==", dt.datetime(2020, 1, 1))]], None),
    ([[("ts", ">", "2020-01-01 06:00")]], None),
    ([[("ts", "!=", dt.datetime(2020, 1, 1))]], None),
    (
        [[("tsz", "==", pd.Timestamp("2020-01-01", tz="UTC"))]],
        [[("tsz", "==", pd.Timestamp("2020-01-01"))]],
    ),
    ([[("tsz", ">", dt.datetime(2020, 1, 1))]], None),
    (
        [[("i", ">", 0), ("s", "==", "a")], [("b", "==", False)]],
        [[("i", ">", 0.0), ("s", "==", "a")], [("b", "==", False)]],
    ),
]


@pytest.mark.parametrize(("ours", "theirs"), PARITY)
def test_rows_match_plateau_filter_df_from_predicates(ours: Any, theirs: Any) -> None:
    assert rows(ours) == _plateau_rows(theirs if theirs is not None else ours)


def test_plateau_discrepancy_not_in_empty_list() -> None:
    # plateau selects nothing for `not in []`; the complement of `in []` is everything.
    assert _plateau_rows([[("s", "not in", [])]]) == []
    assert rows([[("s", "not in", [])]]) == [0, 1, 2, 3, 4, 5]


def test_plateau_discrepancy_nan_in_a_list_of_strings() -> None:
    # plateau runs np.asarray(["a", nan]), which makes NaN the string "nan": it then
    # matches a row holding "nan" and misses the null rows. NaN is null here.
    table = pa.table({"row": [0, 1, 2], "s": ["a", None, "nan"]})
    assert _plateau_rows([[("s", "in", ["a", NAN])]], table) == [0, 2]
    assert rows([[("s", "in", ["a", NAN])]], table) == [0, 1]
    assert rows([[("s", "in", ["a", NAN])]], table) == _plateau_rows(
        [[("s", "in", ["a", None])]], table
    )


def test_plateau_discrepancy_all_null_int_column() -> None:
    # An int column that is all null reads as float64 NaN; plateau's _handle_null_arrays
    # casts it to the value's int dtype (NaN -> int64 min), so `< 0` selects the nulls.
    table = pa.table({"row": [0, 1], "i": pa.array([None, None], pa.int64())})
    assert _plateau_rows([[("i", "<", 0)]], table) == [0, 1]
    assert rows([[("i", "<", 0)]], table) == []
    assert rows([[("i", "==", None)]], table) == _plateau_rows([[("i", "==", None)]], table)


def test_plateau_discrepancy_values_plateau_refuses() -> None:
    # plateau refuses an int for an int column that holds nulls (read as float64),
    # and None for a float column; both have one obvious meaning, which we give them.
    with pytest.raises(TypeError):
        _plateau_rows([[("i", "==", 2)]])
    with pytest.raises(TypeError):
        _plateau_rows([[("f", "==", None)]])
    assert rows([[("i", "==", 2)]]) == _plateau_rows([[("i", "==", 2.0)]])
    assert rows([[("f", "==", None)]]) == _plateau_rows([[("f", "==", NAN)]])


def test_plateau_discrepancy_tz_aware_values() -> None:
    # plateau crashes on a tz-aware value for a tz-aware column; we compare instants.
    with pytest.raises(ValueError, match="timezone"):
        _plateau_rows([[("tsz", "==", pd.Timestamp("2020-01-01", tz="UTC"))]])
    assert rows([[("tsz", "==", pd.Timestamp("2020-01-01 01:00", tz="Europe/Berlin"))]]) == [0, 4]


# --------------------------------------------------------------------------
# evaluate(): pruning by partition values
# --------------------------------------------------------------------------


def _pred(predicates: Any) -> Predicate:
    pred = parse_dnf(predicates, SCHEMA)
    assert pred is not None
    return pred


@pytest.mark.parametrize(
    ("predicates", "values", "expected"),
    [
        ([[("i", "==", 1)]], {"i": 1}, True),
        ([[("i", "==", 1)]], {"i": 2}, False),
        ([[("i", "==", 1)]], {"i": None}, False),
        ([[("i", "==", 1)]], {"i": np.int64(1)}, True),
        ([[("i", "==", 1)]], {"i": 1.0}, True),
        ([[("i", "==", 1)]], {}, True),
        ([[("i", "==", 1)]], {"s": "a"}, True),
        ([[("i", "!=", 1)]], {"i": None}, True),
        ([[("i", "!=", 1)]], {"i": 1}, False),
        ([[("i", "is distinct from", 1)]], {"i": 2}, True),
        ([[("i", "==", None)]], {"i": None}, True),
        ([[("i", "==", None)]], {"i": 0}, False),
        ([[("f", "==", None)]], {"f": NAN}, True),
        ([[("f", "!=", None)]], {"f": NAN}, False),
        ([[("i", "!=", None)]], {"i": 0}, True),
        ([[("i", "<", 1)]], {"i": None}, False),
        ([[("i", "<", 1)]], {"i": 0}, True),
        ([[("i", "<=", 1)]], {"i": 1}, True),
        ([[("i", ">", 1)]], {"i": 1}, False),
        ([[("i", ">=", 1)]], {"i": 1}, True),
        ([[("i", "in", [1, 2])]], {"i": 2}, True),
        ([[("i", "in", [1, 2])]], {"i": 3}, False),
        ([[("i", "in", [1, 2])]], {"i": None}, False),
        ([[("i", "in", [1, None])]], {"i": None}, True),
        ([[("i", "not in", [1])]], {"i": None}, True),
        ([[("i", "not in", [1, None])]], {"i": None}, False),
        ([[("i", "not in", [1])]], {"i": 1}, False),
        ([[("i", "in", [])]], {"i": 1}, False),
        ([[("i", "not in", [])]], {"i": None}, True),
        # incomparable types are "possibly true", never pruned
        ([[("i", "==", 1)]], {"i": "1"}, True),
        (
            [[("tsz", "==", dt.datetime(2020, 1, 1, tzinfo=UTC))]],
            {"tsz": dt.datetime(2020, 1, 2)},
            True,
        ),
        ([[("s", "<", "b")]], {"s": "a"}, True),
        ([[("s", "<", "b")]], {"s": "c"}, False),
        ([[("b", "==", False)]], {"b": False}, True),
        ([[("b", "==", False)]], {"b": True}, False),
        ([[("b", "==", False)]], {"b": 0}, True),  # 0 is not a bool: unknown
        ([[("d", "==", "2020-01-01")]], {"d": dt.date(2020, 1, 1)}, True),
        ([[("d", "<", "2020-01-01")]], {"d": dt.date(2020, 1, 1)}, False),
        ([[("ts", "<", "2020-01-01")]], {"ts": pd.Timestamp("2019-12-31 23:00")}, True),
        ([[("ts", "<", "2020-01-01")]], {"ts": np.datetime64("2020-01-02")}, False),
        (
            [[("tsz", "==", dt.datetime(2020, 1, 1, tzinfo=UTC))]],
            {"tsz": pd.Timestamp("2020-01-01 01:00", tz="Europe/Berlin")},
            True,
        ),
        ([[("i", "==", 1), ("s", "==", "a")]], {"i": 1, "s": "b"}, False),
        ([[("i", "==", 1), ("s", "==", "a")]], {"i": 1}, True),
        ([[("i", "==", 1)], [("s", "==", "a")]], {"i": 2, "s": "a"}, True),
        ([[("i", "==", 1)], [("s", "==", "a")]], {"i": 2, "s": "b"}, False),
        ([[("i", "==", 1)], [("s", "==", "a")]], {"i": 2}, True),
    ],
)
def test_evaluate_on_partition_values(
    predicates: Any, values: dict[str, Any], expected: bool
) -> None:
    assert evaluate(_pred(predicates), values) is expected


def test_evaluate_agrees_with_row_filtering_on_every_row() -> None:
    preds = [[[(c, op, v)]] for c, op, v, _ in CASES if c not in ("n", "tsb", "dec", "bin")]
    table_rows = TABLE.to_pylist()
    for predicates in preds:
        pred = _pred(predicates)
        selected = set(filter_table(pred, TABLE).column("row").to_pylist())
        for row in table_rows:
            assert evaluate(pred, row) is (row["row"] in selected), (predicates, row)


# --------------------------------------------------------------------------
# prune_by_index(): pruning by a secondary index
# --------------------------------------------------------------------------

# Labels p1..p3 hold values; p4 holds only nulls in "i" (not in the index);
# stale labels in the index that are not in all_labels are dropped.
INDEX = {1: ["p1", "p2"], 2: ["p2"], 3: ["p3"], 9: ["gone"]}
LABELS = ["p1", "p2", "p3", "p4"]


@pytest.mark.parametrize(
    ("predicates", "expected"),
    [
        ([[("i", "==", 2)]], {"p2"}),
        ([[("i", "==", 7)]], set()),
        ([[("i", "in", [1, 3])]], {"p1", "p2", "p3"}),
        ([[("i", "in", [])]], set()),
        ([[("i", "<", 2)]], {"p1", "p2"}),
        ([[("i", "<=", 2)]], {"p1", "p2"}),
        ([[("i", ">", 2)]], {"p3"}),
        ([[("i", ">=", 2)]], {"p2", "p3"}),
        ([[("i", ">", 1), ("i", "<", 3)]], {"p2"}),
        ([[("i", "==", 1)], [("i", "==", 3)]], {"p1", "p2", "p3"}),
        ([[("i", "==", 2), ("s", "==", "x")]], {"p2"}),
        ([[("i", "!=", None)]], {"p1", "p2", "p3"}),
        ([[("i", "not in", [1, None])]], {"p2", "p3"}),
        ([[("i", "not in", [1, 2, 3, None])]], set()),
        ([[("i", "!=", 2), ("i", "!=", None)]], {"p1", "p2", "p3"}),
        # terms that select null rows restrict nothing: any label may hold nulls
        ([[("i", "==", None)]], None),
        ([[("i", "!=", 2)]], None),
        ([[("i", "is distinct from", 2)]], None),
        ([[("i", "not in", [1])]], None),
        ([[("i", "in", [1, None])]], None),
        ([[("i", "not in", [])]], None),
        # a clause without a term on the column restricts nothing
        ([[("s", "==", "a")]], None),
        ([[("i", "==", 1)], [("s", "==", "a")]], None),
    ],
)
def test_prune_by_index(predicates: Any, expected: set[str] | None) -> None:
    assert prune_by_index(_pred(predicates), "i", INDEX, LABELS) == expected


def test_prune_by_index_keeps_null_only_labels_for_not_equal() -> None:
    # plateau evaluates `!=` on the index values only and so drops a partition
    # that holds only nulls, although its rows match `!=` row-wise: we keep it.
    table = pa.table({"row": [0, 1], "i": pa.array([None, 2], pa.int64())})
    assert rows([[("i", "!=", 2)]], table) == [0]
    assert prune_by_index(_pred([[("i", "!=", 2)]]), "i", {2: ["p2"]}, ["p1", "p2"]) is None


def test_prune_by_index_is_conservative_for_incomparable_keys() -> None:
    # keys stored as strings cannot be compared with an int: keep their labels
    index = {"1": ["p1"], "2": ["p2"]}
    assert prune_by_index(_pred([[("i", "==", 1)]]), "i", index, ["p1", "p2"]) == {"p1", "p2"}
    assert prune_by_index(_pred([[("i", "<", 1)]]), "i", index, ["p1", "p2"]) == {"p1", "p2"}


def test_prune_by_index_with_numpy_and_timestamp_keys() -> None:
    index = {np.int64(1): ["p1"], np.int64(2): ["p2"]}
    assert prune_by_index(_pred([[("i", "==", 2)]]), "i", index, ["p1", "p2"]) == {"p2"}
    ts_index = {dt.datetime(2020, 1, 1): ["p1"], pd.Timestamp("2020-01-02"): ["p2"]}
    pred = _pred([[("ts", ">=", "2020-01-02")]])
    assert prune_by_index(pred, "ts", ts_index, ["p1", "p2"]) == {"p2"}
    pred = _pred([[("ts", "==", "2020-01-01")]])
    assert prune_by_index(pred, "ts", ts_index, ["p1", "p2"]) == {"p1"}


def test_prune_by_index_ignores_nan_keys_for_value_terms() -> None:
    index = {1.5: ["p1"], NAN: ["p2"]}
    assert prune_by_index(_pred([[("f", "==", 1.5)]]), "f", index, ["p1", "p2"]) == {"p1"}
    assert prune_by_index(_pred([[("f", ">", 0)]]), "f", index, ["p1", "p2"]) == {"p1"}
    assert prune_by_index(_pred([[("f", "==", None)]]), "f", index, ["p1", "p2"]) is None


def test_prune_by_index_scales_to_large_indices() -> None:
    index = {i: [f"p{i}"] for i in range(200_000)}
    labels = list(index.values())
    flat = [label for group in labels for label in group]
    assert prune_by_index(_pred([[("i", "in", [5, 7])]]), "i", index, flat) == {"p5", "p7"}


# --------------------------------------------------------------------------
# minmax_may_match(): pruning by file statistics
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicates", "stats", "expected"),
    [
        ([[("i", "==", 3)]], {"i": (1, 5, False)}, True),
        ([[("i", "==", 1)]], {"i": (1, 5, False)}, True),
        ([[("i", "==", 5)]], {"i": (1, 5, False)}, True),
        ([[("i", "==", 6)]], {"i": (1, 5, False)}, False),
        ([[("i", "==", 0)]], {"i": (1, 5, False)}, False),
        ([[("i", "<", 1)]], {"i": (1, 5, False)}, False),
        ([[("i", "<=", 1)]], {"i": (1, 5, False)}, True),
        ([[("i", ">", 5)]], {"i": (1, 5, False)}, False),
        ([[("i", ">=", 5)]], {"i": (1, 5, False)}, True),
        ([[("i", "in", [0, 6])]], {"i": (1, 5, False)}, False),
        ([[("i", "in", [0, 5])]], {"i": (1, 5, False)}, True),
        ([[("i", "in", [])]], {"i": (1, 5, True)}, False),
        ([[("i", "in", [0, None])]], {"i": (1, 5, False)}, False),
        ([[("i", "in", [0, None])]], {"i": (1, 5, True)}, True),
        ([[("i", "!=", 3)]], {"i": (1, 5, False)}, True),
        ([[("i", "!=", 1)]], {"i": (1, 1, False)}, False),
        ([[("i", "!=", 1)]], {"i": (1, 1, True)}, True),  # null rows match !=
        ([[("i", "not in", [1])]], {"i": (1, 1, False)}, False),
        ([[("i", "not in", [1])]], {"i": (1, 1, True)}, True),
        ([[("i", "not in", [1, None])]], {"i": (1, 1, True)}, False),
        ([[("i", "not in", [1])]], {"i": (1, 2, False)}, True),
        ([[("i", "==", None)]], {"i": (1, 5, False)}, False),
        ([[("i", "==", None)]], {"i": (1, 5, True)}, True),
        ([[("i", "==", None)]], {"i": (None, None, True)}, True),
        ([[("i", "!=", None)]], {"i": (1, 5, False)}, True),
        ([[("i", "<", 0)]], {"i": (None, None, False)}, True),  # no statistics
        ([[("i", "<", 0)]], {"s": ("a", "b", False)}, True),  # no statistics for i
        ([[("i", "<", 0)], [("s", "==", "a")]], {"i": (1, 5, False), "s": ("a", "b", False)}, True),
        (
            [[("i", "<", 0)], [("s", "==", "c")]],
            {"i": (1, 5, False), "s": ("a", "b", False)},
            False,
        ),
        ([[("i", ">", 0), ("s", "==", "c")]], {"i": (1, 5, False), "s": ("a", "b", False)}, False),
        ([[("i", "==", 3)]], {"i": ("1", "5", False)}, True),  # incomparable: unknown
        # parquet statistics do not see NaN, which is null here
        ([[("f", "==", None)]], {"f": (1.0, 2.0, False)}, True),
        ([[("f", "!=", 1.0)]], {"f": (1.0, 1.0, False)}, True),
        ([[("f", "<", 1.0)]], {"f": (1.0, 2.0, False)}, False),
        ([[("f", "<", 1.0)]], {"f": (NAN, 2.0, False)}, True),
        (
            [[("tsz", ">", "2020-01-02T00:00:00+00:00")]],
            {
                "tsz": (
                    dt.datetime(2020, 1, 1, tzinfo=UTC),
                    dt.datetime(2020, 1, 1, 23, tzinfo=UTC),
                    False,
                )
            },
            False,
        ),
        (
            [[("d", ">=", "2020-01-02")]],
            {"d": (dt.date(2020, 1, 1), dt.date(2020, 1, 2), False)},
            True,
        ),
        (
            [[("d", ">", "2020-01-02")]],
            {"d": (dt.date(2020, 1, 1), dt.date(2020, 1, 2), False)},
            False,
        ),
    ],
)
def test_minmax_may_match(predicates: Any, stats: dict[str, Any], expected: bool) -> None:
    assert minmax_may_match(_pred(predicates), stats) is expected


def test_hand_built_predicates_work_without_types() -> None:
    pred = Predicate(((Term("i", "==", 2),), (Term("s", "in", frozenset({"c", None})),)))
    expr = to_expression(pred)
    assert expr is not None
    assert TABLE.filter(expr).column("row").to_pylist() == [1, 2, 3, 4]
    assert evaluate(pred, {"i": 2}) is True
