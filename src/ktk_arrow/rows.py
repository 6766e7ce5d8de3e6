"""Row-level changes: ``delete_rows`` and ``upsert``, copy-on-write, one commit each.

Kartothek itself replaces whole partitions or files.  Here the planner (the
same one ``ka.dataset(..., filter=)`` uses: partition values, the exact
secondary indices, file statistics) names the files that *may* hold an
affected row; only those are read, and only those that do hold one are
rewritten, file by file, without the affected rows.  The new files are
written by the ordinary writer (kartothek layout, the dataset's partitioning
and indices), so plateau reads the result and the indices stay exact.

Everything commits once through the committer.  A concurrent commit
conflicts only if it removed a file this change rewrote or added a file that
may hold an affected row (see ``docs/format.md``); otherwise the change is
rebased onto it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import commit as committer
from . import planning
from .arrow import plain_type
from .commit import Change, Snapshot
from .errors import CorruptMetadataError, InvalidArgumentError, StoreError
from .planning import FileTask, ScanFilter
from .spec import index as spec_index
from .spec import keys, predicates
from .spec.metadata import DatasetMetadata, FileEntry
from .spec.schema import conform
from .storage import Store, StoreLike, resolve_store
from .write import FileWriter, PreparedWrite, iter_tables, prepare_write

DataLike = Any


def delete_rows(
    store: StoreLike,
    dataset_uuid: str,
    filter: Any = None,
    *,
    all_rows: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Snapshot:
    """Remove exactly the rows matching ``filter``, as one commit.

    ``filter`` is kartothek DNF ``[[(col, op, value), ...], ...]`` or a
    ``pyarrow.compute.Expression`` (rows where it is null are kept).  Files
    that cannot hold a matching row (by partition values, secondary indices,
    statistics) are not read; files that do are rewritten without those rows,
    and a file left without rows is removed.  ``filter=None`` would delete
    every row: it is refused unless ``all_rows=True`` says so.

    The snapshot's ``rows_removed`` counts the deleted rows and ``rows_added``
    is 0; ``files_removed`` / ``files_added`` count the files dropped and
    written.  A filter that matches nothing commits no version: the result is
    the current version, with zero counts.
    """
    resolved = resolve_store(store, storage_options)
    check_delete_args(dataset_uuid, filter, all_rows)
    prepared = prepare_write(resolved, dataset_uuid, mode="append")
    base = existing(prepared, dataset_uuid)
    planned = plan_delete(resolved, base, filter)

    def work(writer: FileWriter) -> Snapshot:
        if planned.matcher is None:
            # all_rows, or a filter on partition values only: the planner kept exactly
            # the files whose every row matches, and they go without being read
            touched = [task.label for task in planned.tasks]
            removed_rows = whole_file_rows(resolved, planned.tasks)
        else:
            rewrite = _Rewrite(
                resolved, base, writer, planned.matcher.mask(), planned.matcher.columns
            )
            rewrite.run(planned.tasks)
            touched, removed_rows = rewrite.touched, rewrite.matched
        if not touched:
            return unchanged(base, "delete_rows")
        change = change_of(
            "delete_rows",
            resolved,
            base,
            writer.entries,
            writer.index_delta,
            writer.schema,
            touched,
            planned.plan_filter,
            (0, removed_rows),
        )
        return committer.commit(resolved, dataset_uuid, change, base=base)

    return prepared.committed(work)


def upsert(
    data: DataLike,
    store: StoreLike,
    dataset_uuid: str,
    *,
    on: Sequence[str] | str,
    storage_options: dict[str, Any] | None = None,
) -> Snapshot:
    """Insert ``data``, replacing the stored rows whose key (the columns ``on``) it holds.

    Only files that may hold one of the keys (by partition values, an index
    on a key column, statistics) are read, and only those that do are
    rewritten without the replaced rows, one at a time: peak memory is the
    input plus the largest rewritten file.  New rows go to the dataset's
    partitions, indexed like the rest.  Keys must be unique and non-null in
    ``data``.  The snapshot's ``rows_added`` counts the rows of ``data`` and
    ``rows_removed`` the stored rows they replaced.
    """
    resolved = resolve_store(store, storage_options)
    key_columns = check_key_columns(on)
    prepared = prepare_write(resolved, dataset_uuid, mode="append")
    base = existing(prepared, dataset_uuid)
    check_keys_known(base, key_columns)
    table = _input_table(data, key_columns, base)
    if table is None:
        return unchanged(base, "upsert")
    check_unique_keys(table, key_columns)
    keys_table = table.select(key_columns)
    scan_filter, tasks = plan_upsert(resolved, base, keys_table)

    def work(writer: FileWriter) -> Snapshot:
        rewrite = _Rewrite(
            resolved,
            base,
            writer,
            _key_mask(keys_table),
            key_columns,
            extra=_by_directory(table, base.partition_keys),
        )
        rewrite.run(tasks)
        touched, replaced = rewrite.touched, rewrite.matched
        change = change_of(
            "upsert",
            resolved,
            base,
            writer.entries,
            writer.index_delta,
            writer.schema,
            touched,
            scan_filter,
            (table.num_rows, replaced),
        )
        return committer.commit(resolved, dataset_uuid, change, base=base)

    return prepared.committed(work)


def check_delete_args(dataset_uuid: str, filter: Any, all_rows: bool) -> None:
    """``filter=None`` deletes every row only with ``all_rows=True``; never both."""
    if filter is None or (isinstance(filter, (list, tuple)) and not filter):
        if not all_rows:
            raise InvalidArgumentError(
                f"delete_rows on dataset {dataset_uuid!r} got filter={filter!r}, which would "
                "delete every row; pass a filter, or all_rows=True to delete every row"
            )
    elif all_rows:
        raise InvalidArgumentError(
            f"delete_rows got both filter={filter!r} and all_rows=True; pass one of them"
        )


def check_keys_known(base: DatasetMetadata, key_columns: Sequence[str]) -> None:
    """Every key column must be a column of the dataset."""
    schema = dataset_schema(base)
    unknown = [c for c in key_columns if c not in schema.names]
    if unknown:
        raise InvalidArgumentError(
            f"upsert key on={list(key_columns)!r} names columns {unknown} that dataset "
            f"{base.uuid!r} does not have; its columns: {schema.names}"
        )


# -- planning -------------------------------------------------------------------


def existing(prepared: PreparedWrite, dataset_uuid: str) -> DatasetMetadata:
    """The dataset's state the change is planned on (``DatasetNotFoundError`` if none)."""
    if prepared.base is None:
        # the same error ka.dataset() raises
        committer.load(prepared.store, dataset_uuid)
    assert prepared.base is not None
    return prepared.base


def dataset_schema(meta: DatasetMetadata) -> pa.Schema:
    """The schema readers see (partition columns decoded): filters are typed by it."""
    if meta.schema is None:
        raise CorruptMetadataError(f"dataset {meta.uuid!r} has no schema")
    return pa.schema(
        [
            pa.field(f.name, plain_type(f.type) if f.name in meta.partition_keys else f.type)
            for f in meta.schema
            if not f.name.startswith("__index_level_")
        ],
        metadata=meta.schema.metadata,
    )


def _plan(store: Store, meta: DatasetMetadata, scan_filter: ScanFilter) -> list[FileTask]:
    """The files of ``meta`` that may hold a row ``scan_filter`` matches (the read planner)."""
    return planning.plan(meta, scan_filter, planning.index_loader(store, meta))


@dataclass(frozen=True)
class Matcher:
    """Which stored rows a change affects, as a value: Dask tasks rewrite files with it.

    ``keys``: an upsert's keys (the rows with one of them); else the rows
    ``scan_filter`` matches (``exact``: its predicate is the whole filter).
    """

    keys: pa.Table | None = None
    scan_filter: ScanFilter | None = None
    exact: bool = True

    @property
    def columns(self) -> Collection[str] | None:
        """The columns :meth:`mask` needs (``None``: all of them)."""
        if self.keys is not None:
            return list(self.keys.column_names)
        assert self.scan_filter is not None
        if not self.exact or self.scan_filter.predicate is None:
            return None
        return predicates.columns(self.scan_filter.predicate)

    def mask(self) -> Mask:
        """The affected rows of a table (built once, used per file)."""
        if self.keys is not None:
            return _key_mask(self.keys)
        assert self.scan_filter is not None
        match = _keep_expression(self.scan_filter)
        assert match is not None
        return _delete_mask(self.scan_filter, match, self.exact)


@dataclass(frozen=True)
class DeletePlan:
    """The files a delete reads, and how it finds its rows in them."""

    #: files that may hold a matching row
    tasks: list[FileTask]
    #: the filter the conflict rule plans with (``col in`` with its range)
    plan_filter: ScanFilter
    #: ``None``: every planned file matches whole and goes without being read
    matcher: Matcher | None


def plan_delete(store: Store, base: DatasetMetadata, filter: Any) -> DeletePlan:
    """Plan ``delete_rows(filter)`` on ``base`` (``filter=None``: every row)."""
    scan_filter = (
        planning.NO_FILTER if filter is None else planning.make_filter(filter, dataset_schema(base))
    )
    plan_filter = _with_ranges(scan_filter)
    tasks = _plan(store, base, plan_filter)
    # a DNF filter is exactly its predicate; an Expression may be wider than it
    exact = (
        not isinstance(filter, pc.Expression)
        or (predicates.from_expression(filter, dataset_schema(base))[1])
    )
    keep = _keep_expression(scan_filter)
    if keep is None or (exact and _on_partitions_only(scan_filter, base)):
        return DeletePlan(tasks, plan_filter, None)
    return DeletePlan(tasks, plan_filter, Matcher(scan_filter=scan_filter, exact=exact))


def plan_upsert(
    store: Store, base: DatasetMetadata, keys_table: pa.Table
) -> tuple[ScanFilter, list[FileTask]]:
    """The filter an upsert of ``keys_table`` plans with, and the files that may hold a key."""
    scan_filter = _with_ranges(planning.make_filter(_key_filter(keys_table), dataset_schema(base)))
    return scan_filter, _plan(store, base, scan_filter)


def _with_ranges(scan_filter: ScanFilter) -> ScanFilter:
    """``scan_filter`` with ``min <= col <= max`` beside each ``col in (...)``: the same rows.

    Arrow prunes parquet row groups by a range but not by a value set, so
    the range lets the planner read only the index row groups (and check only
    the files) that the keys' range reaches.  Integer and string columns only
    (ordered the same way in Python and in Arrow, and never NaN).
    """
    pred = scan_filter.predicate
    if pred is None:
        return scan_filter
    clauses = []
    for clause in pred.clauses:
        ranges: list[predicates.Term] = []
        for term in clause:
            values = term.value if term.op == "in" else None
            if values and None not in values and _orderable(term.type):
                ranges.append(predicates.Term(term.column, ">=", min(values), term.type))
                ranges.append(predicates.Term(term.column, "<=", max(values), term.type))
        clauses.append((*ranges, *clause))
    return ScanFilter(predicates.Predicate(tuple(clauses)), scan_filter.expression)


def _orderable(t: pa.DataType | None) -> bool:
    return t is not None and (
        pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
    )


def change_of(
    operation: str,
    store: Store,
    base: DatasetMetadata,
    entries: Sequence[FileEntry],
    index_delta: Mapping[str, spec_index.IndexMap],
    schema: pa.Schema | None,
    touched: Collection[str],
    scan_filter: ScanFilter,
    row_counts: tuple[int, int],
) -> Change:
    """The one commit of a row-level change, with its conflict rule.

    ``depends_on`` is the set of rewritten files still present plus the files
    added since ``base`` that may hold an affected row: it differs between
    ``base`` and a newer state exactly when a concurrent commit removed a
    rewritten file or added a file that may match, the two conflicts.
    """
    rewritten = frozenset(touched)

    def depends_on(state: DatasetMetadata) -> Collection[str]:
        if state.version == base.version:
            return rewritten
        present = {label for label in rewritten if label in state.files}
        added = {t.label for t in _plan(store, state, scan_filter) if t.label not in base.files}
        return present | added

    return Change(
        operation=operation,
        add=list(entries),
        # nothing rewritten: an append, which must not land on a concurrently replaced schema
        remove=(lambda _state: rewritten) if rewritten else None,
        index_delta=index_delta,
        schema=schema,
        partition_keys=base.partition_keys,
        read_version=base.version,
        depends_on=depends_on,
        row_counts=row_counts,
    )


def unchanged(base: DatasetMetadata, operation: str) -> Snapshot:
    """Nothing to commit: the current version, with counts that say so."""
    return dataclasses.replace(
        Snapshot.of(base.commit),
        operation=operation,
        files_added=0,
        files_removed=0,
        rows_added=0,
        rows_removed=0,
    )


def _on_partitions_only(scan_filter: ScanFilter, meta: DatasetMetadata) -> bool:
    """Whether the filter is a condition on partition values alone (then files match whole)."""
    pred = scan_filter.predicate
    return pred is not None and predicates.columns(pred) <= set(meta.partition_keys)


def whole_file_rows(store: Store, tasks: Sequence[FileTask]) -> int:
    """The rows of files a change drops whole."""
    return sum(_row_count(store, task) for task in tasks)


def _row_count(store: Store, task: FileTask) -> int:
    """A dropped file's rows: recorded, or (files plateau wrote) from its footer."""
    if task.rows is not None:
        return task.rows
    try:
        with store.arrow_filesystem().open_input_file(store.path(task.key)) as source:
            return int(pq.ParquetFile(source).metadata.num_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(
            f"reading the footer of data file {task.key!r} from {store.url!r} failed ({exc}); "
            f"retry, or {committer.check_hint(store, task.key.split('/', 1)[0])}"
        ) from exc


# -- rewriting files ---------------------------------------------------------------

#: files read ahead (and filtered) while earlier ones are written: reads release the GIL
READ_AHEAD = 4
#: kept rows are buffered up to this many bytes (peak memory: this, the files read
#: ahead, the input), so the rewritten files of a partition become one new file
BUFFER_BYTES = 64 * 1024 * 1024

Mask = Callable[[pa.Table], pa.Array]


@dataclass
class _Rewrite:
    """Copy-on-write of the files a change touches, one file (or a few) in memory at a time.

    Files are read in partition order, a few ahead; a file with an affected
    row is kept without those rows.  Kept rows are buffered per partition and
    written with the rows ``extra`` adds to the same partitions (an upsert's
    data), so a change leaves about one new file per partition it touched.
    """

    store: Store
    meta: DatasetMetadata
    writer: FileWriter
    mask_of: Mask
    #: the columns ``mask_of`` needs (``None``: all of them)
    columns: Collection[str] | None
    #: rows to add, by partition directory (written with that partition's kept rows)
    extra: dict[str, pa.Table] = field(default_factory=dict)
    #: labels of the files rewritten or dropped
    touched: list[str] = field(default_factory=list)
    #: rows that matched (deleted or replaced)
    matched: int = 0
    _buffer: list[tuple[str, pa.Table]] = field(default_factory=list)
    _buffered: int = 0

    def run(self, tasks: Sequence[FileTask]) -> None:
        ordered = sorted(tasks, key=lambda t: (_directory(t.label), t.label))
        with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
            for task, (kept, matched) in zip(ordered, _ahead(pool, self._read, ordered)):
                if not matched:
                    continue
                self.touched.append(task.label)
                self.matched += matched
                if kept.num_rows:
                    self._add(_directory(task.label), kept)
        self._flush()
        if self.extra:
            self.writer.write(pa.concat_tables(list(self.extra.values())))
            self.extra = {}

    def _read(self, task: FileTask) -> tuple[pa.Table, int]:
        return kept_rows(self.store, self.meta, task, self.columns, self.mask_of)

    def _add(self, directory: str, kept: pa.Table) -> None:
        self._buffer.append((directory, kept))
        self._buffered += kept.nbytes
        if self._buffered >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        tables = [t for _, t in self._buffer]
        for directory in dict.fromkeys(d for d, _ in self._buffer):
            if directory in self.extra:
                tables.append(self.extra.pop(directory))
        self._buffer, self._buffered = [], 0
        self.writer.write(pa.concat_tables(tables))


def kept_rows(
    store: Store,
    meta: DatasetMetadata,
    task: FileTask,
    columns: Collection[str] | None,
    mask_of: Mask,
) -> tuple[pa.Table, int]:
    """The rows of a file ``mask_of`` does not select, in the dataset schema; how many it does."""
    kept, matched = _without_matches(store, meta, task, columns, mask_of)
    if matched and kept.num_rows:
        assert meta.schema is not None
        # plateau may have stored a pandas index: the writer never keeps one
        kept = conform(_drop_pandas_index(kept), meta.schema, what="stored rows")
    return kept, matched


def rewrite_file(
    store: Store, meta: DatasetMetadata, writer: FileWriter, task: FileTask, matcher: Matcher
) -> int:
    """Write the kept rows of one file with an affected row; returns how many rows matched.

    One file in memory: a Dask task's share of a row-level change.  0 means
    the file stays as it is; otherwise the file is to be removed, and its
    kept rows (if any) are in ``writer``'s files.
    """
    kept, matched = kept_rows(store, meta, task, matcher.columns, matcher.mask())
    if matched and kept.num_rows:
        writer.write(kept)
    return matched


def _ahead(
    pool: ThreadPoolExecutor, fn: Callable[[FileTask], Any], tasks: Sequence[FileTask]
) -> Iterator[Any]:
    """``map(fn, tasks)`` in order, with at most ``READ_AHEAD`` results pending."""
    pending: deque[Future[Any]] = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) > READ_AHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _directory(label: str) -> str:
    return label.rsplit("/", 1)[0] if "/" in label else ""


def _by_directory(table: pa.Table, partition_keys: Sequence[str]) -> dict[str, pa.Table]:
    """The rows of ``table`` by the partition directory the writer puts them in."""
    if not partition_keys:
        return {"": table}
    columns = {}
    for name in partition_keys:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column
    rows = pa.table({**columns, "__ktk_row": pa.array(np.arange(table.num_rows))})
    grouped = rows.group_by(list(partition_keys), use_threads=False).aggregate(
        [("__ktk_row", "list")]
    )
    values = [grouped.column(name).to_pylist() for name in partition_keys]
    row_lists = grouped.column("__ktk_row_list").combine_chunks()
    out = {}
    for i in range(grouped.num_rows):
        raw = [keys.value_to_string(column[i]) for column in values]
        out[keys.partition_directory(list(partition_keys), raw)] = table.take(row_lists[i].values)
    return out


def _without_matches(
    store: Store,
    meta: DatasetMetadata,
    task: FileTask,
    columns: Collection[str] | None,
    mask_of: Mask,
) -> tuple[pa.Table, int]:
    """The file's rows (with partition columns) ``mask_of`` does not select; how many it does.

    Only the ``columns`` the mask needs are read first: a file that turns out
    to hold no affected row (or only affected rows) is not read further.
    """
    path = store.path(task.key)
    try:
        with store.arrow_filesystem().open_input_file(path) as source:
            parquet = pq.ParquetFile(source, pre_buffer=store.is_remote)
            stored = parquet.schema_arrow.names
            wanted = stored if columns is None else [n for n in stored if n in columns]
            probe = _with_partitions(parquet.read(columns=wanted), meta, task)
            mask = mask_of(probe)
            matched = int(pc.sum(mask).as_py() or 0)
            if matched in (0, probe.num_rows):  # nothing or everything goes: no more to read
                return probe.slice(0, 0), matched
            rest = [n for n in stored if n not in wanted]
            full = parquet.read(columns=rest) if rest else None
    except FileNotFoundError as exc:
        raise StoreError(
            f"data file {task.key!r} is missing from {store.url!r}; "
            f"{committer.check_hint(store, meta.uuid)}"
        ) from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(
            f"reading data file {task.key!r} from {store.url!r} failed ({exc}); retry, or "
            f"{committer.check_hint(store, meta.uuid)}"
        ) from exc
    table = probe
    if full is not None:
        for name in full.column_names:
            table = table.append_column(full.schema.field(name), full.column(name))
    return table.filter(pc.invert(mask)), matched


def _with_partitions(table: pa.Table, meta: DatasetMetadata, task: FileTask) -> pa.Table:
    """Add the partition columns, constant per file, that the file does not store."""
    assert meta.schema is not None
    for column in meta.partition_keys:
        if column in table.column_names:
            continue
        value_type = plain_type(meta.schema.field(column).type)
        value = task.partition_values.get(column)
        scalar = pa.scalar(value, type=value_type)
        table = table.append_column(pa.field(column, value_type), pa.repeat(scalar, table.num_rows))
    return table


def _keep_expression(scan_filter: ScanFilter) -> pc.Expression | None:
    """The rows a delete matches, null counting as no match; ``None``: every row."""
    if scan_filter.expression is None:
        return None
    return pc.coalesce(scan_filter.expression, pa.scalar(False))


def _delete_mask(scan_filter: ScanFilter, match: pc.Expression, exact: bool) -> Mask:
    """How a delete finds its rows in a file: a key lookup for ``col in (...)``, else Arrow.

    The lookup only for a predicate that is exactly the filter (``exact``).
    """
    pred = scan_filter.predicate
    if pred is not None and len(pred.clauses) == 1 and len(pred.clauses[0]) == 1 and exact:
        term = pred.clauses[0][0]
        values = term.value if term.op == "in" else {term.value} if term.op == "==" else None
        if values and None not in values and term.type is not None:
            wanted = pa.table({term.column: pa.array(list(values), type=term.type)})
            if pa.types.is_integer(term.type):
                return _key_mask(wanted)

    def mask(table: pa.Table) -> pa.Array:
        marked = table.append_column("__ktk_row", pa.array(np.arange(table.num_rows)))
        hit = marked.filter(match).column("__ktk_row").to_numpy()
        out = np.zeros(table.num_rows, dtype=bool)
        out[hit] = True
        return pa.array(out)

    return mask


def _key_mask(keys_table: pa.Table) -> Mask:
    """Which rows of a table have a key in ``keys_table`` (built once, used per file)."""
    names = keys_table.column_names
    if len(names) > 1:

        def joined(table: pa.Table) -> pa.Array:
            probe = table.select(names).append_column(
                "__ktk_row", pa.array(np.arange(table.num_rows))
            )
            hit = probe.join(keys_table, keys=names, join_type="left semi").column("__ktk_row")
            out = np.zeros(table.num_rows, dtype=bool)
            out[hit.to_numpy()] = True
            return pa.array(out)

        return joined
    name = names[0]
    wanted = _plain(keys_table.column(0)).combine_chunks()
    if pa.types.is_integer(wanted.type):
        # a sorted array and a binary search per row: pc.is_in would hash every key per file
        ordered = np.sort(wanted.to_numpy())

        def searched(table: pa.Table) -> pa.Array:
            column = _plain(table.column(name))
            values = pc.fill_null(column, 0).to_numpy()
            at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
            hit = ordered[at] == values
            if column.null_count:
                hit &= pc.is_valid(column).to_numpy(zero_copy_only=False)
            return pa.array(hit)

        return searched

    def hashed(table: pa.Table) -> pa.Array:
        column = _plain(table.column(name))
        return pc.fill_null(pc.is_in(column, value_set=wanted), False)

    return hashed


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


# -- input ----------------------------------------------------------------------


def check_key_columns(on: Sequence[str] | str) -> list[str]:
    """The key column names of ``on=`` (a name or a list of distinct names)."""
    columns = [on] if isinstance(on, str) else list(on) if isinstance(on, Sequence) else None
    if not columns or not all(isinstance(c, str) for c in columns):
        raise InvalidArgumentError(
            f"upsert needs on= naming the key column(s), e.g. on='id' or on=['a', 'b']; "
            f"got on={on!r}"
        )
    if len(set(columns)) != len(columns):
        raise InvalidArgumentError(f"upsert key on={columns!r} lists a column twice")
    return columns


def _input_table(
    data: DataLike, key_columns: Sequence[str], base: DatasetMetadata
) -> pa.Table | None:
    """``data`` as one table in the dataset's schema; ``None`` when it has no rows."""
    parts = [t for t in iter_tables(data)]
    missing_keys = sorted({c for t in parts for c in key_columns if c not in t.column_names})
    if missing_keys:
        raise InvalidArgumentError(
            f"upsert key columns {missing_keys} are missing from the data; the data has "
            f"columns {parts[0].column_names if parts else []}"
        )
    parts = [t for t in parts if t.num_rows]
    if not parts:
        return None
    check_not_null(parts, key_columns)
    assert base.schema is not None
    conformed = [conform(_drop_pandas_index(t), base.schema) for t in parts]
    return pa.concat_tables(conformed).combine_chunks()


def _drop_pandas_index(table: pa.Table) -> pa.Table:
    names = [n for n in table.column_names if n.startswith("__index_level_")]
    return table.drop_columns(names) if names else table


def check_not_null(parts: Sequence[pa.Table], key_columns: Sequence[str], where: str = "") -> None:
    """Keys must be non-null: a null key names no stored row (checked before any cast)."""
    offset = 0
    for part in parts:
        for column in key_columns:
            nulls = part.column(column).null_count
            if nulls:
                first = offset + pc.index(pc.is_null(part.column(column)), True).as_py()
                raise InvalidArgumentError(
                    f"upsert key column {column!r} has {nulls} null values (first at row "
                    f"{first}{where}); keys must be non-null"
                )
        offset += part.num_rows


def check_unique_keys(table: pa.Table, key_columns: Sequence[str]) -> None:
    """Keys must be unique in the input: each row replaces the stored rows of its key."""
    counted = (
        table.select(list(key_columns)).group_by(list(key_columns)).aggregate([([], "count_all")])
    )
    duplicated = counted.filter(pc.greater(counted.column("count_all"), 1))
    if duplicated.num_rows:
        example = {c: duplicated.column(c)[0].as_py() for c in key_columns}
        raise InvalidArgumentError(
            f"upsert data holds {duplicated.num_rows} duplicate keys on {list(key_columns)}, "
            f"e.g. {example} ({duplicated.column('count_all')[0].as_py()} rows); keys must be "
            "unique in the data"
        )


def _key_filter(keys_table: pa.Table) -> list[list[tuple[str, str, Any]]]:
    """A DNF that holds for every stored row with one of the keys (and prunes files)."""
    clause = []
    for column in keys_table.column_names:
        values = keys_table.column(column)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        clause.append((column, "in", pc.unique(values).to_pylist()))
    return [clause]
