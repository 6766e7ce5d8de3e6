"""kartothek's ``dask.delayed`` API (``plateau.io.dask.delayed``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Reads are planned on the client (pruned by partition values
and secondary indices); writes run one task per input and commit ONCE,
atomically, when the returned object is computed.

Row-level changes (``delete_rows__delayed``, and the upsert of
``update_dataset_from_ddf(..., upsert_on=)``) rewrite each stored file that
holds an affected row in a task of its own (one file in memory per task)
and commit once, through the same conflict rule as ``ka.delete_rows`` /
``ka.upsert`` (``docs/changes.md``), only if every task succeeded;
otherwise every file they wrote is deleted.

Needs ``pip install 'ktk-arrow[dask]'``.
"""

from __future__ import annotations

import functools
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from ... import commit, rows
from ..._optional import import_optional
from ...commit import Snapshot
from ...errors import DatasetNotFoundError, InvalidArgumentError
from ...planning import FileTask, ScanFilter
from ...spec import index as spec_index
from ...spec.metadata import DatasetMetadata
from ...storage import Store, StoreLike
from ...write import WriterSpec
from .. import _common, _distributed
from .._distributed import DistributedWrite, PartResult, WriteGraph
from ..eager import _check_format_args, new_uuid, update_table

dask = import_optional("dask", extra="dask")
dask_delayed = import_optional("dask.delayed", extra="dask")

__all__ = [
    "delete_dataset__delayed",
    "delete_rows__delayed",
    "garbage_collect_dataset__delayed",
    "read_dataset_as_delayed",
    "read_table_as_delayed",
    "store_delayed_as_dataset",
    "update_dataset_from_delayed",
]


def read_dataset_as_delayed(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dispatch_by: Sequence[str] | None = None,
) -> list[Any]:
    """One ``Delayed`` DataFrame per file (or per ``dispatch_by`` group).

    Files are pruned by ``predicates`` before the list is built.
    """
    plan = _distributed.plan_read(
        store,
        dataset_uuid,
        columns=columns,
        predicates=predicates,
        categoricals=categoricals,
        dates_as_object=dates_as_object,
        dispatch_by=dispatch_by,
        factory=factory,
    )
    read = dask.delayed(plan.reader, pure=False)
    return [read(part, dask_key_name=f"read-ktk-{uuidlib.uuid4().hex}") for part in plan.parts]


def read_table_as_delayed(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    table: str = "table",
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dispatch_by: Sequence[str] | None = None,
) -> list[Any]:
    """kartothek's :func:`read_dataset_as_delayed` with an explicit ``table``.

    ``table`` is the dataset's table name (or the default ``"table"``).
    """
    plan = _distributed.plan_read(
        store,
        dataset_uuid,
        columns=columns,
        predicates=predicates,
        categoricals=categoricals,
        dates_as_object=dates_as_object,
        dispatch_by=dispatch_by,
        factory=factory,
        table=table,
    )
    read = dask.delayed(plan.reader, pure=False)
    return [read(part, dask_key_name=f"read-ktk-{uuidlib.uuid4().hex}") for part in plan.parts]


def store_delayed_as_dataset(
    delayed_tasks: Sequence[Any],
    store: StoreLike,
    dataset_uuid: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    df_serializer: Any = None,
    overwrite: bool = False,
    metadata_merger: Callable[..., Any] | None = None,
    metadata_version: int = 4,
    partition_on: Sequence[str] | None = None,
    metadata_storage_format: str = "json",
    table_name: str = "table",
    secondary_indices: Sequence[str] | None = None,
) -> WriteGraph:
    """A lazy write of ``Delayed`` DataFrames as a new dataset; compute it to commit.

    Each delayed object (a DataFrame, a list of them, or ``None``) is written
    by its own task.  ``dataset_uuid=None`` picks a fresh uuid.
    """
    _check_format_args(metadata_storage_format, metadata_version)
    job = _distributed.prepare(
        store,
        new_uuid(dataset_uuid),
        mode="overwrite" if overwrite else "create",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        metadata=metadata,
        table=update_table(table_name),
    )
    return _write_graph(delayed_tasks, job, None)


def update_dataset_from_delayed(
    delayed_tasks: Sequence[Any],
    store: StoreLike = None,
    dataset_uuid: str | None = None,
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    df_serializer: Any = None,
    metadata_merger: Callable[..., Any] | None = None,
    default_metadata_version: int = 4,
    partition_on: Sequence[str] | None = None,
    sort_partitions_by: Sequence[str] | str | None = None,
    secondary_indices: Sequence[str] | None = None,
    factory: Any = None,
    table_name: str = "table",
) -> WriteGraph:
    """A lazy append of ``Delayed`` DataFrames (the dataset is created if missing).

    With ``delete_scope`` the matched partitions are replaced in the same
    commit; an empty ``delayed_tasks`` only deletes them.
    """
    _check_format_args("json", default_metadata_version)
    if factory is not None:
        raise InvalidArgumentError(
            "factory= (a plateau DatasetFactory) is not supported; pass store= and dataset_uuid="
        )
    job = _distributed.prepare(
        store,
        dataset_uuid,
        mode="overwrite" if delete_scope is not None else "append",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        delete_scope=delete_scope,
        metadata=metadata,
        allow_empty=True,
        table=update_table(table_name),
    )
    return _write_graph(delayed_tasks, job, sort_partitions_by)


def _write_graph(
    delayed_tasks: Sequence[Any],
    job: _distributed.DistributedWrite,
    sort_partitions_by: Sequence[str] | str | None,
) -> WriteGraph:
    if isinstance(delayed_tasks, dask_delayed.Delayed):
        raise InvalidArgumentError(
            "delayed_tasks must be a list of Delayed objects, got a single Delayed; "
            "wrap it in a list"
        )
    task = job.task(sort_partitions_by)
    write = dask.delayed(_distributed.write_part, pure=False)
    parts = [write(item, task) for item in delayed_tasks]
    return WriteGraph(parts, job)


def delete_dataset__delayed(
    dataset_uuid: str | None = None, store: StoreLike = None, factory: Any = None
) -> Any:
    """A ``Delayed`` that deletes the dataset: metadata first, then every file."""
    resolved = _common.store_of(store, factory)
    uuid = _required_uuid(dataset_uuid)
    if commit.load_latest(resolved, uuid) is None:
        raise DatasetNotFoundError(f"dataset {uuid!r} does not exist in {resolved.url!r}")
    return dask.delayed(commit.delete_dataset, pure=False)(resolved, uuid)


def garbage_collect_dataset__delayed(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    chunk_size: int = 100,
    factory: Any = None,
    grace_period: timedelta = commit.DEFAULT_GC_GRACE,
    force: bool = False,
) -> list[Any]:
    """A list with one ``Delayed`` that deletes files no retained snapshot references.

    Files younger than ``grace_period`` are kept (they may belong to a commit
    in flight; under a minute needs ``force=True``).  Computing it returns the
    deleted keys.
    """
    resolved = _common.store_of(store, factory)
    uuid = _required_uuid(dataset_uuid)
    commit.load(resolved, uuid)  # DatasetNotFoundError now, not at compute time
    return [dask.delayed(_garbage_collect, pure=False)(resolved, uuid, grace_period, force)]


def _garbage_collect(
    store: Any, dataset_uuid: str, grace_period: timedelta, force: bool
) -> list[str]:
    return commit.garbage_collect(store, dataset_uuid, grace_period=grace_period, force=force)


def _required_uuid(dataset_uuid: str | None) -> str:
    if dataset_uuid is None:
        raise InvalidArgumentError("dataset_uuid is required")
    return dataset_uuid


# -- row-level changes -------------------------------------------------------------


def delete_rows__delayed(
    store: StoreLike,
    dataset_uuid: str,
    filter: Any = None,
    *,
    all_rows: bool = False,
) -> RowChangeGraph:
    """A lazy :func:`ktk_arrow.delete_rows`: one task per file that may hold a matching row.

    The files are planned now (partition values, secondary indices,
    statistics), so bad input raises here and nothing is written.  Each
    task reads one file and writes it again without the matching rows;
    computing the result commits them once (a ``delete_rows`` snapshot,
    returned, with ``rows_removed``) if every task succeeded, and deletes
    every file written otherwise.  A concurrent commit is judged by
    ``ka.delete_rows``'s conflict rule against the state planned on.  A
    filter on partition values alone (or ``all_rows=True``) drops whole
    files without a task.
    """
    uuid = _required_uuid(dataset_uuid)
    rows.check_delete_args(uuid, filter, all_rows)
    job = _distributed.prepare(_common.store_of(store), uuid, mode="append")
    base = rows.existing(job.prepared, uuid)
    planned = rows.plan_delete(job.prepared.store, base, filter)
    if planned.matcher is None:
        parts: list[Any] = []
        whole = planned.tasks
    else:
        parts, whole = rewrite_tasks(job, base, planned.matcher, planned.tasks), []
    finish = functools.partial(_finish_delete, job, planned.plan_filter, whole)
    return RowChangeGraph(parts, job, finish)


def _finish_delete(
    job: DistributedWrite,
    plan_filter: ScanFilter,
    whole: Sequence[FileTask],
    results: Sequence[Rewritten],
    run: Runner,
) -> Snapshot:
    return commit_row_change(job, "delete_rows", [], results, plan_filter, 0, whole=whole)


#: computes a list of Dask tasks; the results in order
Runner = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class RewriteJob:
    """What every rewrite task of one change shares: one graph key, shipped once."""

    store: Store
    #: the dataset's state without its file list (each task names its file)
    meta: DatasetMetadata
    writer: WriterSpec
    matcher: rows.Matcher


@dataclass
class Rewritten(PartResult):
    """What one rewrite task wrote, and how many rows of its file (``label``) matched."""

    label: str = ""
    matched: int = 0


def rewrite_tasks(
    job: DistributedWrite, base: DatasetMetadata, matcher: rows.Matcher, tasks: Sequence[FileTask]
) -> list[Any]:
    """One ``Delayed`` per stored file: :func:`rewrite_file` of it."""
    shared = dask.delayed(
        RewriteJob(
            job.prepared.store,
            _distributed._slim(base),
            job.prepared.writer_spec(name_prefix=f"{job.write_id}-"),
            matcher,
        ),
        name=f"ktk-rewrite-job-{job.write_id}-{uuidlib.uuid4().hex[:8]}",
        traverse=False,
    )
    rewrite = dask.delayed(rewrite_file, pure=False)
    return [rewrite(shared, task) for task in tasks]


def rewrite_file(job: RewriteJob, task: FileTask) -> Rewritten:
    """Rewrite one stored file without its affected rows; never raises (failures are returned)."""
    writer = job.writer.open()
    try:
        matched = rows.rewrite_file(job.store, job.meta, writer, task, job.matcher)
        return Rewritten(
            writer.entries, writer.index_delta, writer.schema, label=task.label, matched=matched
        )
    except Exception as exc:
        writer.abort()
        return Rewritten(error=_distributed._portable(exc), label=task.label)
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.release()  # the driver protects the files until its commit ends


def commit_row_change(
    job: DistributedWrite,
    operation: str,
    added: Sequence[PartResult],
    rewritten: Sequence[Rewritten],
    scan_filter: ScanFilter,
    rows_added: int,
    *,
    whole: Sequence[FileTask] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Snapshot:
    """One commit of what the tasks wrote, with ``rows``' conflict rule; or delete it all.

    ``added``: new rows' files (an upsert's data); ``rewritten``: the stored
    files rewritten; ``whole``: stored files dropped without being read.
    Raises the first failure of any task, after deleting every file written.
    """
    prepared = job.prepared
    store = prepared.store
    base = prepared.base
    assert base is not None
    results = [*added, *rewritten]
    entries = [e for r in results for e in r.entries]
    written = [e.key for e in entries]
    commit.IN_FLIGHT.add(store, written)
    try:
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise failed[0]
        touched = [r.label for r in rewritten if r.matched] + [t.label for t in whole]
        removed = sum(r.matched for r in rewritten) + rows.whole_file_rows(store, whole)
        if not touched and not entries:
            return rows.unchanged(base, operation)
        change = rows.change_of(
            operation,
            store,
            base,
            entries,
            spec_index.merge_columns(r.index_delta for r in results),
            prepared.plan.schema,
            touched,
            scan_filter,
            (rows_added, removed),
        )
        if metadata:
            change = replace(change, user_metadata=dict(metadata))
        snapshot = commit.commit(store, prepared.dataset_uuid, change, base=base)
    except BaseException as exc:
        if commit.may_discard(exc):  # never the files of a commit that may be in
            _distributed._delete(store, written)
        raise
    finally:
        commit.IN_FLIGHT.discard(store, written)
    prepared.compact_touched(entries, snapshot)
    return snapshot


def _finish_task(results: list[Any], finish: Any) -> Any:
    return finish.value(results, _run_here)


def _run_here(parts: list[Any]) -> list[Any]:
    """Inside a task (graph mode): further tasks run in this one, one after another."""
    return list(dask.compute(*parts, scheduler="sync")) if parts else []


class RowChangeGraph(dask_delayed.Delayed):  # type: ignore[misc,name-defined]
    """A lazy row-level change; computing it commits once and returns what ``finish`` does.

    ``.compute()`` runs the tasks on the active scheduler (a
    ``distributed.Client`` if one is active), waits for all of them, and
    commits on this machine; if any failed, every file the change wrote is
    deleted and the first failure is raised.  As a plain Dask collection
    (``dask.compute(g)``, ``client.compute(g)``) the commit is the graph's
    final task, as for :class:`~ktk_arrow.io._distributed.WriteGraph`; work
    planned only once the tasks ran (an upsert's rewrites) then runs inside
    that final task, one file after another.
    """

    __slots__ = ("_finish", "_job", "_parts")

    def __init__(
        self,
        parts: list[Any],
        job: DistributedWrite,
        finish: Callable[[list[Any], Runner], Any],
    ) -> None:
        final = dask.delayed(_finish_task, pure=False)(parts, _distributed._Opaque(finish))
        super().__init__(final.key, final.dask)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_job", job)
        object.__setattr__(self, "_finish", finish)

    def compute(self, **kwargs: Any) -> Any:
        job: DistributedWrite = self._job

        def run(parts: list[Any]) -> list[Any]:
            return _distributed.compute_all(parts, job, **kwargs)

        return self._finish(run(self._parts), run)

    def __repr__(self) -> str:
        return (
            f"<RowChangeGraph dataset={self._job.prepared.dataset_uuid!r} tasks={len(self._parts)}>"
        )
