"""Kartothek DNF predicates and Arrow expressions in one internal form.

A :class:`Predicate` is an OR of ANDs of :class:`Term` s, exactly the shape of
kartothek's ``[[("col", op, value), ...], ...]``.  Both kartothek predicates
(:func:`parse_dnf`) and ``pyarrow.compute.Expression`` filters
(:func:`from_expression`) are converted into it once, bound to a schema; every
consumer is then a small function over that form:

* :func:`to_expression` / :func:`filter_table` -- row-level filtering by Arrow;
* :func:`evaluate` -- pruning by partition values;
* :func:`prune_by_index` -- pruning by a kartothek secondary index;
* :func:`minmax_may_match` -- pruning by per-file min/max statistics;
* :func:`selects_nan` / :func:`without_nan_terms` / :func:`expression_selects_nan`
  -- which filters Arrow's row-group pruning gets wrong (parquet statistics
  ignore NaN), and the superset it may prune with instead.

Semantics (those of plateau 4.x ``filter_df_from_predicates``; plateau reads
through pandas, where NaN and null are the same thing):

* **Null and NaN are the same value.**  A float NaN in the data *is* a null,
  and a value of ``None``, ``float("nan")``, ``pd.NA`` or ``pd.NaT`` in a
  predicate means "null".
* ``("x", "==", None)`` selects the null rows; ``("x", "!=", None)`` and
  ``("x", "is distinct from", None)`` the non-null rows.
* ``("x", "!=", v)`` and ``("x", "is distinct from", v)`` (``v`` not null)
  **select null rows too** (plateau 4.x; SQL's ``<>`` would not).
* ``<``, ``<=``, ``>``, ``>=`` never select null rows; a null value with them
  is an error.
* ``("x", "in", [...])`` selects the rows equal to an element, plus the null
  rows if the list holds a null.  ``("x", "not in", [...])`` is its exact
  complement: it selects the null rows unless the list holds a null.
* ``("x", "in", [])`` selects nothing; ``("x", "not in", [])`` selects every
  row (plateau selects nothing there -- a plateau bug we do not copy).
* ``None`` as a predicate means "everything"; ``Predicate(())`` (no clause)
  means "nothing"; a clause without terms is true for every row.

Values are coerced to the column's Arrow type once, in :func:`parse_dnf`.
Like plateau, an ISO string is accepted for date and timestamp columns, and
a tz-naive value for a tz-aware timestamp column is read as UTC.

Where plateau 4.x is wrong (each is pinned by a test in
``tests/test_predicates.py``):

* ``not in []`` selects nothing in plateau; here it selects every row.
* plateau refuses an ``int`` for an int column that holds nulls (pandas reads
  it as float64), ``None`` for a float column, and a tz-aware value for a
  tz-aware column (it crashes); each has one obvious meaning, which we give it.
* plateau turns NaN in a list of strings into the string ``"nan"``
  (``np.asarray``), so ``("s", "in", ["a", nan])`` misses the null rows and
  matches a row holding ``"nan"``.
* on an int column that is all null in a file, plateau casts NaN to the int
  minimum, so ``("i", "<", 0)`` selects the null rows.
* plateau prunes by secondary index on the indexed values only, dropping
  partitions whose rows are all null in the column even for ``!=``,
  ``not in`` or ``== None``, which select null rows; we never prune those.

This module is pure: no I/O, no imports from the rest of ktk-arrow except
:mod:`ktk_arrow.errors`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import math
import numbers
import struct
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as pdt

from ktk_arrow.errors import InvalidPredicateError

__all__ = [
    "MAX_CLAUSES",
    "Op",
    "Predicate",
    "Term",
    "columns",
    "evaluate",
    "expression_columns",
    "expression_selects_nan",
    "filter_table",
    "from_expression",
    "minmax_may_match",
    "parse_dnf",
    "prune_by_index",
    "selects_nan",
    "to_expression",
    "without_nan_terms",
]

#: The kartothek operators.  ``is distinct from`` means the same as ``!=``
#: here (both select null rows, as in plateau 4.x).
Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is distinct from"]
_OPS: tuple[str, ...] = get_args(Op)
_ORDERING = ("<", "<=", ">", ">=")
_SET_OPS = ("in", "not in")
_NOT_EQUAL = ("!=", "is distinct from")

#: Converting an Arrow expression to DNF never produces more clauses than this;
#: beyond it the conversion returns a superset (``exact=False``).
MAX_CLAUSES = 256


@dataclass(frozen=True)
class Term:
    """One condition ``column op value``.

    ``value`` is the canonical Python value for the column's type (``None``
    for null); for ``in`` / ``not in`` it is a ``frozenset`` of such values.
    ``type`` is the Arrow type of the column when known; it only chooses the
    type of Arrow literals and takes no part in equality.
    """

    column: str
    op: Op
    value: Any
    type: pa.DataType | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Predicate:
    """An OR of ANDs of terms.

    No clauses means "matches nothing"; an empty clause matches every row.
    (A predicate of ``None``, where one is accepted, means "everything".)
    """

    clauses: tuple[tuple[Term, ...], ...]


# --------------------------------------------------------------------------
# values: null detection, canonical Python values, coercion to a column type
# --------------------------------------------------------------------------


def _is_null(value: Any) -> bool:
    """Null in plateau's sense: None, NaN, pd.NA, NaT."""
    if value is None:
        return True
    if isinstance(value, float | decimal.Decimal):
        return value != value  # NaN
    if pdt.is_scalar(value):
        try:
            return bool(pd.isna(value))
        except (TypeError, ValueError):
            return False
    return False


def _is_list_like(value: Any) -> bool:
    not_lists = (str, bytes, bytearray, memoryview, dict)
    return bool(pdt.is_list_like(value)) and not isinstance(value, not_lists)


def _value_type(type_: pa.DataType) -> pa.DataType:
    return type_.value_type if pa.types.is_dictionary(type_) else type_


def _is_floating(type_: pa.DataType | None) -> bool:
    return type_ is not None and pa.types.is_floating(_value_type(type_))


def _type_name(value: Any) -> str:
    return type(value).__name__


class _CoercionError(Exception):
    """A value does not fit a column type; carries the fix for the message."""

    def __init__(self, expected: str, example: str) -> None:
        super().__init__(expected)
        self.expected = expected
        self.example = example


def _round_float(value: float, type_: pa.DataType) -> float:
    """Round to the column's float precision, as numpy does with a Python float."""
    fmt = {16: "e", 32: "f"}.get(type_.bit_width)
    if fmt is None or math.isinf(value):
        return value
    try:
        rounded: float = struct.unpack(fmt, struct.pack(fmt, value))[0]
    except (OverflowError, struct.error):
        return value
    return rounded


def _to_timestamp(value: Any) -> pd.Timestamp:
    if isinstance(value, _dt.datetime | _dt.date | str) or type(value).__name__ == "datetime64":
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise _CoercionError("a datetime", "datetime(2020, 1, 1)") from exc
        if ts is pd.NaT:
            raise _CoercionError("a datetime", "datetime(2020, 1, 1)")
        return ts
    raise _CoercionError("a datetime", "datetime(2020, 1, 1)")


def _coerce_timestamp(value: Any, type_: pa.DataType) -> pd.Timestamp:
    ts = _to_timestamp(value)
    tz = type_.tz
    if tz is None:
        if ts.tzinfo is not None:
            raise _CoercionError(
                "a tz-naive datetime (the column has no time zone)",
                "value.tz_convert('UTC').tz_localize(None)",
            )
        return ts
    if ts.tzinfo is None:
        # plateau reads a naive value for a tz-aware column as UTC.
        ts = ts.tz_localize("UTC")
    try:
        return ts.tz_convert(tz)
    except Exception:  # pragma: no cover - time zones pandas cannot name
        return ts


def _coerce_date(value: Any) -> _dt.date:
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value)
        except ValueError:
            pass
    try:
        ts = _to_timestamp(value)
    except _CoercionError:
        raise _CoercionError("a date", "date(2020, 1, 1)") from None
    if ts.tzinfo is not None or ts != ts.normalize():
        raise _CoercionError(
            "a date (the value has a time of day or a time zone)", "date(2020, 1, 1)"
        )
    result: _dt.date = ts.date()
    return result


def _coerce(value: Any, type_: pa.DataType, *, lenient: bool = False) -> Any:
    """Return ``value`` as the canonical Python value for ``type_`` (None for null).

    ``lenient`` accepts an integral float for an integer column (Arrow
    expressions such as ``field("i") == 1.0``).
    """
    if isinstance(value, pa.Scalar):
        value = _scalar_py(value)
    if _is_null(value):
        return None
    t = _value_type(type_)
    if pa.types.is_null(t):
        return value.item() if hasattr(value, "item") and pdt.is_scalar(value) else value
    if pa.types.is_boolean(t):
        if pdt.is_bool(value):
            return bool(value)
        raise _CoercionError("a bool", "True")
    if pa.types.is_integer(t):
        exact_int = pdt.is_integer(value) and not pdt.is_bool(value)
        if not (exact_int or (lenient and pdt.is_float(value) and float(value).is_integer())):
            raise _CoercionError("an int", "1")
        number = int(value)
        if not -(2**63) <= number < 2**64:
            raise _CoercionError("an int that fits in 64 bits", "1")
        return number
    if pa.types.is_floating(t):
        if (pdt.is_integer(value) or pdt.is_float(value)) and not pdt.is_bool(value):
            return _round_float(float(value), t)
        if isinstance(value, decimal.Decimal):
            return _round_float(float(value), t)
        raise _CoercionError("a float", "1.5")
    if pa.types.is_decimal(t):
        if isinstance(value, decimal.Decimal):
            return value
        if pdt.is_integer(value) and not pdt.is_bool(value):
            return decimal.Decimal(int(value))
        raise _CoercionError("a decimal.Decimal", "Decimal('1.5')")
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
        if isinstance(value, str):
            return str(value)
        raise _CoercionError("a str", "'a'")
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or _is_binary_view(t)
    ):
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise _CoercionError("bytes", "b'a'")
    if pa.types.is_date(t):
        return _coerce_date(value)
    if pa.types.is_timestamp(t):
        return _coerce_timestamp(value, t)
    if pa.types.is_time(t):
        if isinstance(value, _dt.time):
            return value
        raise _CoercionError("a datetime.time", "time(12, 0)")
    if pa.types.is_duration(t):
        if isinstance(value, _dt.timedelta) or type(value).__name__ == "timedelta64":
            return pd.Timedelta(value)
        raise _CoercionError("a timedelta", "timedelta(days=1)")
    raise _CoercionError(f"nothing: a column of type {type_} cannot be filtered on", "")


def _is_string_view(t: pa.DataType) -> bool:
    check: Callable[[pa.DataType], bool] | None = getattr(pa.types, "is_string_view", None)
    return bool(check(t)) if check is not None else False


def _is_binary_view(t: pa.DataType) -> bool:
    check: Callable[[pa.DataType], bool] | None = getattr(pa.types, "is_binary_view", None)
    return bool(check(t)) if check is not None else False


# --------------------------------------------------------------------------
# parse_dnf
# --------------------------------------------------------------------------

_OP_HINTS = {
    "=": "==",
    "eq": "==",
    "<>": "!=",
    "ne": "!=",
    "isin": "in",
    "not_in": "not in",
    "notin": "not in",
    "!in": "not in",
    "is not": "is distinct from",
    "is_distinct_from": "is distinct from",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}


def _is_literal_shape(obj: Any) -> bool:
    return isinstance(obj, tuple | list) and len(obj) == 3 and isinstance(obj[0], str)


def parse_dnf(
    predicates: Sequence[Sequence[tuple[Any, ...]]] | None, schema: pa.Schema
) -> Predicate | None:
    """Validate kartothek DNF ``predicates`` against ``schema`` and bind them.

    ``[[("x", "==", 1), ("y", "<", 2)], [("z", "in", [1, 2])]]`` means
    ``(x == 1 AND y < 2) OR z IN (1, 2)``.  ``None`` means "everything" and is
    returned as ``None``.  Values are coerced to the column's Arrow type (an
    ``int`` for a float column, an ISO string for a date or timestamp column,
    numpy scalars and ``pd.Timestamp`` are fine).

    Raises :class:`~ktk_arrow.errors.InvalidPredicateError` naming the
    offending part and the fix: malformed shape, empty lists, unknown
    operator, unknown column, value of the wrong type, null with an ordering
    operator, a scalar for ``in`` or a list for ``==``.
    """
    if predicates is None:
        return None
    example = "[[('x', '==', 1)]]"
    if not isinstance(predicates, list | tuple):
        raise InvalidPredicateError(
            f"predicates must be a list of lists of (column, op, value) tuples, e.g. {example}; "
            f"got {predicates!r} ({_type_name(predicates)})"
        )
    if len(predicates) == 0:
        raise InvalidPredicateError(
            "predicates is an empty list, which would select nothing; pass predicates=None "
            f"to select everything, or at least one conjunction, e.g. {example}"
        )
    if _is_literal_shape(predicates):
        raise InvalidPredicateError(
            f"predicates {predicates!r} is a single (column, op, value) tuple; wrap it in two "
            f"lists: [[{tuple(predicates)!r}]]"
        )
    clauses: list[tuple[Term, ...]] = []
    for i, conjunction in enumerate(predicates):
        where = f"predicates[{i}]"
        if _is_literal_shape(conjunction):
            raise InvalidPredicateError(
                f"{where} is the tuple {tuple(conjunction)!r}, not a list of tuples; predicates "
                f"are a list of lists (OR of ANDs): write [[{tuple(conjunction)!r}]]"
            )
        if not isinstance(conjunction, list | tuple):
            raise InvalidPredicateError(
                f"{where} must be a list of (column, op, value) tuples, e.g. {example}; "
                f"got {conjunction!r} ({_type_name(conjunction)}) in predicates {predicates!r}"
            )
        if len(conjunction) == 0:
            raise InvalidPredicateError(
                f"{where} is an empty list (it would select every row); remove it, or add "
                "(column, op, value) tuples to it"
            )
        for j, literal in enumerate(conjunction):
            if not isinstance(literal, tuple | list) or len(literal) != 3:
                # quote the whole conjunction: ('x', '==') alone hides what was meant
                raise InvalidPredicateError(
                    f"{where}[{j}] must be a (column, op, value) tuple such as ('x', '==', 1); "
                    f"got {literal!r} ({_type_name(literal)}) in {where} = {conjunction!r}"
                )
        clauses.append(
            tuple(_parse_literal(lit, schema, f"{where}[{j}]") for j, lit in enumerate(conjunction))
        )
    return Predicate(tuple(clauses))


def _parse_literal(literal: Any, schema: pa.Schema, where: str) -> Term:
    if not isinstance(literal, tuple | list) or len(literal) != 3:
        raise InvalidPredicateError(
            f"{where} must be a (column, op, value) tuple such as ('x', '==', 1); "
            f"got {literal!r} ({_type_name(literal)})"
        )
    column, op, value = literal
    if not isinstance(column, str):
        raise InvalidPredicateError(
            f"{where}: the column name must be a str; got {column!r} ({_type_name(column)})"
        )
    if op not in _OPS:
        hint = _OP_HINTS.get(str(op).strip().lower())
        did_you_mean = f"did you mean {hint!r}? " if hint else ""
        raise InvalidPredicateError(
            f"{where}: unknown operator {op!r} for column {column!r}; {did_you_mean}"
            f"use one of {', '.join(repr(o) for o in _OPS)}"
        )
    if column not in schema.names:
        known = ", ".join(repr(n) for n in schema.names) or "(none)"
        raise InvalidPredicateError(
            f"{where}: unknown column {column!r}; the known columns are {known}"
        )
    type_ = schema.field(column).type
    if op in _SET_OPS:
        if not _is_list_like(value):
            raise InvalidPredicateError(
                f"{where}: operator {op!r} needs a list of values for column {column!r}; got "
                f"{value!r} ({_type_name(value)}); write ({column!r}, {op!r}, [{value!r}])"
            )
        if isinstance(value, pa.Array | pa.ChunkedArray):
            value = value.to_pylist()
        items = frozenset(_coerce_or_raise(v, column, type_, where) for v in value)
        return Term(column, op, items, type_)
    if _is_list_like(value):
        raise InvalidPredicateError(
            f"{where}: operator {op!r} needs a single value for column {column!r}; got "
            f"{value!r} ({_type_name(value)}); use 'in' to match any of several values"
        )
    coerced = _coerce_or_raise(value, column, type_, where)
    if coerced is None and op in _ORDERING:
        raise InvalidPredicateError(
            f"{where}: value {value!r} for column {column!r} is null, which cannot be compared "
            f"with {op!r}; nulls work with '==', '!=', 'is distinct from' and in the list of "
            "'in' / 'not in'"
        )
    return Term(column, op, coerced, type_)


def _coerce_or_raise(value: Any, column: str, type_: pa.DataType, where: str) -> Any:
    try:
        return _coerce(value, type_)
    except _CoercionError as exc:
        example = f", e.g. ({column!r}, '==', {exc.example})" if exc.example else ""
        raise InvalidPredicateError(
            f"{where}: value {value!r} ({_type_name(value)}) for column {column!r} of type "
            f"{type_}: expected {exc.expected}{example}"
        ) from None


def columns(pred: Predicate | None) -> set[str]:
    """Names of all columns the predicate mentions (empty for ``None``)."""
    if pred is None:
        return set()
    return {term.column for clause in pred.clauses for term in clause}


# --------------------------------------------------------------------------
# term semantics on one Python value (partition values, index keys)
# --------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """A comparability class; values of different kinds are never compared."""
    if isinstance(value, bool) or pdt.is_bool(value):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, _dt.datetime):
        return "datetime-naive" if value.tzinfo is None else "datetime-aware"
    if isinstance(value, _dt.date):
        return "date"
    if isinstance(value, _dt.time):
        return "time"
    if isinstance(value, _dt.timedelta):
        return "timedelta"
    return type(value).__name__


def _normalize(value: Any) -> Any:
    """Plain Python value for comparisons; None for null."""
    if _is_null(value):
        return None
    name = type(value).__name__
    if name == "datetime64":
        return pd.Timestamp(value)
    if name == "timedelta64":
        return pd.Timedelta(value)
    if hasattr(value, "item") and pdt.is_scalar(value) and not isinstance(value, _dt.date):
        try:
            return value.item()
        except (TypeError, ValueError):  # pragma: no cover
            return value
    return value


def _compare(x: Any, v: Any) -> int | None:
    """-1/0/1 for x < / == / > v, None if they cannot be compared."""
    if _kind(x) != _kind(v):
        return None
    try:
        if x == v:
            return 0
        if x < v:
            return -1
        if x > v:
            return 1
    except TypeError:
        return None
    return None


def _matches_null(term: Term) -> bool:
    """Does ``term`` select a row whose value in ``term.column`` is null?"""
    op, value = term.op, term.value
    if op == "==":
        return value is None
    if op in _NOT_EQUAL:
        return value is not None
    if op == "in":
        return None in value
    if op == "not in":
        return None not in value
    return False


@functools.lru_cache(maxsize=1024)
def _set_kinds(values: Collection[Any]) -> frozenset[str]:
    return frozenset(_kind(v) for v in values if v is not None)


def _hash_lookup(x: Any, values: Collection[Any]) -> bool | None:
    """Is the non-null ``x`` in ``values``, by hashing?  None if only a scan can tell.

    Equal values of one kind hash alike (Python's numeric hash, pandas'
    Timestamp hash), so a miss is final when every value has ``x``'s kind.
    """
    try:
        if x in values:
            return True
        kinds = _set_kinds(values)  # type: ignore[arg-type]  # needs hashable values
    except TypeError:
        return None
    return False if kinds <= {_kind(x)} else None


def _holds(term: Term, x: Any) -> bool | None:
    """Is ``term`` true for the value ``x``?  None when unknown (incomparable)."""
    x = _normalize(x)
    if x is None:
        return _matches_null(term)
    op, value = term.op, term.value
    if op in _SET_OPS:
        found: bool | None = _hash_lookup(x, value)
        if found is not None:
            return found if op == "in" else not found
        found = False
        for item in value:
            if item is None:
                continue
            cmp = _compare(x, item)
            if cmp == 0:
                found = True
                break
            if cmp is None:
                found = None
        if found is None:
            return None
        return found if op == "in" else not found
    if value is None:
        return op in _NOT_EQUAL  # x is not null here
    cmp = _compare(x, value)
    if cmp is None:
        return None
    if op == "==":
        return cmp == 0
    if op in _NOT_EQUAL:
        return cmp != 0
    return {"<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0}[op]


def evaluate(pred: Predicate | None, values: Mapping[str, Any]) -> bool:
    """Can a row with these column ``values`` match ``pred``?

    ``values`` holds some columns' values (a file's partition values; ``None``
    or NaN is null).  Terms on columns not in ``values``, and comparisons
    between incomparable types, count as possibly true.  Returns ``False``
    only if no row with these values can match.
    """
    if pred is None:
        return True
    for clause in pred.clauses:
        if all(
            _holds(term, values[term.column]) is not False
            for term in clause
            if term.column in values
        ):
            return True
    return False


# --------------------------------------------------------------------------
# to_expression / filter_table
# --------------------------------------------------------------------------


def _timestamp_unit_needed(ts: pd.Timestamp) -> str:
    if ts.nanosecond:
        return "ns"
    if ts.microsecond % 1000:
        return "us"
    if ts.microsecond:
        return "ms"
    return "s"


_UNIT_RANK = {"s": 0, "ms": 1, "us": 2, "ns": 3}


def _literal_type(value: Any, type_: pa.DataType | None) -> pa.DataType | None:
    if type_ is None:
        return None
    t = _value_type(type_)
    if pa.types.is_null(t):
        return None
    if pa.types.is_integer(t):
        if not isinstance(value, int):
            return None
        bits = t.bit_width
        signed = pa.types.is_signed_integer(t)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
        if lo <= value < hi:
            return t
        # out of the column's range (`i8 < 300`): a wider literal; Arrow casts the column
        return pa.int64() if value < 2**63 else pa.uint64()
    if pa.types.is_timestamp(t) and isinstance(value, pd.Timestamp):
        unit = t.unit
        needed = _timestamp_unit_needed(value)
        if _UNIT_RANK[needed] > _UNIT_RANK[unit]:
            unit = needed
        return pa.timestamp(unit, t.tz)
    if pa.types.is_decimal(t) or pa.types.is_fixed_size_binary(t):
        return None  # let Arrow infer; it compares decimals of any scale
    return t


def _scalar(value: Any, type_: pa.DataType | None) -> pa.Scalar:
    literal_type = _literal_type(value, type_)
    if literal_type is not None:
        try:
            return pa.scalar(value, literal_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            pass
    return pa.scalar(value)


def _value_set(values: Iterable[Any], type_: pa.DataType | None) -> pa.Array:
    items = list(values)
    try:
        items.sort()
    except TypeError:
        items.sort(key=repr)
    literal_type = None
    if type_ is not None:
        t = _value_type(type_)
        if pa.types.is_timestamp(t):
            units = [_timestamp_unit_needed(v) for v in items if isinstance(v, pd.Timestamp)]
            unit = max([t.unit, *units], key=_UNIT_RANK.__getitem__)
            literal_type = pa.timestamp(unit, t.tz)
        elif not (pa.types.is_null(t) or pa.types.is_decimal(t)):
            literal_type = t
    if literal_type is not None:
        try:
            return pa.array(items, literal_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            pass
    return pa.array(items)


def _term_expression(term: Term, type_: pa.DataType | None) -> pc.Expression:
    op, value = term.op, term.value
    if type_ is not None and pa.types.is_null(_value_type(type_)):
        if op in _ORDERING and value is None:
            raise InvalidPredicateError(
                f"term {term.column!r} {op} None: a null cannot be compared with {op!r}"
            )
        return pc.scalar(_matches_null(term))  # every value of the column is null
    ref = pc.field(term.column)
    is_null = pc.is_null(ref, nan_is_null=True)
    if op in _SET_OPS:
        non_null = [v for v in value if v is not None]
        has_null = len(non_null) != len(value)
        if op == "in":
            expr = pc.is_in(ref, value_set=_value_set(non_null, type_)) if non_null else None
            if has_null:
                expr = is_null if expr is None else expr | is_null
            return pc.scalar(False) if expr is None else expr
        expr = ~pc.is_in(ref, value_set=_value_set(non_null, type_)) if non_null else None
        if has_null:
            expr = ~is_null if expr is None else expr & ~is_null
        return pc.scalar(True) if expr is None else expr
    if value is None:
        if op == "==":
            return is_null
        if op in _NOT_EQUAL:
            return ~is_null
        raise InvalidPredicateError(
            f"term {term.column!r} {op} None: a null cannot be compared with {op!r}"
        )
    literal = _scalar(value, type_)
    if op == "==":
        return ref == literal
    if op in _NOT_EQUAL:
        return (ref != literal) | is_null
    if op == "<":
        return ref < literal
    if op == "<=":
        return ref <= literal
    if op == ">":
        return ref > literal
    return ref >= literal


def _expression(pred: Predicate, types: Callable[[Term], pa.DataType | None]) -> pc.Expression:
    disjunction: pc.Expression | None = None
    for clause in pred.clauses:
        conjunction: pc.Expression | None = None
        for term in clause:
            expr = _term_expression(term, types(term))
            conjunction = expr if conjunction is None else conjunction & expr
        if conjunction is None:
            return pc.scalar(True)
        disjunction = conjunction if disjunction is None else disjunction | conjunction
    return pc.scalar(False) if disjunction is None else disjunction


def to_expression(pred: Predicate | None) -> pc.Expression | None:
    """The ``pyarrow.compute.Expression`` selecting the same rows as ``pred``.

    Null handling follows the module's semantics: ``!=`` adds
    ``is_null(x, nan_is_null=True)``, ``== None`` becomes that ``is_null``,
    and so on.  ``None`` gives ``None``; a predicate without clauses gives the
    literal ``false``.
    """
    if pred is None:
        return None
    return _expression(pred, lambda term: term.type)


def filter_table(pred: Predicate | None, table: pa.Table) -> pa.Table:
    """The rows of ``table`` that match ``pred`` (``None`` keeps every row).

    Same semantics as plateau's ``filter_df_from_predicates`` (see the module
    docstring), evaluated by Arrow.
    """
    if pred is None:
        return table
    missing = sorted(columns(pred) - set(table.schema.names))
    if missing:
        known = ", ".join(repr(n) for n in table.schema.names) or "(none)"
        raise InvalidPredicateError(
            f"the predicate uses column(s) {', '.join(map(repr, missing))} that the table "
            f"does not have; its columns are {known}"
        )
    return table.filter(expression_for(pred, table.schema))


def expression_for(pred: Predicate, schema: pa.Schema) -> pc.Expression:
    """:func:`to_expression` with literals typed as ``schema``'s columns (a table's own)."""
    return _expression(pred, lambda term: schema.field(term.column).type)


# --------------------------------------------------------------------------
# pruning by min/max statistics
# --------------------------------------------------------------------------


def _term_may_match_range(term: Term, lo: Any, hi: Any, nulls: bool) -> bool:
    """May some value in [lo, hi] (or a null, if ``nulls``) satisfy ``term``?"""
    if nulls and _matches_null(term):
        return True
    lo, hi = _normalize(lo), _normalize(hi)
    if lo is None or hi is None:
        return True  # no usable statistics: any non-null value is possible
    op, value = term.op, term.value

    def inside(v: Any) -> bool:
        a, b = _compare(v, lo), _compare(v, hi)
        if a is None or b is None:
            return True
        return a >= 0 and b <= 0

    if op in _SET_OPS:
        non_null = [v for v in value if v is not None]
        if op == "in":
            return any(inside(v) for v in non_null)
        if _compare(lo, hi) != 0:
            return True
        return _holds(Term(term.column, "not in", frozenset(non_null)), lo) is not False
    if value is None:
        return op in _NOT_EQUAL  # "is not null": the range holds non-null values
    if op == "==":
        return inside(value)
    if op in _NOT_EQUAL:
        return not (_compare(lo, value) == 0 and _compare(hi, value) == 0)
    if op in ("<", "<="):
        cmp = _compare(lo, value)
        return cmp is None or cmp < 0 or (op == "<=" and cmp == 0)
    cmp = _compare(hi, value)
    return cmp is None or cmp > 0 or (op == ">=" and cmp == 0)


def minmax_may_match(pred: Predicate | None, stats: Mapping[str, tuple[Any, Any, bool]]) -> bool:
    """Can a file with these statistics hold a row matching ``pred``?

    ``stats`` maps a column to ``(min, max, has_nulls)`` over the file's
    non-null values; ``min``/``max`` of ``None`` mean "not known".  Columns
    without statistics are unconstrained.  Parquet statistics ignore NaN,
    which is a null here, so a float column (float ``min``/``max``) is always
    assumed to possibly hold nulls.  Returns ``False`` only if no row matches.
    """
    if pred is None:
        return True
    for clause in pred.clauses:
        possible = True
        for term in clause:
            if term.column not in stats:
                continue
            lo, hi, nulls = stats[term.column]
            nulls = bool(nulls) or _is_floating(term.type) or isinstance(lo, float)
            nulls = nulls or isinstance(hi, float)
            if not _term_may_match_range(term, lo, hi, nulls):
                possible = False
                break
        if possible:
            return True
    return False


# --------------------------------------------------------------------------
# pruning by a secondary index
# --------------------------------------------------------------------------


def prune_by_index(
    pred: Predicate,
    column: str,
    index: Mapping[Any, Collection[str]],
    all_labels: Collection[str],
) -> set[str] | None:
    """Labels (of ``all_labels``) that may hold rows matching ``pred``, by the
    secondary ``index`` of ``column`` (value -> labels; nulls not indexed).

    Only terms on ``column`` are used.  The index cannot say which labels hold
    nulls, so a clause whose terms on ``column`` all accept a null (``== None``,
    ``!=`` a value, ``not in`` a list without null, ``in`` a list with null)
    restricts nothing.  Returns ``None`` when the predicate places no
    restriction via this column (some clause has no restricting term on it).
    """
    labels = set(all_labels)
    result: set[str] = set()
    keys: list[Any] | None = None
    for clause in pred.clauses:
        terms = [t for t in clause if t.column == column]
        if not terms or all(_matches_null(t) for t in terms):
            return None
        # Every matching row has a non-null value here, so it is in the index.
        if keys is None:
            keys = list(index)
        for key in _candidate_keys(terms, index, keys):
            if all(_holds(t, key) is not False for t in terms):
                result.update(index[key])
    return result & labels


def _candidate_keys(
    terms: list[Term], index: Mapping[Any, Collection[str]], keys: list[Any]
) -> Iterable[Any]:
    """Index keys worth checking: a dictionary lookup for ``==``/``in`` when
    the index keys are all of the value's kind, else every key."""
    kinds: set[str] | None = None
    for term in terms:
        if term.op == "==" and term.value is not None:
            wanted: list[Any] = [term.value]
        elif term.op == "in":
            wanted = [v for v in term.value if v is not None]
        else:
            continue
        if kinds is None:
            kinds = _key_kinds(keys)
        if kinds <= {_kind(v) for v in wanted}:
            return [v for v in wanted if v in index]
    return keys


def _key_kinds(keys: Iterable[Any]) -> set[str]:
    """Kinds of the non-null index keys (one _kind() per key type where possible)."""
    kinds: set[str] = set()
    by_type: dict[type, str] = {}
    for key in keys:
        kind = by_type.get(type(key))
        if kind is None:
            value = _normalize(key)
            if value is None:
                continue  # null / NaN keys never match a value
            kind = _kind(value)
            if not isinstance(key, _dt.datetime):  # naive or aware: per value
                by_type[type(key)] = kind
        kinds.add(kind)
    return kinds


# --------------------------------------------------------------------------
# from_expression: Arrow's serialized expression tree -> DNF
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _FieldRef:
    name: str | None  # None: a nested or positional reference


@dataclass(frozen=True)
class _Literal:
    scalar: Any  # pa.Scalar


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]
    options: Any  # pa.StructScalar | None


_Node = _FieldRef | _Literal | _Call


class _UnsupportedExpression(Exception):
    """The expression cannot be decoded; from_expression returns 'unknown'."""


def _u16(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from("<H", buf, pos)[0])


def _u32(buf: bytes, pos: int) -> int:
    return int(struct.unpack_from("<I", buf, pos)[0])


def _fb_field(buf: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table``."""
    vtable = table - int(struct.unpack_from("<i", buf, table)[0])
    slot = 4 + 2 * index
    if slot >= _u16(buf, vtable):
        return None
    offset = _u16(buf, vtable + slot)
    return table + offset if offset else None


def _fb_deref(buf: bytes, pos: int) -> int:
    return pos + _u32(buf, pos)


def _fb_string(buf: bytes, table: int, index: int) -> str:
    pos = _fb_field(buf, table, index)
    if pos is None:
        return ""
    start = _fb_deref(buf, pos)
    return buf[start + 4 : start + 4 + _u32(buf, start)].decode("utf-8")


def _ipc_file_metadata(buf: bytes) -> list[tuple[str, str]]:
    """The schema's custom_metadata of an Arrow IPC file, duplicates kept, in order.

    Footer (File.fbs): field 1 is the Schema; Schema (Schema.fbs): field 2 is
    ``custom_metadata: [KeyValue]``; KeyValue: ``key`` (0), ``value`` (1).
    """
    magic = b"ARROW1"
    if len(buf) < 18 or buf[:6] != magic or buf[-6:] != magic:
        raise _UnsupportedExpression("not an Arrow IPC file")
    footer_length = int(struct.unpack_from("<i", buf, len(buf) - 10)[0])
    footer = len(buf) - 10 - footer_length
    if footer_length <= 0 or footer < 8:
        raise _UnsupportedExpression("bad IPC footer")
    root = _fb_deref(buf, footer)
    schema_pos = _fb_field(buf, root, 1)
    if schema_pos is None:
        raise _UnsupportedExpression("IPC footer without schema")
    schema = _fb_deref(buf, schema_pos)
    vector_pos = _fb_field(buf, schema, 2)
    if vector_pos is None:
        return []
    vector = _fb_deref(buf, vector_pos)
    pairs = []
    for i in range(_u32(buf, vector)):
        key_value = _fb_deref(buf, vector + 4 + 4 * i)
        pairs.append((_fb_string(buf, key_value, 0), _fb_string(buf, key_value, 1)))
    return pairs


def _decode(expr: pc.Expression) -> _Node:
    """Arrow's expression tree, read from its serialization (``__reduce__``).

    Arrow writes the tree in pre-order as key/value pairs ("call", "field_ref",
    "nested_field_ref", "literal", "options", "end") in the schema metadata of
    a one-row IPC file whose columns hold the literals and options.
    """
    try:
        _, (buffer,) = expr.__reduce__()
        data = buffer.to_pybytes()
        batch = pa.ipc.open_file(pa.py_buffer(data)).get_batch(0)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _UnsupportedExpression(str(exc)) from exc
    pairs = _ipc_file_metadata(data)

    def column(index: str) -> Any:
        return batch.column(int(index))[0]

    position = 0

    def next_pair() -> tuple[str, str]:
        nonlocal position
        if position >= len(pairs):
            raise _UnsupportedExpression("unterminated serialized expression")
        pair = pairs[position]
        position += 1
        return pair

    # An explicit stack of open calls instead of recursion: a reduce() over
    # many ORs nests deeply.
    stack: list[tuple[str, list[_Node]]] = []
    while True:
        key, value = next_pair()
        node: _Node
        if key == "call":
            stack.append((value, []))
            continue
        if key == "literal":
            node = _Literal(column(value))
        elif key == "field_ref":
            node = _FieldRef(value)
        elif key == "nested_field_ref":
            # followed by its parts; one opaque (unsupported) reference
            for _ in range(int(value)):
                if next_pair()[0] != "field_ref":
                    raise _UnsupportedExpression("doubly nested field ref")
            node = _FieldRef(None)
        elif key in ("options", "end") and stack:
            name, args = stack.pop()
            options = None
            if key == "options":
                options = column(value)
                key, value = next_pair()
            if key != "end":
                raise _UnsupportedExpression("call options not followed by end")
            node = _Call(name, tuple(args), options)
        else:
            raise _UnsupportedExpression(f"unexpected serialized key {key!r}")
        if not stack:
            if position != len(pairs):
                raise _UnsupportedExpression("trailing serialized data")
            return node
        stack[-1][1].append(node)


def _options_field(options: Any, name: str) -> Any:
    """Field ``name`` of a serialized FunctionOptions struct scalar, or None."""
    if options is None or not options.is_valid:
        return None
    try:
        return options[name]
    except (KeyError, IndexError):
        return None


# A DNF during conversion: a list of clauses, each a tuple of distinct terms.
_Dnf = list[tuple[Term, ...]]


def _everything() -> _Dnf:
    return [()]


def _nothing() -> _Dnf:
    return []


@dataclass(frozen=True)
class _Error:
    """Where a converted side may select rows that Arrow's filter does not.

    Exact when empty; ``null_rows_of``: only rows where one of these columns
    is null or NaN (NaN is a null here, not in Arrow); ``anywhere``: no bound.
    """

    anywhere: bool = False
    null_rows_of: frozenset[str] = frozenset()

    @property
    def exact(self) -> bool:
        return not self.anywhere and not self.null_rows_of

    def __or__(self, other: _Error) -> _Error:
        if self.anywhere or other.anywhere:
            return _ANYWHERE
        return _Error(False, self.null_rows_of | other.null_rows_of)


_EXACT = _Error()
_ANYWHERE = _Error(anywhere=True)


@dataclass(frozen=True)
class _Side:
    """The rows one side of a condition selects: exact, or a superset by ``error``."""

    dnf: _Dnf
    error: _Error = _EXACT


class _Bounds:
    """Rows where an expression is true (``t``) and where it is false (``f``).

    Each side is exact or a superset.  Under Kleene logic NOT swaps the sides
    and AND/OR combine them monotonically, so supersets stay supersets all
    the way up.  Sides are computed lazily: the "false" side of a large OR is
    only ever needed under a NOT.
    """

    __slots__ = ("_f", "_t")

    def __init__(self, t: _Side | Callable[[], _Side], f: _Side | Callable[[], _Side]) -> None:
        self._t = t
        self._f = f

    def t(self) -> _Side:
        if callable(self._t):
            self._t = self._t()
        return self._t

    def f(self) -> _Side:
        if callable(self._f):
            self._f = self._f()
        return self._f

    def negate(self) -> _Bounds:
        return _Bounds(self.f, self.t)


def _exact(t: _Dnf, f: _Dnf) -> _Bounds:
    return _Bounds(_Side(t), _Side(f))


_UNKNOWN = _Bounds(_Side([()], _ANYWHERE), _Side([()], _ANYWHERE))


def _selects_all_nulls(dnf: _Dnf, column: str) -> bool:
    """Does some clause select every row where ``column`` is null?"""
    return any(
        clause and all(t.column == column and _matches_null(t) for t in clause) for clause in dnf
    )


def _rejects_all_nulls(dnf: _Dnf, column: str) -> bool:
    """Does every clause reject the rows where ``column`` is null?"""
    return all(any(t.column == column and not _matches_null(t) for t in c) for c in dnf)


def _combine(sides: Sequence[_Side], *, conjunction: bool) -> _Side:
    """AND / OR of sides, tracking where the result may be a superset.

    A side that is a superset only on the null rows of ``c`` stays exact
    when an exact sibling settles those rows: under AND one that rejects
    every null of ``c``, under OR one that selects every null of ``c``.
    """
    dnf, ok = (_and_all if conjunction else _or_all)([side.dnf for side in sides])
    if not ok:
        return _Side(dnf, _ANYWHERE)
    settles = _rejects_all_nulls if conjunction else _selects_all_nulls
    error = _EXACT
    for i, side in enumerate(sides):
        if side.error.anywhere:
            return _Side(dnf, _ANYWHERE)
        unsettled = frozenset(
            column
            for column in side.error.null_rows_of
            if not any(
                j != i and other.error.exact and settles(other.dnf, column)
                for j, other in enumerate(sides)
            )
        )
        error = error | _Error(False, unsettled)
    return _Side(dnf, error)


def _merge_clause(a: tuple[Term, ...], b: tuple[Term, ...]) -> tuple[Term, ...]:
    seen = set(a)
    extra = []
    for term in b:
        if term not in seen:
            seen.add(term)
            extra.append(term)
    return a + tuple(extra)


def _and(a: _Dnf, b: _Dnf) -> tuple[_Dnf, bool]:
    """``a AND b`` distributed; just ``a`` (a superset, flag False) when too big."""
    if len(a) * len(b) > MAX_CLAUSES:
        return a, False
    return _simplify([_merge_clause(x, y) for x in a for y in b]), True


def _and_all(parts: Sequence[_Dnf]) -> tuple[_Dnf, bool]:
    result, exact = _everything(), True
    for part in sorted(parts, key=len):
        result, ok = _and(result, part)
        exact = exact and ok
    return result, exact


def _or_all(parts: Sequence[_Dnf]) -> tuple[_Dnf, bool]:
    merged = _simplify([clause for part in parts for clause in part])
    if len(merged) > MAX_CLAUSES:
        return _everything(), False
    return merged, True


def _implies(a: Term, b: Term) -> bool:
    """Does ``a`` imply ``b`` for every row?  False when unsure."""
    if a == b:
        return True
    if a.column != b.column:
        return False
    if a.op == "==":
        return _holds(b, a.value) is True
    if a.op == "in":
        return all(_holds(b, v) is True for v in a.value)
    return False


def _merge_in_clause(clause: tuple[Term, ...]) -> tuple[Term, ...]:
    """Two or more of ``x != v``, ``x not in S`` on one column -> one ``x not in``.

    Exact here: ``x != v`` is ``x not in {v}`` (both select nulls unless
    ``v`` is null).
    """
    excluded: dict[str, set[Any]] = {}
    count: dict[str, int] = {}
    for term in clause:
        if term.op in _NOT_EQUAL or term.op == "not in":
            values = term.value if term.op == "not in" else {term.value}
            excluded.setdefault(term.column, set()).update(values)
            count[term.column] = count.get(term.column, 0) + 1
    if all(n < 2 for n in count.values()):
        return clause
    out: list[Term] = []
    for term in clause:
        if count.get(term.column, 0) < 2 or not (term.op in _NOT_EQUAL or term.op == "not in"):
            out.append(term)
        elif term.column in excluded:
            out.append(Term(term.column, "not in", frozenset(excluded.pop(term.column)), term.type))
    return tuple(out)


def _as_set(term: Term) -> frozenset[Any] | None:
    if term.op == "==":
        return frozenset([term.value])
    if term.op == "in":
        return frozenset(term.value)
    return None


def _relaxed(term: Term) -> Term | None:
    """``term`` OR ``column IS NULL`` as one term; None for "always true"."""
    if term.op == "!=" and term.value is None:
        return None
    if term.op == "not in" and None in term.value:
        rest = term.value - {None}
        return Term(term.column, "not in", rest, term.type) if rest else None
    return term


def _complete_nulls(clauses: list[tuple[Term, ...]]) -> bool:
    """``(A and B and t) or (A and x == None)`` -> ``(A and B and (t or x == None)) or ...``

    for a term ``t`` on ``x`` that rejects nulls only by an explicit
    ``!= None`` / ``not in (..., None)``: the rows that relaxing ``t`` adds
    are selected by the other clause anyway.
    """
    changed = False
    sets = [frozenset(c) for c in clauses]
    for j, other in enumerate(clauses):
        for null_term in other:
            if null_term.op != "==" or null_term.value is not None:
                continue
            rest = sets[j] - {null_term}
            for i, clause in enumerate(clauses):
                if i == j or not rest <= sets[i]:
                    continue
                new: list[Term] = []
                for term in clause:
                    relaxed = _relaxed(term) if term.column == null_term.column else term
                    if relaxed is not None:
                        new.append(relaxed)
                if tuple(new) != clause:
                    clauses[i] = tuple(new)
                    sets[i] = frozenset(new)
                    changed = True
    return changed


def _normalize_term(term: Term) -> Term | None:
    """Canonical spelling; None for a term that is always true (``not in ()``)."""
    if term.op in _SET_OPS and len(term.value) <= 1:
        if term.op == "not in" and not term.value:
            return None
        if term.value:
            (value,) = term.value
            return Term(term.column, "==" if term.op == "in" else "!=", value, term.type)
    return term


def _normalize_clause(clause: tuple[Term, ...]) -> tuple[Term, ...]:
    merged = _merge_in_clause(clause)
    return tuple(t for t in (_normalize_term(term) for term in merged) if t is not None)


def _merge_equalities(clauses: list[tuple[Term, ...]]) -> bool:
    """``(A and x == v) or (A and x in S)`` -> ``A and x in S + {v}``; one pass."""
    changed = False
    slots: dict[tuple[frozenset[Term], str], int] = {}
    out: list[tuple[Term, ...]] = []
    for clause in clauses:
        merged = False
        for term in clause:
            values = _as_set(term)
            if values is None:
                continue
            key = (frozenset(clause) - {term}, term.column)
            if key not in slots:
                continue
            target = out[slots[key]]
            for k, mine in enumerate(target):
                theirs = _as_set(mine)
                if (
                    mine.column == term.column
                    and theirs is not None
                    and frozenset(target) - {mine} == key[0]
                ):
                    joined = Term(term.column, "in", theirs | values, mine.type or term.type)
                    out[slots[key]] = (*target[:k], joined, *target[k + 1 :])
                    merged = changed = True
                    break
            if merged:
                break
        if merged:
            continue
        out.append(clause)
        for term in clause:
            if _as_set(term) is not None:
                slots.setdefault((frozenset(clause) - {term}, term.column), len(out) - 1)
    clauses[:] = out
    return changed


def _drop_implying(clauses: list[tuple[Term, ...]]) -> bool:
    """Drop duplicates and every clause that implies another one (absorption)."""
    sets = [frozenset(c) for c in clauses]
    cols = [frozenset(t.column for t in c) for c in clauses]
    keep = [True] * len(clauses)
    for i in range(len(clauses)):
        for j in range(len(clauses)):
            if i == j or not keep[j] or not cols[j] <= cols[i]:
                continue
            if sets[i] == sets[j]:
                if j < i:
                    keep[i] = False
                    break
                continue
            if sets[j] <= sets[i] or all(any(_implies(x, y) for x in sets[i]) for y in sets[j]):
                keep[i] = False
                break
    if all(keep):
        return False
    clauses[:] = [c for c, k in zip(clauses, keep) if k]
    return True


def _contradictory(clause: tuple[Term, ...]) -> bool:
    """Is the clause unsatisfiable because of its ``==`` / ``in`` terms?"""
    points: dict[str, frozenset[Any]] = {}
    for term in clause:
        values = _as_set(term)
        if values is not None:
            points[term.column] = points.get(term.column, values) & values
    for column, candidates in points.items():
        others = [t for t in clause if t.column == column and _as_set(t) is None]
        if not any(all(_holds(t, v) is not False for t in others) for v in candidates):
            return True
    return False


_QUADRATIC_LIMIT = 64


def _simplify(dnf: _Dnf) -> _Dnf:
    """Exact rewrites that keep a DNF small and recognisable."""
    if any(len(c) == 0 for c in dnf):
        return _everything()
    clauses = [c for c in dnf if not _contradictory(c)]
    for _ in range(8):
        normalized = [_normalize_clause(c) for c in clauses]
        changed = normalized != clauses
        clauses = normalized
        changed = _merge_equalities(clauses) or changed  # linear: always affordable
        if len(clauses) <= _QUADRATIC_LIMIT:  # the other rewrites are quadratic
            changed = _complete_nulls(clauses) or changed
            changed = _drop_implying(clauses) or changed
        if any(len(c) == 0 for c in clauses):
            return _everything()
        if not changed:
            break
    return clauses


_FLIP = {
    "equal": "equal",
    "not_equal": "not_equal",
    "less": "greater",
    "less_equal": "greater_equal",
    "greater": "less",
    "greater_equal": "less_equal",
}
_CMP_OP: dict[str, Op] = {
    "equal": "==",
    "not_equal": "!=",
    "less": "<",
    "less_equal": "<=",
    "greater": ">",
    "greater_equal": ">=",
}
_OPPOSITE: dict[str, Op] = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


class _Converter:
    """Visits a decoded Arrow expression bound to ``schema``, producing _Bounds."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    # -- operands ----------------------------------------------------------
    def column(self, node: _Node) -> str | None:
        """The column a field reference (or an order-preserving cast of one) names."""
        if isinstance(node, _FieldRef):
            if node.name is None:
                return None
            if node.name not in self.schema.names:
                known = ", ".join(repr(n) for n in self.schema.names) or "(none)"
                raise InvalidPredicateError(
                    f"the filter expression uses unknown column {node.name!r}; the known "
                    f"columns are {known}"
                )
            return node.name
        if isinstance(node, _Call) and node.name == "cast" and len(node.args) == 1:
            name = self.column(node.args[0])
            target = _options_field(node.options, "to_type")
            if (
                name is not None
                and target is not None
                and _cast_preserves_order(self.schema.field(name).type, target.type)
            ):
                return name
        return None

    def literal(self, node: _Node) -> Any:
        """The pa.Scalar of a literal (or of a cast literal), else None."""
        if isinstance(node, _Literal):
            return node.scalar
        if isinstance(node, _Call) and node.name == "cast" and len(node.args) == 1:
            inner = self.literal(node.args[0])
            target = _options_field(node.options, "to_type")
            if inner is not None and target is not None:
                try:
                    return pc.cast(inner, target.type)
                except (pa.ArrowException, ValueError, TypeError):
                    return None
        return None

    def term(self, name: str, op: Op, value: Any) -> Term:
        return Term(name, op, value, self.schema.field(name).type)

    def coerce(self, name: str, scalar: Any) -> Any:
        """Canonical value of ``scalar`` for column ``name``; raises _CoercionError."""
        return _coerce(_scalar_py(scalar), self.schema.field(name).type, lenient=True)

    # -- the visitor ---------------------------------------------------------
    def visit(self, node: _Node) -> _Bounds:
        if isinstance(node, _Literal):
            return self.visit_literal(node.scalar)
        if isinstance(node, _FieldRef):
            name = self.column(node)
            if name is None or not pa.types.is_boolean(_value_type(self.schema.field(name).type)):
                return _UNKNOWN
            return _exact([(self.term(name, "==", True),)], [(self.term(name, "==", False),)])
        function, args = node.name, node.args
        if function in ("and_kleene", "or_kleene"):
            parts = [self.visit(arg) for arg in _flatten(node, function)]
            return _kleene(parts, conjunction=function == "and_kleene")
        if function in ("and", "and_", "or", "or_", "xor") and len(args) == 2:
            return _strict(function.rstrip("_"), self.visit(args[0]), self.visit(args[1]))
        if function in ("and_not", "and_not_kleene") and len(args) == 2:
            left, right = self.visit(args[0]), self.visit(args[1]).negate()
            if function == "and_not_kleene":
                return _kleene([left, right], conjunction=True)
            return _strict("and", left, right)
        if function == "invert" and len(args) == 1:
            return self.visit(args[0]).negate()
        if function in _CMP_OP and len(args) == 2:
            return self.visit_comparison(function, args[0], args[1])
        if function in ("is_null", "is_valid", "true_unless_null", "is_nan") and len(args) == 1:
            return self.visit_null_check(node)
        if function == "is_in" and len(args) == 1:
            return self.visit_is_in(node)
        if function == "if_else" and len(args) == 3:
            return _if_else(*(self.visit(arg) for arg in args))
        return _UNKNOWN

    def visit_literal(self, scalar: Any) -> _Bounds:
        if not (pa.types.is_boolean(scalar.type) or pa.types.is_null(scalar.type)):
            return _UNKNOWN
        if not scalar.is_valid:
            return _exact(_nothing(), _nothing())
        if scalar.as_py():
            return _exact(_everything(), _nothing())
        return _exact(_nothing(), _everything())

    def visit_comparison(self, function: str, left: _Node, right: _Node) -> _Bounds:
        name, scalar = self.column(left), self.literal(right)
        if name is None or scalar is None:
            name, scalar = self.column(right), self.literal(left)
            function = _FLIP[function]
        if name is None or scalar is None:
            return _UNKNOWN
        op = _CMP_OP[function]
        if not scalar.is_valid:  # a comparison with null is null: never true nor false
            return _exact(_nothing(), _nothing())
        not_null = self.term(name, "!=", None)
        py = _scalar_py(scalar)
        if isinstance(py, float) and math.isnan(py):
            # NaN is unequal to everything, NaN included, and unordered
            valid: _Dnf = [(not_null,)]
            if op == "!=":
                return self.leaf(name, valid, [], null_in="N", nan_in="T")
            return self.leaf(name, [], valid, null_in="N", nan_in="F")
        if (
            isinstance(py, float)
            and math.isfinite(py)
            and not py.is_integer()
            and pa.types.is_integer(_value_type(self.schema.field(name).type))
        ):
            # an int column against 1.5: a < 1.5 is a <= 1, a > 1.5 is a >= 2
            if op == "==":
                return self.leaf(name, [], [(not_null,)], null_in="N", nan_in="F")
            if op == "!=":
                return self.leaf(name, [(not_null,)], [], null_in="N", nan_in="T")
            op, py = ("<=", math.floor(py)) if op in ("<", "<=") else (">=", math.ceil(py))
            scalar = pa.scalar(py)
        try:
            value = self.coerce(name, scalar)
        except _CoercionError:
            return _UNKNOWN
        term = self.term(name, op, value)
        if op == "==":
            unequal: _Dnf = [(self.term(name, "!=", value), not_null)]
            return self.leaf(name, [(term,)], unequal, null_in="N", nan_in="F")
        if op == "!=":
            equal: _Dnf = [(self.term(name, "==", value),)]
            return self.leaf(name, [(term, not_null)], equal, null_in="N", nan_in="T")
        opposite: _Dnf = [(self.term(name, _OPPOSITE[op], value),)]
        return self.leaf(name, [(term,)], opposite, null_in="N", nan_in="F")

    def visit_null_check(self, node: _Call) -> _Bounds:
        name = self.column(node.args[0])
        if name is None:
            return _UNKNOWN
        is_null: _Dnf = [(self.term(name, "==", None),)]
        not_null: _Dnf = [(self.term(name, "!=", None),)]
        if node.name == "is_null":
            nan_is_null = _options_field(node.options, "nan_is_null")
            nan_in = "T" if nan_is_null is not None and nan_is_null.as_py() else "F"
            return self.leaf(name, is_null, not_null, null_in="T", nan_in=nan_in)
        if node.name == "is_valid":
            return self.leaf(name, not_null, is_null, null_in="F", nan_in="T")
        if node.name == "true_unless_null":
            return self.leaf(name, not_null, [], null_in="N", nan_in="T")
        # is_nan: false for every other value, null for null
        return self.leaf(name, [], not_null, null_in="N", nan_in="T")

    def visit_is_in(self, node: _Call) -> _Bounds:
        name = self.column(node.args[0])
        value_set = _options_field(node.options, "value_set")
        if name is None or value_set is None or not value_set.is_valid:
            return _UNKNOWN
        behavior = _options_field(node.options, "null_matching_behavior")
        if behavior is not None and behavior.is_valid:
            matching = int(behavior.as_py())  # 0 MATCH, 1 SKIP, 2 EMIT_NULL, 3 INCONCLUSIVE
        else:
            skip = _options_field(node.options, "skip_nulls")
            matching = 1 if skip is not None and skip.as_py() else 0
        values: set[Any] = set()
        has_null = has_nan = False
        for item in value_set.values:
            py = _scalar_py(item) if item.is_valid else None
            if py is None:
                has_null = True
            elif isinstance(py, float) and math.isnan(py):
                has_nan = True
            else:
                try:
                    values.add(self.coerce(name, item))
                except _CoercionError:
                    return _UNKNOWN
        with_null = frozenset(values | {None})
        in_set: _Dnf = [(self.term(name, "in", frozenset(values)),)]
        not_in_set: _Dnf = [(self.term(name, "not in", frozenset(values)),)]  # nulls too
        not_in_valid: _Dnf = [(self.term(name, "not in", with_null),)]
        nan_in = "T" if has_nan else "F"
        if matching == 0 and has_null:
            return self.leaf(name, [(self.term(name, "in", with_null),)], not_in_valid, "T", nan_in)
        if matching in (0, 1):
            return self.leaf(name, in_set, not_in_set, "F", nan_in)
        if matching == 3 and has_null:  # a miss is null when the set holds null
            return self.leaf(name, in_set, [], "N", "T" if has_nan else "N")
        return self.leaf(name, in_set, not_in_valid, "N", nan_in)

    def leaf(self, name: str, true: _Dnf, false: _Dnf, null_in: str, nan_in: str) -> _Bounds:
        """Bounds of a condition on one column.

        ``true``/``false`` are exact for non-null values and for nulls, whose
        outcome is ``null_in`` ("T", "F", or "N" for null).  Here NaN is a
        null, so the formulas put NaN rows where null rows go; Arrow puts
        them in ``nan_in``.  Where the two differ (float columns only) the
        affected sides become supersets.
        """
        t, f = _simplify(true), _simplify(false)
        if nan_in == null_in or not _is_floating(self.schema.field(name).type):
            return _exact(t, f)
        t_error = f_error = _EXACT
        nan_rows: _Dnf = [(self.term(name, "==", None),)]
        on_nulls = _Error(False, frozenset([name]))
        if nan_in == "T":
            t, t_error = _or_all([t, nan_rows])[0], on_nulls
        elif nan_in == "F":
            f, f_error = _or_all([f, nan_rows])[0], on_nulls
        if null_in == "T":
            t_error = on_nulls  # the formula selects NaN rows as well
        elif null_in == "F":
            f_error = on_nulls
        return _Bounds(_Side(t, t_error), _Side(f, f_error))


def _scalar_py(scalar: Any) -> Any:
    """Python value of a pa.Scalar; timestamps as pd.Timestamp (keeps nanoseconds)."""
    if not scalar.is_valid:
        return None
    if pa.types.is_timestamp(scalar.type):
        ts = pd.Timestamp(scalar.value, unit=scalar.type.unit)
        return ts.tz_localize("UTC").tz_convert(scalar.type.tz) if scalar.type.tz else ts
    return scalar.as_py()


def _cast_preserves_order(source: pa.DataType, target: pa.DataType) -> bool:
    """Does comparing ``cast(field, target)`` with a literal equal comparing the field?"""
    s, t = _value_type(source), pa.types
    if s.equals(target):
        return True
    if t.is_integer(s) and t.is_integer(target):
        if t.is_signed_integer(s) and t.is_unsigned_integer(target):
            return False
        if t.is_signed_integer(s) == t.is_signed_integer(target):
            return bool(target.bit_width >= s.bit_width)
        return bool(target.bit_width > s.bit_width)  # unsigned -> wider signed
    if t.is_integer(s) and t.is_floating(target):
        mantissa = {16: 11, 32: 24, 64: 53}[target.bit_width]
        return bool(s.bit_width < mantissa)
    if t.is_floating(s) and t.is_floating(target):
        return bool(target.bit_width >= s.bit_width)
    strings = (t.is_string, t.is_large_string, _is_string_view)
    return any(f(s) for f in strings) and any(f(target) for f in strings)


def _flatten(node: _Call, function: str) -> list[_Node]:
    """Operands of a chain of one associative call, without recursion."""
    out: list[_Node] = []
    todo: list[_Node] = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, _Call) and item.name == function:
            todo.extend(reversed(item.args))
        else:
            out.append(item)
    return out


def _kleene(parts: Sequence[_Bounds], *, conjunction: bool) -> _Bounds:
    """Kleene AND / OR of ``parts``."""

    def side(which: Callable[[_Bounds], _Side], conj: bool) -> _Side:
        return _combine([which(p) for p in parts], conjunction=conj)

    return _Bounds(lambda: side(_Bounds.t, conjunction), lambda: side(_Bounds.f, not conjunction))


_STRICT_TRUTH = {
    # function: (combinations giving true, combinations giving false)
    "and": (("tt",), ("tf", "ft", "ff")),
    "or": (("tt", "tf", "ft"), ("ff",)),
    "xor": (("tf", "ft"), ("tt", "ff")),
}


def _strict(function: str, a: _Bounds, b: _Bounds) -> _Bounds:
    """Non-Kleene ``and`` / ``or`` / ``xor``: null whenever a side is null."""

    def side(combinations: tuple[str, ...]) -> _Side:
        products = []
        for combination in combinations:
            x = a.t() if combination[0] == "t" else a.f()
            y = b.t() if combination[1] == "t" else b.f()
            products.append(_combine([x, y], conjunction=True))
        return _combine(products, conjunction=False)

    true, false = _STRICT_TRUTH[function]
    return _Bounds(lambda: side(true), lambda: side(false))


def _if_else(cond: _Bounds, then: _Bounds, otherwise: _Bounds) -> _Bounds:
    """``if_else(cond, then, otherwise)``: null where ``cond`` is null (DuckDB sends
    ``IN`` lists as ``if_else(is_valid(c), is_in(c, ...), null)``)."""

    def side(pick: Callable[[_Bounds], _Side]) -> _Side:
        return _combine(
            [
                _combine([cond.t(), pick(then)], conjunction=True),
                _combine([cond.f(), pick(otherwise)], conjunction=True),
            ],
            conjunction=False,
        )

    return _Bounds(lambda: side(_Bounds.t), lambda: side(_Bounds.f))


def from_expression(expr: pc.Expression, schema: pa.Schema) -> tuple[Predicate | None, bool]:
    """Convert an Arrow filter expression into a predicate, as far as possible.

    Returns ``(predicate, exact)``.  With ``exact`` True the predicate selects
    exactly the rows Arrow's filter keeps (``None``: every row).  With
    ``exact`` False it selects a superset: use it for pruning only and give
    Arrow the expression itself for row filtering.  What this form cannot
    express (other functions, column-to-column comparisons, NaN-vs-null
    distinctions on float columns, DNFs beyond ``MAX_CLAUSES`` clauses)
    becomes "unknown": true under AND, and it makes an enclosing OR unknown.
    NOT is pushed down through AND/OR exactly, in Kleene logic.

    The tree is read from Arrow's own serialization of the expression, never
    from its string form.  An unknown column raises InvalidPredicateError.
    """
    try:
        node = _decode(expr)
    except _UnsupportedExpression:
        return None, False
    side = _Converter(schema).visit(node).t()
    if any(len(c) == 0 for c in side.dnf):
        return None, side.error.exact
    return Predicate(tuple(side.dnf)), side.error.exact


# --------------------------------------------------------------------------
# NaN and Arrow's pruning by parquet statistics
# --------------------------------------------------------------------------
#
# Parquet statistics ignore NaN: a row group holding NaN and 1.0 records
# min = max = 1.0 and no null.  Arrow's scanner (and DuckDB) turn those into a
# guarantee (``x == 1.0``, ``x`` not null) and drop the row groups where the
# filter simplifies to false under it, so a filter that selects NaN rows can
# lose them: ``x != 1.0``, ``is_nan(x)``, ``is_null(x, nan_is_null=True)``.
# A filter that never selects a NaN row of the columns it reads on floats is
# pruned soundly (the guarantee holds for every other row).

#: comparisons that are false when an operand is NaN (``not_equal`` is true)
_FALSE_AT_NAN = frozenset({"equal", "less", "less_equal", "greater", "greater_equal"})
_AND_OR = frozenset({"and", "and_kleene", "or", "or_kleene"})


def selects_nan(term: Term, schema: pa.Schema | None = None) -> bool:
    """Does ``term`` select the NaN rows of a float column (which statistics do not see)?

    NaN is a null here, so these are the terms that select null rows:
    ``== None``, ``!= v``, ``in [..., None]``, ``not in [...]`` without None.
    """
    type_ = term.type
    if schema is not None and term.column in schema.names:
        type_ = schema.field(term.column).type
    return _is_floating(type_) and _matches_null(term)


def without_nan_terms(pred: Predicate, schema: pa.Schema | None = None) -> Predicate | None:
    """``pred`` with the terms that select NaN on float columns made true (a superset).

    What Arrow may prune row groups with; the dropped terms are applied to the
    rows after the scan.  ``None``: some clause is left without terms (every row).
    """
    clauses = []
    for clause in pred.clauses:
        kept = tuple(t for t in clause if not selects_nan(t, schema))
        if not kept:
            return None
        clauses.append(kept)
    return Predicate(tuple(clauses))


def expression_selects_nan(expr: pc.Expression, schema: pa.Schema) -> bool:
    """May ``expr`` select a row because a float column holds NaN there?

    Then Arrow's pruning by statistics may drop such rows.  Sound filters:
    AND/OR of comparisons (other than ``!=``) and ``is_in`` without NaN on
    float columns, ``is_null``/``is_valid`` without ``nan_is_null`` anywhere,
    and anything on other columns; under a NOT, ``!=``, ``is_nan``, ``is_null``
    with ``nan_is_null`` and ``is_in`` with NaN are sound.  Any other use of a
    float column (other functions, an undecodable expression on a schema with
    floats) counts as selecting NaN.
    """
    floats = {f.name for f in schema if _is_floating(f.type)}
    if not floats:
        return False
    try:
        root = _decode(expr)
    except _UnsupportedExpression:
        return True
    todo: list[tuple[_Node, bool]] = [(root, True)]
    while todo:
        node, positive = todo.pop()
        if not isinstance(node, _Call):
            if isinstance(node, _FieldRef) and (node.name is None or node.name in floats):
                return True  # a float (or unknown) column used as a boolean
            continue
        name, args = node.name, node.args
        if name in _AND_OR:
            todo.extend((arg, positive) for arg in args)
        elif name in ("and_not", "and_not_kleene") and len(args) == 2:
            todo.extend([(args[0], positive), (args[1], not positive)])
        elif name == "invert" and len(args) == 1:
            todo.append((args[0], not positive))
        elif not _reads(node, floats):
            continue
        elif not _sound_atom(node, positive, floats):
            return True
    return False


def _reads(node: _Node, names: set[str]) -> bool:
    """Does ``node`` read one of ``names`` (or a column it cannot name)?"""
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, _FieldRef):
            if item.name is None or item.name in names:
                return True
        elif isinstance(item, _Call):
            todo.extend(item.args)
    return False


def _plain_operand(node: _Node, floats: set[str]) -> bool:
    """A column, a literal, a cast of one, or an expression on no float column."""
    while isinstance(node, _Call) and node.name == "cast" and len(node.args) == 1:
        node = node.args[0]
    return isinstance(node, (_FieldRef, _Literal)) or not _reads(node, floats)


def _has_nan(value_set: Any) -> bool:
    if value_set is None or not value_set.is_valid:
        return True  # unknown set: assume the worst
    values = value_set.values
    return pa.types.is_floating(values.type) and bool(pc.any(pc.is_nan(values)).as_py())


def _sound_atom(node: _Call, positive: bool, floats: set[str]) -> bool:
    """Can Arrow's pruning of row groups holding NaN keep every row ``node`` selects?"""
    name, args = node.name, node.args
    if len(args) == 1 and not _plain_operand(args[0], floats):
        return False
    if name == "is_valid" and len(args) == 1:
        return True  # null counts ignore NaN, rightly: NaN is valid
    if name == "is_null" and len(args) == 1:
        nan_is_null = _options_field(node.options, "nan_is_null")
        return not positive or not (nan_is_null is not None and nan_is_null.as_py())
    if positive:
        if name in _FALSE_AT_NAN and len(args) == 2:
            return all(_plain_operand(arg, floats) for arg in args)
        if name == "is_in" and len(args) == 1:
            return not _has_nan(_options_field(node.options, "value_set"))
        return False
    # under a NOT: sound where the call is true at NaN
    if name in ("not_equal", "is_nan") and all(_plain_operand(a, floats) for a in args):
        return True
    if name == "is_in" and len(args) == 1:
        value_set = _options_field(node.options, "value_set")
        return value_set is not None and value_set.is_valid and _has_nan(value_set)
    return False


def expression_columns(expr: pc.Expression) -> set[str] | None:
    """The columns ``expr`` reads (``None``: a nested reference, or undecodable)."""
    try:
        root = _decode(expr)
    except _UnsupportedExpression:
        return None
    names: set[str] = set()
    todo: list[_Node] = [root]
    while todo:
        item = todo.pop()
        if isinstance(item, _FieldRef):
            if item.name is None:
                return None
            names.add(item.name)
        elif isinstance(item, _Call):
            todo.extend(item.args)
    return names
