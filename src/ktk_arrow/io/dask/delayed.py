"""kartothek's ``dask.delayed`` API (``plateau.io.dask.delayed``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Reads are planned on the client (pruned by partition values
and secondary indices); writes run one task per input and commit ONCE,
atomically, when the returned object is computed.

Needs ``pip install 'ktk-arrow[dask]'``.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ... import commit
from ..._optional import import_optional
from ...errors import DatasetNotFoundError, InvalidArgumentError
from ...storage import StoreLike
from .. import _common, _distributed
from .._distributed import WriteGraph
from ..eager import _check_format_args, new_uuid, update_table

dask = import_optional("dask", extra="dask")
dask_delayed = import_optional("dask.delayed", extra="dask")

__all__ = [
    "delete_dataset__delayed",
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
