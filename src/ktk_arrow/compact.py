"""Compaction: merge the small files of a partition into few large ones, as one commit.

Appends leave one file per partition per write, so a dataset fed by many
small writes ends up with many small files, and every read pays a request
and a footer per file.  :func:`compact` rewrites each partition's small
files as ``ceil(rows / target_rows_per_file)`` files and swaps them in with
one commit.  The old files stay on storage (time travel still reads them)
until garbage collection removes them; compaction itself deletes nothing
but its own new files when its commit provably failed (all under
``<uuid>/``: files the dataset references under another dataset's prefix
are read and rewritten into this one, never deleted).

The snapshot reports the new files as ``files_added`` and the merged ones as
``files_removed``, and ``rows_added == rows_removed == 0``: no row was added
or removed.

Auto-compaction (the ``auto_compact`` dataset setting, :class:`~ktk_arrow.write.AutoCompact`):
after a write, :func:`auto_compact` compacts the partition directories the
write touched that hold more than ``min_files`` small files, as a commit of
its own.  It plans only those partitions, so it costs O(touched partitions).

Concurrency: the commit removes exactly the labels that were read and
depends on them.  A concurrent append adds new labels, so it neither
conflicts nor gets lost; a concurrent delete or overwrite of a compacted
file makes the commit raise ``CommitConflictError`` (and the new files are
deleted again).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import arrow, planning
from . import commit as committer
from .commit import Change, Snapshot
from .errors import InvalidArgumentError
from .spec import predicates
from .spec.metadata import DatasetMetadata, FileEntry
from .spec.schema import TimestampUnit
from .storage import Store, StoreLike, resolve_store
from .write import (
    DEFAULT_MAX_ROWS_PER_FILE,
    DEFAULT_ROW_GROUP_SIZE,
    AutoCompact,
    FileWriter,
    WritePlan,
)

#: called after each rewritten partition with (partitions done, partitions to do)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CompactionGroup:
    """The small files of one partition directory that will be merged."""

    partition_dir: str
    files: tuple[FileEntry, ...]
    rows: int | None

    @property
    def labels(self) -> list[str]:
        return [f.label for f in self.files]


def compact(
    store: StoreLike,
    dataset_uuid: str,
    *,
    partitions: Any = None,
    target_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    storage_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Snapshot:
    """Merge small files per partition and commit the result as one ``"compact"`` snapshot.

    ``partitions`` restricts the work to the partitions matching a kartothek
    DNF predicate (or Arrow expression) on partition columns.  Files with at
    least ``target_rows_per_file`` rows are left alone.  Returns the new
    snapshot, or the current one if there was nothing to compact.
    """
    return run_compaction(
        resolve_store(store, storage_options),
        dataset_uuid,
        partitions=partitions,
        target_rows_per_file=target_rows_per_file,
        progress=progress,
    ).snapshot


@dataclass(frozen=True)
class Compaction:
    """What :func:`run_compaction` planned, and the snapshot it committed (if any)."""

    #: the state the compaction was planned on
    before: DatasetMetadata
    groups: tuple[CompactionGroup, ...]
    #: the new snapshot, or ``before``'s when nothing was committed
    snapshot: Snapshot
    committed: bool


def run_compaction(
    store: Store,
    dataset_uuid: str,
    *,
    partitions: Any = None,
    target_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> Compaction:
    """:func:`compact` on a resolved store, reporting the plan (``dry_run``: only the plan)."""
    if (
        not isinstance(target_rows_per_file, int)
        or isinstance(target_rows_per_file, bool)
        or target_rows_per_file <= 0
    ):
        raise InvalidArgumentError(
            f"target_rows_per_file must be a positive int, got {target_rows_per_file!r}"
        )
    base = committer.load(store, dataset_uuid)
    groups = plan_compaction(base, partitions=partitions, target_rows_per_file=target_rows_per_file)
    current = Compaction(base, tuple(groups), Snapshot.of(base.commit), committed=False)
    if not groups or dry_run:
        return current
    snapshot = _execute(store, base, groups, target_rows_per_file, progress)
    return replace(current, snapshot=snapshot, committed=True)


def _execute(
    store: Store,
    base: DatasetMetadata,
    groups: Sequence[CompactionGroup],
    target_rows_per_file: int,
    progress: Progress | None,
) -> Snapshot:
    """Rewrite ``groups`` and commit; the new files are deleted if the commit provably failed."""
    writer = _rewrite(store, base, groups, target_rows_per_file, progress)
    try:
        return _commit(store, base, groups, writer)
    except BaseException as exc:
        if committer.may_discard(exc):  # never the files of a commit that may be in
            writer.abort()
        raise
    finally:
        writer.release()


def auto_compact(
    store: Store,
    dataset_uuid: str,
    partition_dirs: Collection[str],
    *,
    policy: AutoCompact | None = None,
    known: DatasetMetadata | None = None,
    added: Sequence[FileEntry] = (),
) -> Compaction | None:
    """Compact the ``partition_dirs`` (a write's) holding more than ``min_files`` small files.

    Given the write's ``policy``, the state it read (``known``) and the files
    it ``added``, returns ``None`` without a request when those show no
    directory over the limit, so an append that compacts nothing costs
    nothing (concurrent appends may be missed: a later write sees them).
    Otherwise the latest state is read, and its ``auto_compact`` setting is
    the policy (``None`` is returned when it is off there: a concurrent writer
    may have turned it off).  Files of at least ``target_size`` bytes are left
    alone; the small files of each chosen directory are merged into files of
    about ``target_size`` bytes, as one ``"compact"`` commit with compaction's
    conflict rules.  Raises what compaction raises.
    """
    if not partition_dirs:
        return None
    if policy is not None:
        files = [*(_selected_files(known, None, partition_dirs) if known else ()), *added]
        small = Counter(f.partition_dir for f in files if _is_small(f, policy.target_size))
        if max(small.values(), default=0) <= policy.min_files:
            return None
    base = committer.load(store, dataset_uuid)
    policy = AutoCompact.of_setting(base.settings)
    if policy is None:
        return None
    groups = plan_compaction(
        base,
        partition_dirs=partition_dirs,
        target_rows_per_file=DEFAULT_MAX_ROWS_PER_FILE,
        target_size=policy.target_size,
    )
    groups = [g for g in groups if len(g.files) > policy.min_files]
    rows_per_file = _rows_for_size(groups, policy.target_size)
    groups = [
        g for g in groups if g.rows is None or math.ceil(g.rows / rows_per_file) < len(g.files)
    ]
    current = Compaction(base, tuple(groups), Snapshot.of(base.commit), committed=False)
    if not groups:
        return current
    snapshot = _execute(store, base, groups, rows_per_file, None)
    return replace(current, snapshot=snapshot, committed=True)


def _is_small(entry: FileEntry, target_size: int | None, target_rows: int | None = None) -> bool:
    """Whether a file is worth merging: under both limits (an unknown size or count is)."""
    return (target_rows is None or entry.rows is None or entry.rows < target_rows) and (
        target_size is None or entry.size is None or entry.size < target_size
    )


def _rows_for_size(groups: Sequence[CompactionGroup], target_size: int) -> int:
    """Rows per merged file for files of about ``target_size`` bytes, from the files' density.

    Small files carry a footer each, so the estimate errs toward smaller
    merged files; it is capped at the writer's default rows per file.
    """
    sizes = [(f.size, f.rows) for g in groups for f in g.files]
    known = [(size, rows) for size, rows in sizes if size and rows is not None]
    total_bytes = sum(size for size, _ in known)
    total_rows = sum(rows for _, rows in known)
    if not total_bytes or not total_rows:
        return DEFAULT_MAX_ROWS_PER_FILE
    return max(1, min(DEFAULT_MAX_ROWS_PER_FILE, target_size * total_rows // total_bytes))


def plan_compaction(
    meta: DatasetMetadata,
    *,
    partitions: Any = None,
    target_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    partition_dirs: Collection[str] | None = None,
    target_size: int | None = None,
) -> list[CompactionGroup]:
    """The partitions worth compacting: merging their small files yields fewer files.

    ``partitions`` selects partitions by a predicate on partition columns,
    ``partition_dirs`` by directory (``"p=a"``; ``""`` for an unpartitioned
    dataset), as a write names those it touched: both become a partition
    filter, so only the selected partitions are planned.  A file is small
    when it has fewer than ``target_rows_per_file`` rows (and, given
    ``target_size``, fewer bytes than that).

    Files keep the order the metadata lists them in (commit order), so merged
    files hold the rows in the order they were written.
    """
    by_dir: dict[str, list[FileEntry]] = {}
    for entry in _selected_files(meta, partitions, partition_dirs):
        if _is_small(entry, target_size, target_rows_per_file):
            by_dir.setdefault(entry.partition_dir, []).append(entry)
    groups = []
    for directory, entries in sorted(by_dir.items()):
        if len(entries) < 2:
            continue
        rows = [e.rows for e in entries]
        total = None if any(r is None for r in rows) else sum(r or 0 for r in rows)
        if total is not None and math.ceil(total / target_rows_per_file) >= len(entries):
            continue  # merging would not reduce the file count
        groups.append(CompactionGroup(directory, tuple(entries), total))
    return groups


def _selected_files(
    meta: DatasetMetadata, partitions: Any, partition_dirs: Collection[str] | None = None
) -> list[FileEntry]:
    """The files of the selected partitions, in metadata order."""
    if partitions is None and (partition_dirs is None or not meta.partition_keys):
        if partition_dirs is not None and "" not in partition_dirs:
            return []
        return list(meta.files.values())
    if meta.schema is None:
        return []
    scan_filter = planning.make_filter(partitions, meta.schema)
    if scan_filter.predicate is not None:
        others = sorted(predicates.columns(scan_filter.predicate) - set(meta.partition_keys))
        if others:
            raise InvalidArgumentError(
                f"partitions= may only name partition columns {list(meta.partition_keys)}, "
                f"but names {others}; compaction works on whole partitions"
            )
    if partition_dirs is not None:
        if not partition_dirs:
            return []
        scan_filter = planning.combine(scan_filter, _dirs_filter(meta, partition_dirs))
    # no index loader: only partition values prune, so whole partitions are kept
    # entries from the tasks: looking each label up could read every manifest segment
    files = [FileEntry(t.label, t.key, t.size, t.rows) for t in planning.plan(meta, scan_filter)]
    if partition_dirs is not None:  # the filter may match more (values of another spelling)
        files = [f for f in files if f.partition_dir in partition_dirs]
    return files


def _dirs_filter(meta: DatasetMetadata, partition_dirs: Collection[str]) -> planning.ScanFilter:
    """``col == value AND ...`` per directory, OR-ed: a partition filter planning can prune by."""
    assert meta.schema is not None
    if not meta.partition_keys:
        return planning.NO_FILTER
    clauses = []
    for directory in sorted(partition_dirs):
        values = meta.partition_values(f"{directory}/_")
        clauses.append(
            tuple(
                predicates.Term(
                    column, "==", values[column], arrow.plain_type(meta.schema.field(column).type)
                )
                for column in meta.partition_keys
            )
        )
    pred = predicates.Predicate(tuple(clauses))
    return planning.ScanFilter(pred, predicates.to_expression(pred))


def _read_group(store: Store, meta: DatasetMetadata, group: CompactionGroup) -> Iterator[pa.Table]:
    """Each file of ``group`` with its partition columns restored."""
    assert meta.schema is not None
    fs = store.arrow_filesystem()
    for entry in group.files:
        try:
            table = pq.read_table(store.path(entry.key), filesystem=fs)
        except arrow.READ_ERRORS as exc:
            task = planning.FileTask(entry.label, entry.key, entry.size, entry.rows)
            raise arrow.read_error(store, meta, [task], exc) from exc
        values = meta.partition_values(entry.label)
        for column in meta.partition_keys:
            if column in table.column_names:  # some old writers kept partition columns
                table = table.drop_columns([column])
            arrow_type = arrow.plain_type(meta.schema.field(column).type)
            value = values.get(column)
            array = (
                pa.nulls(table.num_rows, arrow_type)
                if value is None
                else pa.array([value] * table.num_rows, type=arrow_type)
            )
            table = table.append_column(column, array)
        yield table


def _rewrite(
    store: Store,
    base: DatasetMetadata,
    groups: Sequence[CompactionGroup],
    target_rows_per_file: int,
    progress: Progress | None,
) -> FileWriter:
    """Write the merged files (not yet visible); the writer holds their entries."""
    assert base.schema is not None
    unit: TimestampUnit = (
        "ns"
        if any(pa.types.is_timestamp(f.type) and f.type.unit == "ns" for f in base.schema)
        else "us"
    )
    plan = WritePlan(
        partition_keys=base.partition_keys,
        indices=tuple(base.indices),
        schema=base.schema,
        unit=unit,
        base_version=base.version,
        table=base.table,  # the new files go beside the old ones
    )
    writer = FileWriter(
        store,
        base.uuid,
        plan,
        row_group_size=DEFAULT_ROW_GROUP_SIZE,
        max_rows_per_file=target_rows_per_file,
    )
    try:
        for done, group in enumerate(groups, 1):
            pending: list[pa.Table] = []
            pending_rows = 0
            for table in _read_group(store, base, group):
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= target_rows_per_file:
                    merged = pa.concat_tables(pending, promote_options="permissive")
                    full = (pending_rows // target_rows_per_file) * target_rows_per_file
                    writer.write(merged.slice(0, full))
                    pending = [merged.slice(full)]
                    pending_rows -= full
            if pending_rows:
                writer.write(pa.concat_tables(pending, promote_options="permissive"))
            if progress is not None:
                progress(done, len(groups))
    except BaseException:
        writer.abort()
        raise
    return writer


def _commit(
    store: Store,
    base: DatasetMetadata,
    groups: Sequence[CompactionGroup],
    writer: FileWriter,
) -> Snapshot:
    old = {label for group in groups for label in group.labels}
    change = Change(
        operation="compact",
        add=writer.entries,
        remove=lambda state: sorted(old & set(state.files)),
        # a concurrent delete of any compacted file changes this set: a conflict
        depends_on=lambda state: sorted(old & set(state.files)),
        read_version=base.version,
        index_delta=writer.index_delta,
        rewrite=True,  # the same rows in fewer files: none added, none removed
    )
    return committer.commit(store, base.uuid, change)
