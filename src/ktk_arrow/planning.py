"""Scan planning: metadata + filter -> the files that may hold matching rows.

Planning is data (pyiceberg's ``plan_files``): it returns :class:`FileTask`
objects and reads no data.  Files are pruned by partition values, then by
secondary indices.  Row-level filtering, row-group pushdown and projection
are left to Arrow's scanner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import commit
from .errors import InvalidPredicateError
from .spec import predicates
from .spec.index import IndexMap
from .spec.metadata import DatasetMetadata
from .storage import Store


@dataclass(frozen=True)
class FileTask:
    """One parquet file to scan, with what Arrow needs to scan it well."""

    label: str
    key: str
    size: int | None
    rows: int | None
    partition_values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScanFilter:
    """A user filter in both forms: a predicate to prune with, an expression for Arrow."""

    predicate: predicates.Predicate | None
    expression: pc.Expression | None

    @property
    def is_empty(self) -> bool:
        return self.predicate is None and self.expression is None


NO_FILTER = ScanFilter(None, None)


def make_filter(user_filter: Any, schema: pa.Schema) -> ScanFilter:
    """Accept kartothek DNF predicates or a pyarrow compute Expression."""
    if user_filter is None:
        return NO_FILTER
    if isinstance(user_filter, ScanFilter):
        return user_filter
    if isinstance(user_filter, pc.Expression):
        pred, _exact = predicates.from_expression(user_filter, schema)
        return ScanFilter(pred, user_filter)
    if isinstance(user_filter, (list, tuple)):
        pred = predicates.parse_dnf(user_filter, schema)
        return ScanFilter(pred, predicates.to_expression(pred))
    raise InvalidPredicateError(
        f"filter must be a pyarrow.compute.Expression or kartothek predicates "
        f"[[('col', op, value), ...], ...], got {type(user_filter).__name__} "
        f"{_quoted(user_filter)}"
    )


def _quoted(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut short: the error shows what was given."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def combine(first: ScanFilter, second: ScanFilter) -> ScanFilter:
    """Both filters must hold."""
    if first.is_empty:
        return second
    if second.is_empty:
        return first
    pred: predicates.Predicate | None
    if first.predicate is None:
        pred = second.predicate
    elif second.predicate is None:
        pred = first.predicate
    else:
        pred = predicates.Predicate(
            tuple(a + b for a in first.predicate.clauses for b in second.predicate.clauses)
        )
    expr: pc.Expression | None
    if first.expression is None:
        expr = second.expression
    elif second.expression is None:
        expr = first.expression
    else:
        expr = first.expression & second.expression
    return ScanFilter(pred, expr)


def plan(
    meta: DatasetMetadata,
    scan_filter: ScanFilter = NO_FILTER,
    load_index: Callable[[str], IndexMap] | None = None,
) -> list[FileTask]:
    """The files of ``meta`` that may hold rows matching ``scan_filter``."""
    tasks = [
        FileTask(e.label, e.key, e.size, e.rows, meta.partition_values(e.label))
        for e in meta.files.values()
    ]
    pred = scan_filter.predicate
    if pred is None:
        return tasks
    if meta.partition_keys:
        tasks = [t for t in tasks if predicates.evaluate(pred, t.partition_values)]
    stat_columns = predicates.columns(pred) - set(meta.partition_keys)
    if stat_columns and meta.schema is not None and tasks:
        schema = meta.schema
        tasks = [
            t
            for t in tasks
            if predicates.minmax_may_match(
                pred, meta.files[t.label].typed_stats(schema, stat_columns)
            )
        ]
    if load_index is not None and tasks:
        for column in sorted(predicates.columns(pred) & set(meta.indices)):
            candidates = _candidates(load_index(column), pred, column)
            keep = predicates.prune_by_index(pred, column, candidates, [t.label for t in tasks])
            if keep is not None:
                tasks = [t for t in tasks if t.label in keep]
            if not tasks:
                break
    return tasks


_RESTRICTING = ("==", "in", "<", "<=", ">", ">=")


def _candidates(index: IndexMap, pred: predicates.Predicate, column: str) -> IndexMap:
    """The index pairs whose value can satisfy a clause, selected by Arrow.

    Only a vectorised pre-selection: ``prune_by_index`` still decides, on far
    fewer values.  Skipped when some clause has no null-rejecting term on
    ``column`` (then the index restricts nothing anyway).
    """
    exprs = []
    for clause in pred.clauses:
        terms = tuple(
            t
            for t in clause
            if t.column == column
            and t.op in _RESTRICTING
            and t.value is not None
            and not (t.op == "in" and None in t.value)
        )
        if not terms:
            return index
        expr = predicates.to_expression(predicates.Predicate((terms,)))
        if expr is None:
            return index
        exprs.append(expr)
    combined = exprs[0]
    for expr in exprs[1:]:
        combined = combined | expr
    return index.matching(column, combined)


def index_loader(store: Store, meta: DatasetMetadata) -> Callable[[str], IndexMap]:
    """Load each secondary index at most once."""
    cache: dict[str, IndexMap] = {}

    def load(column: str) -> IndexMap:
        if column not in cache:
            cache[column] = commit.read_index(store, meta, column)
        return cache[column]

    return load


def partition_expression(task: FileTask, schema: pa.Schema) -> pc.Expression:
    """What Arrow may assume of every row of this file."""
    expr: pc.Expression | None = None
    for column, value in task.partition_values.items():
        arrow_type = schema.field(column).type
        term = (
            pc.field(column).is_null()
            if value is None
            else pc.field(column) == pa.scalar(value, type=arrow_type)
        )
        expr = term if expr is None else expr & term
    return expr if expr is not None else pc.scalar(True)
