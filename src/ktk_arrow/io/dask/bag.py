"""kartothek's ``dask.bag`` API (``plateau.io.dask.bag``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Reads are planned on the client (pruned by partition values
and secondary indices); writes run one task per bag partition and commit
ONCE, atomically, when the returned object is computed.

Needs ``pip install 'ktk-arrow[dask]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ... import commit, write
from ..._optional import import_optional
from ...errors import InvalidArgumentError
from ...spec import index as spec_index
from ...spec.metadata import DatasetMetadata, FileEntry
from ...storage import Store, StoreLike
from .. import _common, _distributed
from .._distributed import WriteGraph
from ..eager import _check_format_args, new_uuid, update_table

dask = import_optional("dask", extra="dask")
db = import_optional("dask.bag", extra="dask")

__all__ = [
    "build_dataset_indices__bag",
    "read_dataset_as_dataframe_bag",
    "store_bag_as_dataset",
]


def read_dataset_as_dataframe_bag(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dispatch_by: Sequence[str] | None = None,
    partition_size: int | None = None,
) -> Any:
    """A ``dask.bag.Bag`` of DataFrames: one per file (or per ``dispatch_by`` group).

    Files are pruned by ``predicates`` before the bag is built;
    ``partition_size`` DataFrames go into each bag partition.
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
    if not plan.parts:
        return db.from_sequence([], npartitions=1)
    return db.from_sequence(plan.parts, partition_size=partition_size).map(plan.reader)


def store_bag_as_dataset(
    bag: Any,
    store: StoreLike,
    dataset_uuid: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    df_serializer: Any = None,
    overwrite: bool = False,
    metadata_merger: Callable[..., Any] | None = None,
    metadata_version: int = 4,
    partition_on: Sequence[str] | None = None,
    metadata_storage_format: str = "json",
    secondary_indices: Sequence[str] | None = None,
    table_name: str = "table",
) -> WriteGraph:
    """A lazy write of a bag of DataFrames as a new dataset; compute it to commit.

    Every bag partition is written by its own task; ``dataset_uuid=None``
    picks a fresh uuid.
    """
    _check_format_args(metadata_storage_format, metadata_version)
    if not isinstance(bag, db.Bag):
        raise InvalidArgumentError(f"bag must be a dask.bag.Bag, got {type(bag).__name__}")
    job = _distributed.prepare(
        store,
        new_uuid(dataset_uuid),
        mode="overwrite" if overwrite else "create",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        metadata=metadata,
        table=update_table(table_name),
    )
    written = bag.map_partitions(_distributed.write_parts, job.task())
    return WriteGraph(list(written.to_delayed()), job)


def build_dataset_indices__bag(
    store: StoreLike,
    dataset_uuid: str | None,
    columns: Sequence[str],
    partition_size: int | None = None,
    factory: Any = None,
) -> Any:
    """A lazy build of secondary indices on ``columns`` over every file, as one commit.

    Files are read in parallel (``partition_size`` files per task, only the
    indexed columns); computing the result commits the indices and returns
    the dataset metadata.  A commit that changed the dataset in between is a
    ``CommitConflictError``: nothing is committed, retry.
    """
    resolved = _common.store_of(store, factory)
    if dataset_uuid is None:
        raise InvalidArgumentError("dataset_uuid is required")
    cols = [columns] if isinstance(columns, str) else list(columns)
    base = commit.load(resolved, dataset_uuid)
    write.check_index_columns(base, cols)
    entries = sorted(base.files.values(), key=lambda e: e.label)
    if not entries:
        return dask.delayed(_commit_indices, pure=False)([], resolved, base, cols)
    values = db.from_sequence(entries, partition_size=partition_size).map(
        _index_file, store=resolved, columns=cols
    )
    return values.reduction(
        list,
        _Flatten(resolved, base, cols),
        split_every=False,
    )


def _index_file(
    entry: FileEntry, store: Store, columns: list[str]
) -> tuple[str, dict[str, list[Any]]]:
    return entry.label, write.index_values(store, entry, columns)


class _Flatten:
    """The aggregation step: every file's values -> one commit."""

    def __init__(self, store: Store, base: DatasetMetadata, columns: list[str]) -> None:
        self.store = store
        self.base = base
        self.columns = columns

    def __call__(self, chunks: Sequence[list[Any]]) -> DatasetMetadata:
        found = [item for chunk in chunks for item in chunk]
        return _commit_indices(found, self.store, self.base, self.columns)


def _commit_indices(
    found: Sequence[tuple[str, Mapping[str, list[Any]]]],
    store: Store,
    base: DatasetMetadata,
    columns: list[str],
) -> DatasetMetadata:
    # Arrow-backed indices: a Python dict of ints would overflow on uint64 > 2**63 - 1
    full: dict[str, spec_index.IndexMap] = {c: spec_index.Index() for c in columns}
    for label, values in found:
        for column in columns:
            spec_index.add(full[column], values[column], label)
    snap = write.commit_indices(store, base, full)
    return commit.load_version(store, base.uuid, snap.version)
