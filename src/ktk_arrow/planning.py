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
from .spec import keys, manifest, predicates
from .spec.index import IndexMap
from .spec.manifest import LazyFiles
from .spec.metadata import DatasetMetadata, FileEntry
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
    load_index: Callable[[str, pc.Expression | None], IndexMap] | None = None,
) -> list[FileTask]:
    """The files of ``meta`` that may hold rows matching ``scan_filter``.

    Files are pruned by partition values, then by secondary indices, then by
    their statistics (the cheap, exact-set steps first).  A snapshot with
    manifest segments is pruned segment by segment in Arrow: segments whose
    partition bounds cannot match are not read, and Python objects are made
    only for the files that survive.
    """
    pred = scan_filter.predicate
    if pred is not None and not pred.clauses:
        # matches nothing (``pc.scalar(False)``, a contradiction): no file may match,
        # and callers that trust an exact plan (``count_rows``) must see none
        return []
    stat_columns = predicates.columns(pred) - set(meta.partition_keys)
    entries, values, indexed = _candidate_entries(meta, pred, load_index, bool(stat_columns))
    tasks = [
        FileTask(e.label, e.key, e.size, e.rows, meta.partition_values(e.label) if v is None else v)
        for e, v in zip(entries, values, strict=True)
    ]
    if pred is None:
        return tasks
    if meta.partition_keys:
        tasks = [t for t in tasks if predicates.evaluate(pred, t.partition_values)]
    if load_index is not None and tasks and not indexed:
        for column in sorted(predicates.columns(pred) & set(meta.indices)):
            candidates = _candidates(load_index, pred, column)
            keep = predicates.prune_by_index(pred, column, candidates, [t.label for t in tasks])
            if keep is not None:
                tasks = [t for t in tasks if t.label in keep]
            if not tasks:
                break
    if stat_columns and meta.schema is not None and tasks:
        schema = meta.schema
        by_label = {e.label: e for e in entries}
        tasks = [
            t
            for t in tasks
            if predicates.minmax_may_match(
                pred, by_label[t.label].typed_stats(schema, stat_columns)
            )
        ]
    return tasks


def restrict(pred: predicates.Predicate, columns: set[str]) -> predicates.Predicate | None:
    """A predicate on ``columns`` only, matching at least what ``pred`` matches.

    ``None`` when some clause says nothing about them (then every value may match).
    """
    clauses = []
    for clause in pred.clauses:
        kept = tuple(t for t in clause if t.column in columns)
        if not kept:
            return None
        clauses.append(kept)
    return predicates.Predicate(tuple(clauses))


def _candidate_entries(
    meta: DatasetMetadata,
    pred: predicates.Predicate | None,
    load_index: Callable[[str, pc.Expression | None], IndexMap] | None,
    with_stats: bool,
) -> tuple[list[FileEntry], list[dict[str, Any] | None], bool]:
    """The files a partition (and index) filter can match, without touching the others.

    With their partition values where a segment has them typed (``None``: parse the label),
    and whether the secondary indices have pruned them already.
    """
    loader = meta.files.loader if isinstance(meta.files, LazyFiles) else None
    if not meta.segments or loader is None:
        everything = list(meta.files.values())
        return everything, [None] * len(everything), False
    on_partitions = restrict(pred, set(meta.partition_keys)) if pred is not None else None
    expression = None
    if on_partitions is not None:
        shape = manifest.table_schema(meta.partition_keys, meta.schema)
        expression = predicates.expression_for(on_partitions, shape)
    part = getattr(loader, "part", None)
    tables = []
    for segment in meta.segments:
        if on_partitions is not None and meta.schema is not None:
            bounds = FileEntry(segment.key, segment.key, stats=segment.bounds).typed_stats(
                meta.schema, set(meta.partition_keys)
            )
            if not predicates.minmax_may_match(on_partitions, bounds):
                continue
        if on_partitions is None or expression is None:
            table = loader(segment)
        elif part is not None:
            table = part(segment, expression)
        else:
            table = predicates.filter_table(on_partitions, loader(segment))
        if table.num_rows:
            tables.append(table)
    inline = list(meta.inline_files.values())
    indexed = False
    if pred is not None and load_index is not None and tables:
        indexed = True
        table = pa.concat_tables(tables)
        for column in sorted(predicates.columns(pred) & set(meta.indices)):
            candidates = _candidates(load_index, pred, column)
            labels = table.column(manifest.LABEL).to_pylist() + [e.label for e in inline]
            keep = predicates.prune_by_index(pred, column, candidates, labels)
            if keep is not None:
                mask = pc.is_in(table.column(manifest.LABEL), pa.array(sorted(keep), pa.string()))
                table = table.filter(mask)
                inline = [e for e in inline if e.label in keep]
        tables = [table]
    out: list[FileEntry] = []
    values: list[dict[str, Any] | None] = []
    for table in tables:
        out.extend(
            manifest.entries(
                table, meta.uuid, keys.table_prefix(meta.uuid, meta.table) + "/", stats=with_stats
            )
        )
        values.extend(manifest.partition_values(table, meta.partition_keys))
    return out + inline, values + [None] * len(inline), indexed


_RESTRICTING = ("==", "in", "<", "<=", ">", ">=")


def _candidates(
    load_index: Callable[[str, pc.Expression | None], IndexMap],
    pred: predicates.Predicate,
    column: str,
) -> IndexMap:
    """The index pairs whose value can satisfy a clause, selected by Arrow.

    Only a vectorised pre-selection: ``prune_by_index`` still decides, on far
    fewer values.  The expression also lets the index files be read in part
    (row groups whose value range cannot match are skipped).  Unrestricted
    when some clause has no null-rejecting term on ``column`` (then the index
    restricts nothing anyway).
    """
    expression = _index_expression(pred, column)
    index = load_index(column, expression)
    return index if expression is None else index.matching(column, expression)


def _index_expression(pred: predicates.Predicate, column: str) -> pc.Expression | None:
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
            return None
        expr = predicates.to_expression(predicates.Predicate((terms,)))
        if expr is None:
            return None
        exprs.append(expr)
    combined = exprs[0]
    for expr in exprs[1:]:
        combined = combined | expr
    return combined


def index_loader(
    store: Store, meta: DatasetMetadata
) -> Callable[[str, pc.Expression | None], IndexMap]:
    """Read each secondary index at most once, and only the row groups a filter can match.

    The pairs may name files removed since an index segment was written;
    planning intersects them with the snapshot's files.
    """
    cache: dict[tuple[str, str], IndexMap] = {}

    def load(column: str, expression: pc.Expression | None) -> IndexMap:
        cache_key = (column, str(expression))
        if cache_key not in cache:
            cache[cache_key] = commit.read_index_for(store, meta, column, expression)
        return cache[cache_key]

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
