"""kartothek's iterator API (``kartothek.io.iter`` / ``plateau.io.iter``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Input generators are streamed: each DataFrame is written as soon
as it arrives and dropped, so the input never has to fit in memory.  Nothing
is visible before the single commit at the end; if the generator (or a
write) fails, the files written so far are deleted again.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import commit, write
from ..errors import InvalidArgumentError
from ..spec.metadata import DatasetMetadata
from ..storage import StoreLike
from . import _common
from .eager import _check_format_args, _sorted, _uuid

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

    The dataset is opened and the arguments are checked when this is called,
    not on the first ``next()``; files are read lazily.  Files whose rows are
    all filtered out by ``predicates`` are skipped.
    """
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    cols = _common.column_list(columns)
    _common.check_columns(ds, cols, "columns")
    _common.check_columns(ds, list(categoricals or []), "categoricals")
    return _common.read_frames(
        ds,
        columns=cols,
        predicates=predicates,
        categoricals=categoricals,
        dates_as_object=dates_as_object,
        dispatch_by=dispatch_by,
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
    _check_format_args(metadata_storage_format, metadata_version, table_name)
    resolved = _common.store_of(store)
    uuid = dataset_uuid if dataset_uuid is not None else uuidlib.uuid4().hex
    snap = write.write_dataset(
        iter_frames(df_generator),
        resolved,
        uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if overwrite else "create",
        metadata=metadata,
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
    sort_partitions_by: str | None = None,
    secondary_indices: Sequence[str] | None = None,
    factory: Any = None,
    table_name: str = "table",
) -> DatasetMetadata:
    """Append a generator of DataFrames, streamed, as one commit.

    With ``delete_scope``, the matched partitions are replaced atomically by
    the new data.  The dataset is created if it does not exist.
    """
    _check_format_args("json", default_metadata_version, table_name)
    resolved = _common.store_of(store, factory)
    uuid = _uuid(dataset_uuid)
    frames: Iterable[Any] = iter_frames(df_generator)
    if sort_partitions_by is not None:
        frames = (_sorted(df, sort_partitions_by) for df in frames)
    snap = write.write_dataset(
        frames,
        resolved,
        uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if delete_scope is not None else "append",
        delete_scope=delete_scope,
        metadata=metadata,
        allow_empty=True,
    )
    return commit.load_version(resolved, uuid, snap.version)


def iter_frames(items: Any) -> Iterator[pd.DataFrame | pa.Table]:
    """kartothek's inputs, one at a time: DataFrames, ``{"table": df}`` dicts, lists, ``None``.

    Empty lists and ``None`` (kartothek's "no data" sentinel) yield nothing.
    """
    if items is None:
        return
    if isinstance(items, (pd.DataFrame, pa.Table, Mapping)):
        items = [items]
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise InvalidArgumentError(
            f"expected an iterable of DataFrames, got {type(items).__name__}"
        )
    for item in items:
        if item is None:
            continue
        if isinstance(item, Mapping):
            yield _single_table(item)
        elif isinstance(item, list):
            yield from iter_frames(item)
        elif isinstance(item, (pd.DataFrame, pa.Table)):
            yield item
        else:
            raise InvalidArgumentError(
                f"cannot store an item of type {type(item).__name__}; "
                "pass pandas DataFrames (or pyarrow Tables)"
            )


def _single_table(item: Mapping[str, Any]) -> pd.DataFrame | pa.Table:
    if len(item) != 1:
        raise InvalidArgumentError(
            f"multi-table input with tables {sorted(map(str, item))} is not supported; "
            "kartothek v4 datasets have one table named 'table'"
        )
    value = next(iter(item.values()))
    if not isinstance(value, (pd.DataFrame, pa.Table)):
        raise InvalidArgumentError(
            f"the table in {sorted(map(str, item))} is a {type(value).__name__}, not a DataFrame"
        )
    return value
