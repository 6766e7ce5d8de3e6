"""kartothek's iterator API (``kartothek.io.iter`` / ``plateau.io.iter``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Input generators are streamed: each DataFrame is written as soon
as it arrives and dropped, so the input never has to fit in memory.  Nothing
is visible before the single commit at the end; if the generator (or a
write) fails, the files written so far are deleted again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import commit, write
from ..spec.metadata import DatasetMetadata
from ..storage import StoreLike
from . import _common
from .eager import _check_format_args, _uuid, frames, new_uuid, sorted_frames, update_table

__all__ = [
    "read_dataset_as_dataframes__iterator",
    "store_dataframes_as_dataset__iter",
    "update_dataset_from_dataframes__iter",
]


def read_dataset_as_dataframes__iterator(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dispatch_by: Sequence[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield one DataFrame per file (or per ``dispatch_by`` group), reading one at a time.

    The dataset is opened and planned and the arguments are checked when this
    is called, not on the first ``next()``; files are read lazily.  A file
    (group) whose rows ``predicates`` filter out gives an empty DataFrame, as
    in plateau.
    """
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    cols = _common.column_list(columns, ds.metadata.table)
    _common.check_columns(ds, cols, "columns")
    _common.check_columns(ds, list(categoricals or []), "categoricals")
    # grouped now: dispatch_by is checked before the first next(), and an index it
    # names is read once
    groups = _common.group_tasks(ds, dispatch_by)
    return _common.read_frames(
        ds,
        columns=cols,
        categoricals=categoricals,
        dates_as_object=dates_as_object,
        groups=groups,
    )


def store_dataframes_as_dataset__iter(
    df_generator: Iterable[pd.DataFrame],
    store: StoreLike,
    dataset_uuid: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    partition_on: Sequence[str] | None = None,
    df_serializer: Any = None,
    overwrite: bool = False,
    metadata_storage_format: str = "json",
    metadata_version: int = 4,
    secondary_indices: Sequence[str] | None = None,
    table_name: str = "table",
) -> DatasetMetadata:
    """Create a dataset from a generator of DataFrames, streamed, as one commit.

    ``dataset_uuid=None`` picks a fresh uuid (see the returned metadata's ``uuid``).
    """
    _check_format_args(metadata_storage_format, metadata_version)
    resolved = _common.store_of(store)
    uuid = new_uuid(dataset_uuid)
    snap = write.write_dataset(
        frames(df_generator),
        resolved,
        uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if overwrite else "create",
        metadata=metadata,
        table=update_table(table_name),
    )
    return commit.load_version(resolved, uuid, snap.version)


def update_dataset_from_dataframes__iter(
    df_generator: Iterable[pd.DataFrame],
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
) -> DatasetMetadata:
    """Append a generator of DataFrames, streamed, as one commit.

    With ``delete_scope``, the matched partitions are replaced atomically by
    the new data.  The dataset is created if it does not exist.
    """
    _check_format_args("json", default_metadata_version)
    resolved = _common.store_of(store, factory)
    uuid = _uuid(dataset_uuid)
    data: Iterable[Any] = frames(df_generator)
    if sort_partitions_by is not None:
        data = sorted_frames(data, sort_partitions_by)
    snap = write.write_dataset(
        data,
        resolved,
        uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if delete_scope is not None else "append",
        delete_scope=delete_scope,
        metadata=metadata,
        allow_empty=True,
        table=update_table(table_name),
    )
    return commit.load_version(resolved, uuid, snap.version)
