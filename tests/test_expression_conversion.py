"""spec/predicates.from_expression: Arrow expressions into the internal DNF form."""

from __future__ import annotations

import datetime as dt
import functools
import operator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ktk_arrow.errors import InvalidPredicateError
from ktk_arrow.spec import predicates as P
from ktk_arrow.spec.predicates import (
    MAX_CLAUSES,
    Predicate,
    Term,
    filter_table,
    from_expression,
    parse_dnf,
    to_expression,
)

NAN = float("nan")
UTC = dt.timezone.utc

SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("a", pa.int64()),
        ("i32", pa.int32()),
        ("b", pa.string()),
        ("f", pa.float64()),
        ("flag", pa.bool_()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("d", pa.date32()),
        ("cat", pa.dictionary(pa.int8(), pa.string())),
    ]
)

TABLE = pa.Table.from_pydict(
    {
        "row": list(range(8)),
        "a": [1, 2, None, 4, 2, -1, 0, None],
        "i32": [1, 2, None, 4, 2, -1, 0, 3],
        "b": ["x", "y", None, "z", "x", "", "y", None],
        "f": [1.5, NAN, None, -2.0, 1.5, 0.0, NAN, 3.0],
        "flag": [True, False, None, True, False, True, None, False],
        "ts": [
            dt.datetime(2020, 1, d, tzinfo=UTC) if d else None for d in (1, 2, None, 3, 1, 4, 5, 6)
        ],
        "d": [dt.date(2020, 1, d) if d else None for d in (1, 2, None, 3, 1, 4, 5, 6)],
        "cat": ["x", "y", None, "z", "x", "", "y", None],
    },
    schema=SCHEMA,
)


def arrow_rows(expr: pc.Expression) -> set[int]:
    return set(TABLE.filter(expr).column("row").to_pylist())


def our_rows(pred: Predicate | None) -> set[int]:
    return set(filter_table(pred, TABLE).column("row").to_pylist())


def canonical(pred: Predicate | None) -> Any:
    """Clauses and terms as sets; ``is distinct from`` is spelled ``!=``."""
    if pred is None:
        return None

    def term(t: Term) -> Term:
        return Term(t.column, "!=", t.value) if t.op == "is distinct from" else t

    return frozenset(frozenset(term(t) for t in clause) for clause in pred.clauses)


def convert(expr: pc.Expression, exact: bool) -> Predicate | None:
    """from_expression, checked against Arrow's own filter on TABLE."""
    pred, got_exact = from_expression(expr, SCHEMA)
    assert got_exact is exact, (str(expr), pred)
    expected, ours = arrow_rows(expr), our_rows(pred)
    if exact:
        assert ours == expected, (str(expr), pred)
    else:
        assert ours >= expected, (str(expr), pred)
    return pred


def T(column: str, op: Any, value: Any) -> Term:
    return Term(column, op, value)


def dnf(*clauses: tuple[Term, ...]) -> Predicate:
    return Predicate(tuple(clauses))


# --------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------

a, b, f, flag = pc.field("a"), pc.field("b"), pc.field("f"), pc.field("flag")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (a == 2, dnf((T("a", "==", 2),))),
        (a < 2, dnf((T("a", "<", 2),))),
        (a <= 2, dnf((T("a", "<=", 2),))),
        (a > 2, dnf((T("a", ">", 2),))),
        (a >= 2, dnf((T("a", ">=", 2),))),
        # Arrow's != is null for null rows: exactly "not in {2, None}"
        (a != 2, dnf((T("a", "not in", frozenset({2, None})),))),
        # the field on the right: the comparison flips
        (pc.scalar(2) == a, dnf((T("a", "==", 2),))),
        (pc.scalar(2) < a, dnf((T("a", ">", 2),))),
        (pc.scalar(2) <= a, dnf((T("a", ">=", 2),))),
        (pc.scalar(2) > a, dnf((T("a", "<", 2),))),
        (pc.scalar(2) >= a, dnf((T("a", "<=", 2),))),
        (pc.equal(a, 2), dnf((T("a", "==", 2),))),
        (pc.less(pc.scalar(0), a), dnf((T("a", ">", 0),))),
        (b == "x", dnf((T("b", "==", "x"),))),
        (b >= "y", dnf((T("b", ">=", "y"),))),
        (pc.field("cat") == "x", dnf((T("cat", "==", "x"),))),
        (pc.field("cat") < "y", dnf((T("cat", "<", "y"),))),
        (a == 2.0, dnf((T("a", "==", 2),))),  # an integral float for an int column
        (f == 1, dnf((T("f", "==", 1.0),))),
        (f < 1.5, dnf((T("f", "<", 1.5),))),
        (
            pc.field("ts")
            >= pa.scalar(dt.datetime(2020, 1, 3, tzinfo=UTC), pa.timestamp("us", "UTC")),
            dnf((T("ts", ">=", dt.datetime(2020, 1, 3, tzinfo=UTC)),)),
        ),
        (pc.field("d") < pa.scalar(dt.date(2020, 1, 3)), dnf((T("d", "<", dt.date(2020, 1, 3)),))),
        # a literal Arrow cast itself, and an order-preserving cast of the field
        (pc.field("i32") == pc.scalar(4).cast(pa.int32()), dnf((T("i32", "==", 4),))),
        (pc.field("i32").cast(pa.int64()) > 1, dnf((T("i32", ">", 1),))),
        (pc.field("i32").cast(pa.float64()) > 1.5, dnf((T("i32", ">=", 2),))),
        # an int column against a float that is not an int
        (a < 1.5, dnf((T("a", "<=", 1),))),
        (a <= -0.5, dnf((T("a", "<=", -1),))),
        (a > 1.5, dnf((T("a", ">=", 2),))),
        (a >= -0.5, dnf((T("a", ">=", 0),))),
        (a == 1.5, Predicate(())),
        (a != 1.5, dnf((T("a", "!=", None),))),
        (~(a == 1.5), dnf((T("a", "!=", None),))),
        (pc.field("cat").cast(pa.string()) == "y", dnf((T("cat", "==", "y"),))),
        (flag, dnf((T("flag", "==", True),))),
        (~flag, dnf((T("flag", "==", False),))),
        (flag == False, dnf((T("flag", "==", False),))),  # noqa: E712
    ],
)
def test_exact_comparisons(expr: pc.Expression, expected: Predicate) -> None:
    assert canonical(convert(expr, exact=True)) == canonical(expected)


def test_comparison_with_null_literal_matches_nothing() -> None:
    assert convert(a == pc.scalar(None), exact=True) == Predicate(())
    assert convert(~(a == pc.scalar(None)), exact=True) == Predicate(())
    assert convert(a < pa.scalar(None, pa.int64()), exact=True) == Predicate(())


def test_nan_literal() -> None:
    # NaN equals nothing, not even NaN: exact
    assert convert(f == NAN, exact=True) == Predicate(())
    assert convert(f < NAN, exact=True) == Predicate(())
    # NaN != NaN is true in Arrow but NaN is null here: a superset
    convert(f != NAN, exact=False)
    convert(~(f == NAN), exact=False)


def test_float_columns_distinguish_nan_only_where_it_matters() -> None:
    # positive comparisons never select NaN or null: exact
    convert(f == 1.5, exact=True)
    convert(f > 0, exact=True)
    # Arrow's NOT(f > 0) selects NaN rows but not null rows: a superset here
    pred = convert(~(f > 0), exact=False)
    assert canonical(pred) == canonical(dnf((T("f", "<=", 0.0),), (T("f", "==", None),)))
    # Arrow's != selects NaN rows but not null rows
    convert(f != 1.5, exact=False)
    # but an int column has no NaN: exact
    convert(~(a > 0), exact=True)


# --------------------------------------------------------------------------
# null checks, is_in, literals
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "exact", "expected"),
    [
        (a.is_null(), True, dnf((T("a", "==", None),))),
        (a.is_valid(), True, dnf((T("a", "!=", None),))),
        (~a.is_null(), True, dnf((T("a", "!=", None),))),
        (~a.is_valid(), True, dnf((T("a", "==", None),))),
        (pc.is_null(f, nan_is_null=True), True, dnf((T("f", "==", None),))),
        (~pc.is_null(f, nan_is_null=True), True, dnf((T("f", "!=", None),))),
        (f.is_null(), False, dnf((T("f", "==", None),))),  # plus the NaN rows
        (~f.is_null(), False, None),  # null-but-not-NaN is not expressible
        (f.is_valid(), False, None),
        (~f.is_valid(), False, dnf((T("f", "==", None),))),
        (pc.Expression._call("true_unless_null", [a]), True, dnf((T("a", "!=", None),))),
        (~pc.Expression._call("true_unless_null", [a]), True, Predicate(())),
        (pc.Expression._call("true_unless_null", [f]), False, None),
        (f.is_nan(), False, dnf((T("f", "==", None),))),
        (~f.is_nan(), True, dnf((T("f", "!=", None),))),
        (a.isin([1, 4]), True, dnf((T("a", "in", frozenset({1, 4})),))),
        (~a.isin([1, 4]), True, dnf((T("a", "not in", frozenset({1, 4})),))),
        (a.isin([1, None]), True, dnf((T("a", "in", frozenset({1, None})),))),
        (~a.isin([1, None]), True, dnf((T("a", "not in", frozenset({1, None})),))),
        (
            pc.is_in(a, value_set=pa.array([1, None]), skip_nulls=True),
            True,
            dnf((T("a", "==", 1),)),
        ),
        (
            ~pc.is_in(a, value_set=pa.array([1, None]), skip_nulls=True),
            True,
            dnf((T("a", "!=", 1),)),
        ),
        (b.isin(["x", "y"]), True, dnf((T("b", "in", frozenset({"x", "y"})),))),
        (pc.field("cat").isin(["x", "q"]), True, dnf((T("cat", "in", frozenset({"x", "q"})),))),
        (a.isin([]), True, Predicate(())),
        (~a.isin([]), True, None),
        (f.isin([1.5]), True, dnf((T("f", "==", 1.5),))),
        (f.isin([1.5, NAN]), False, dnf((T("f", "in", frozenset({1.5, None})),))),
        (f.isin([1.5, None]), False, dnf((T("f", "in", frozenset({1.5, None})),))),
        (pc.scalar(True), True, None),
        (pc.scalar(False), True, Predicate(())),
        (pc.scalar(pa.scalar(None, pa.bool_())), True, Predicate(())),
        (pc.scalar(True) & (a == 1), True, dnf((T("a", "==", 1),))),
        (pc.scalar(False) | (a == 1), True, dnf((T("a", "==", 1),))),
        (~pc.scalar(False), True, None),
    ],
)
def test_null_checks_is_in_and_literals(
    expr: pc.Expression, exact: bool, expected: Predicate | None
) -> None:
    assert canonical(convert(expr, exact=exact)) == canonical(expected)


def _is_in_with_behavior(column: str, values: list[Any], behavior: int) -> pc.Expression:
    """is_in with a null_matching_behavior pyarrow's Python API cannot set."""
    buffer = pc.is_in(pc.field(column), value_set=pa.array(values)).__reduce__()[1][0]
    reader = pa.ipc.open_file(buffer)
    options = reader.get_batch(0).column(0)
    patched = pa.StructArray.from_arrays(
        [
            options.field("value_set"),
            pa.array([behavior], pa.uint32()),
            options.field("_type_name"),
        ],
        fields=list(options.type),
    )
    schema = pa.schema([pa.field("", options.type)], metadata=reader.schema.metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays([patched], schema=schema))
    return pc.Expression._deserialize(sink.getvalue())


@pytest.mark.parametrize("behavior", [0, 1, 2, 3])
@pytest.mark.parametrize("values", [[1, 4], [1, None], [None]])
@pytest.mark.parametrize("negate", [False, True])
def test_is_in_null_matching_behaviors(behavior: int, values: list[Any], negate: bool) -> None:
    expr = _is_in_with_behavior("a", values, behavior)
    assert (
        f"null_matching_behavior={['MATCH', 'SKIP', 'EMIT_NULL', 'INCONCLUSIVE'][behavior]}"
        in str(expr)
    )
    convert(~expr if negate else expr, exact=True)


# --------------------------------------------------------------------------
# AND / OR / NOT
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ((a == 1) & (b == "x"), dnf((T("a", "==", 1), T("b", "==", "x")))),
        ((a == 1) | (b == "x"), dnf((T("a", "==", 1),), (T("b", "==", "x"),))),
        ((a == 1) | (a == 2) | (a == 4), dnf((T("a", "in", frozenset({1, 2, 4})),))),
        (
            ((a == 1) | (b == "x")) & ((a == 2) | (b == "y")),
            dnf((T("a", "==", 1), T("b", "==", "y")), (T("b", "==", "x"), T("a", "==", 2))),
        ),
        # De Morgan, Kleene: NOT (a == 1 AND b == "x") is true where either side is false
        (
            ~((a == 1) & (b == "x")),
            dnf(
                (T("a", "not in", frozenset({1, None})),),
                (T("b", "not in", frozenset({"x", None})),),
            ),
        ),
        (
            ~((a == 1) | (b == "x")),
            dnf((T("a", "not in", frozenset({1, None})), T("b", "not in", frozenset({"x", None})))),
        ),
        (~~(a == 1), dnf((T("a", "==", 1),))),
        ((a > 0) & (a < 3), dnf((T("a", ">", 0), T("a", "<", 3)))),
        ((a == 1) & (a == 2), Predicate(())),  # contradiction
        ((a == 1) & a.isin([1, 2]), dnf((T("a", "==", 1), T("a", "in", frozenset({1, 2}))))),
        ((a == 1) | a.is_null(), dnf((T("a", "in", frozenset({1, None})),))),
        (pc.and_kleene(a == 1, flag), dnf((T("a", "==", 1), T("flag", "==", True)))),
        (pc.or_kleene(a == 1, flag), dnf((T("a", "==", 1),), (T("flag", "==", True),))),
    ],
)
def test_and_or_not(expr: pc.Expression, expected: Predicate) -> None:
    assert canonical(convert(expr, exact=True)) == canonical(expected)


@pytest.mark.parametrize("function", ["and", "or", "xor", "and_not", "and_not_kleene"])
@pytest.mark.parametrize("negate", [False, True])
def test_non_kleene_logic(function: str, negate: bool) -> None:
    # null propagates through "and"/"or"/"xor": a null flag makes the row null
    expr = pc.Expression._call(function, [a > 0, flag])
    convert(~expr if negate else expr, exact=True)


# --------------------------------------------------------------------------
# what cannot be converted
# --------------------------------------------------------------------------

opaque = pc.utf8_length(b) > 0  # a function of a column
column_vs_column = a == pc.field("i32")


@pytest.mark.parametrize(
    ("expr", "exact", "expected"),
    [
        (opaque, False, None),
        (~opaque, False, None),
        (column_vs_column, False, None),
        ((a == 1) & opaque, False, dnf((T("a", "==", 1),))),
        (opaque & (a == 1) & (b == "x"), False, dnf((T("a", "==", 1), T("b", "==", "x")))),
        ((a == 1) | opaque, False, None),
        (~((a == 1) | opaque), False, dnf((T("a", "not in", frozenset({1, None})),))),
        (pc.field("i32").cast(pa.int8()) == 1, False, None),  # a narrowing cast
        (pc.field("a").cast(pa.float64()) == 1, False, None),  # int64 -> double is lossy
        (a + 1 == 2, False, None),
    ],
)
def test_unconvertible_parts_become_unknown(
    expr: pc.Expression, exact: bool, expected: Predicate | None
) -> None:
    assert canonical(convert(expr, exact=exact)) == canonical(expected)


def test_if_else_in_the_form_duckdb_sends_in_lists_is_exact() -> None:
    null = pc.scalar(pa.scalar(None, pa.bool_()))
    pred, exact = from_expression(pc.if_else(a.is_valid(), a.isin([1, 2]), null), SCHEMA)
    assert exact and pred is not None
    # ("a" is not null) and ("a" in {1, 2}): every clause restricts "a" to 1 or 2
    for clause in pred.clauses:
        assert T("a", "in", frozenset({1, 2})) in clause
    pred, exact = from_expression(pc.if_else(flag, a > 0, a < 0), SCHEMA)
    assert pred is not None and exact


def test_nested_and_positional_field_refs_are_unknown() -> None:
    assert from_expression(pc.field(("s", "x")) == 1, SCHEMA) == (None, False)
    assert from_expression(pc.field(("s", 0)) == 1, SCHEMA) == (None, False)
    assert from_expression((a == 1) & (pc.field(("s", "x")) == 1), SCHEMA) == (
        dnf((T("a", "==", 1),)),
        False,
    )


def test_unknown_column_raises() -> None:
    with pytest.raises(InvalidPredicateError, match=r"unknown column 'nope'.*'a'"):
        from_expression(pc.field("nope") == 1, SCHEMA)


def test_large_dnf_is_bounded_superset() -> None:
    # AND of 10 ORs of two columns: 1024 clauses when distributed
    expr = functools.reduce(operator.and_, [(a != i) | (b != str(i)) for i in range(10)])
    pred = convert(expr, exact=False)
    assert pred is not None and len(pred.clauses) <= MAX_CLAUSES
    # OR of many ANDs beyond the bound: unknown
    expr = functools.reduce(operator.or_, [(a > i) & (b < str(i)) for i in range(MAX_CLAUSES + 10)])
    assert convert(expr, exact=False) is None


def test_unsatisfiable_products_are_dropped_before_the_bound() -> None:
    expr = functools.reduce(operator.and_, [(a == i) | (b == str(i)) for i in range(12)])
    assert convert(expr, exact=True) == Predicate(())


def test_deep_expressions_do_not_recurse() -> None:
    expr = functools.reduce(operator.or_, [a == i for i in range(3000)])
    pred = convert(expr, exact=True)
    assert pred == dnf((T("a", "in", frozenset(range(3000))),))
    expr = functools.reduce(operator.and_, [a != i for i in range(3000)])
    pred = convert(expr, exact=True)
    assert pred == dnf((T("a", "not in", frozenset([*range(3000), None])),))


# --------------------------------------------------------------------------
# round trip: DNF -> to_expression -> from_expression
# --------------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    [[("a", "==", 1)]],
    [[("a", "!=", 1)]],
    [[("a", "is distinct from", 1)]],
    [[("a", "<", 1)]],
    [[("a", "<=", 1)]],
    [[("a", ">", 1)]],
    [[("a", ">=", 1)]],
    [[("a", "in", [1, 2])]],
    [[("a", "not in", [1, 2])]],
    [[("a", "in", [1, None])]],
    [[("a", "not in", [1, None])]],
    [[("a", "in", [])]],
    [[("a", "==", None)]],
    [[("a", "!=", None)]],
    [[("b", "==", "x"), ("a", ">", 0)], [("b", "in", ["y", None])]],
    [[("b", "!=", "x")], [("a", "<", 0), ("flag", "==", True)]],
    [[("f", "==", 1.5)]],
    [[("f", "!=", 1.5)]],
    [[("f", "==", None)]],
    [[("f", "!=", None)]],
    [[("f", "not in", [1.5])]],
    [[("f", "in", [1.5, None])]],
    [[("f", "<", 1.5)], [("f", "==", None)]],
    [[("cat", "!=", "x")]],
    [[("cat", "in", ["x", "q"])]],
    [[("ts", ">", "2020-01-02T00:00:00+00:00")]],
    [[("ts", "!=", dt.datetime(2020, 1, 1, tzinfo=UTC))]],
    [[("d", "<=", dt.date(2020, 1, 2))], [("d", "==", None)]],
    [[("flag", "==", False)]],
    [[("flag", "is distinct from", True)]],
]


@pytest.mark.parametrize("predicates", ROUND_TRIPS)
def test_round_trip_is_exact_and_equivalent(predicates: Any) -> None:
    pred = parse_dnf(predicates, SCHEMA)
    expr = to_expression(pred)
    assert expr is not None
    back, exact = from_expression(expr, SCHEMA)
    assert exact is True
    assert our_rows(back) == our_rows(pred) == arrow_rows(expr)


@pytest.mark.parametrize(
    "predicates",
    [p for p in ROUND_TRIPS if p not in ([[("a", "in", [])]], [[("f", "not in", [1.5])]])],
)
def test_round_trip_gives_back_the_same_terms(predicates: Any) -> None:
    pred = parse_dnf(predicates, SCHEMA)
    back, _ = from_expression(to_expression(pred), SCHEMA)
    assert canonical(back) == canonical(pred)


def test_round_trip_of_everything_and_nothing() -> None:
    assert from_expression(to_expression(Predicate(())), SCHEMA) == (Predicate(()), True)
    assert from_expression(to_expression(Predicate(((),))), SCHEMA) == (None, True)


# --------------------------------------------------------------------------
# the decoder: Arrow's serialized tree, read from the IPC footer
# --------------------------------------------------------------------------


def test_ipc_metadata_keeps_duplicate_keys_in_order() -> None:
    expr = (a == 1) & b.isin(["x"])
    data = expr.__reduce__()[1][0].to_pybytes()
    assert P._ipc_file_metadata(data) == [
        ("call", "and_kleene"),
        ("call", "equal"),
        ("field_ref", "a"),
        ("literal", "0"),
        ("end", "equal"),
        ("call", "is_in"),
        ("field_ref", "b"),
        ("options", "1"),
        ("end", "is_in"),
        ("end", "and_kleene"),
    ]
    # pyarrow itself collapses the duplicate keys, which is why we read the footer
    assert len(pa.ipc.open_file(pa.py_buffer(data)).schema.metadata) == 5


def test_decode_builds_the_tree() -> None:
    node = P._decode(pc.is_null(a, nan_is_null=True) | ~(pc.scalar(3) < a))
    assert isinstance(node, P._Call) and node.name == "or_kleene"
    is_null, invert = node.args
    assert isinstance(is_null, P._Call) and is_null.args == (P._FieldRef("a"),)
    assert is_null.options["nan_is_null"].as_py() is True
    assert isinstance(invert, P._Call) and invert.name == "invert"
    less = invert.args[0]
    assert isinstance(less, P._Call) and less.name == "less"
    assert isinstance(less.args[0], P._Literal) and less.args[0].scalar.as_py() == 3
    assert less.args[1] == P._FieldRef("a")


def test_decode_rejects_foreign_bytes() -> None:
    with pytest.raises(P._UnsupportedExpression):
        P._ipc_file_metadata(b"not an arrow file at all")
