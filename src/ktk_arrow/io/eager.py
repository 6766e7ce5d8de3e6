"""kartothek's eager API (``kartothek.io.eager`` / ``plateau.io.eager``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Every write is one atomic, concurrent-safe commit.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import arrow, commit, write
from ..errors import InvalidArgumentError
from ..spec.metadata import DatasetMetadata
from ..storage import StoreLike
from . import _common

__all__ = [
    "build_dataset_indices",
    "delete_dataset",
    "garbage_collect_dataset",
    "read_dataset_as_dataframes",
    "read_table",
    "store_dataframes_as_dataset",
    "update_dataset_from_dataframes",
]


def read_table(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    table: str | None = None,
) -> pd.DataFrame:
    """The whole dataset (or the rows matching ``predicates``) as one DataFrame.

    The files are planned once, with the predicates, and read as planned.
    """
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    _common.check_table(ds, table)
    cols = _common.column_list(columns, ds.metadata.table)
    _common.check_columns(ds, cols, "columns")
    _common.check_columns(ds, list(categoricals or []), "categoricals")
    if predicates is None:
        data = ds.to_table(columns=cols)  # checks the recorded row count too
    else:
        data = arrow.read_planned(ds, columns=cols, filter=_common.row_filter(ds))
    return _common.to_pandas(data, categoricals=categoricals, dates_as_object=dates_as_object)


def read_dataset_as_dataframes(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dispatch_by: Sequence[str] | None = None,
) -> list[pd.DataFrame]:
    """One DataFrame per file (or per ``dispatch_by`` group; ``[]``: one for all files).

    ``dispatch_by`` takes partition keys and indexed columns.  A file (group)
    whose rows ``predicates`` filter out gives an empty DataFrame, as in plateau.
    """
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    cols = _common.column_list(columns, ds.metadata.table)
    _common.check_columns(ds, list(categoricals or []), "categoricals")
    return list(
        _common.read_frames(
            ds,
            columns=cols,
            categoricals=categoricals,
            dates_as_object=dates_as_object,
            dispatch_by=dispatch_by,
        )
    )


def store_dataframes_as_dataset(
    store: StoreLike,
    dataset_uuid: str | None,
    dfs: Iterable[pd.DataFrame] | pd.DataFrame,
    metadata: Mapping[str, Any] | None = None,
    partition_on: Sequence[str] | None = None,
    df_serializer: Any = None,
    overwrite: bool = False,
    secondary_indices: Sequence[str] | None = None,
    metadata_storage_format: str = "json",
    metadata_version: int = 4,
    table_name: str = "table",
) -> DatasetMetadata:
    """Create a dataset from DataFrames (replace it with ``overwrite=True``).

    ``dfs`` may nest lists (kartothek's batches: ``[[df1, df2], df3]``);
    ``dataset_uuid=None`` picks a fresh uuid, as in plateau.  An empty
    DataFrame creates a dataset that stores the schema (without
    ``partition_on``: one file without rows, as in plateau).
    """
    _check_format_args(metadata_storage_format, metadata_version)
    resolved = _common.store_of(store)
    uuid = new_uuid(dataset_uuid)
    snap = write.write_dataset(
        frames(dfs),
        resolved,
        uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if overwrite else "create",
        metadata=metadata,
        table=update_table(table_name),
    )
    return commit.load_version(resolved, uuid, snap.version)


def update_dataset_from_dataframes(
    df_list: Iterable[pd.DataFrame] | pd.DataFrame,
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
    table_name: str = "table",
    factory: Any = None,
) -> DatasetMetadata:
    """Append DataFrames; with ``delete_scope``, replace the matched partitions atomically.

    The dataset is created if it does not exist.  ``table_name`` names the
    table of a dataset created here; an existing dataset keeps its own (a
    different name other than the default is an error).
    """
    _check_format_args("json", default_metadata_version)
    resolved = _common.store_of(store, factory)
    uuid = _uuid(dataset_uuid)
    data: Iterable[Any] = frames(df_list)
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


def delete_dataset(
    dataset_uuid: str | None = None, store: StoreLike = None, factory: Any = None
) -> None:
    """Delete the dataset: metadata first (readers stop seeing it), then every file."""
    commit.delete_dataset(_common.store_of(store, factory), _uuid(dataset_uuid))


def garbage_collect_dataset(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    factory: Any = None,
    grace_period: timedelta = commit.DEFAULT_GC_GRACE,
    force: bool = False,
) -> list[str]:
    """Delete files no retained snapshot references and older than ``grace_period``.

    A grace period under a minute could delete a running write's files: it needs ``force=True``.
    """
    return commit.garbage_collect(
        _common.store_of(store, factory),
        _uuid(dataset_uuid),
        grace_period=grace_period,
        force=force,
    )


def build_dataset_indices(
    store: StoreLike, dataset_uuid: str, columns: Sequence[str] | str, factory: Any = None
) -> DatasetMetadata:
    """Build secondary indices on ``columns`` for every file, as one commit."""
    resolved = _common.store_of(store, factory)
    uuid = _uuid(dataset_uuid)
    cols = [columns] if isinstance(columns, str) else list(columns)
    snap = write.build_indices(resolved, uuid, cols)
    return commit.load_version(resolved, uuid, snap.version)


def _uuid(dataset_uuid: str | None) -> str:
    if dataset_uuid is None:
        raise InvalidArgumentError(
            "dataset_uuid is required: pass the uuid of the dataset to read or change"
        )
    return dataset_uuid


def new_uuid(dataset_uuid: str | None) -> str:
    """A new dataset's uuid: the given one, or a fresh one (plateau's ``gen_uuid``)."""
    return uuidlib.uuid4().hex if dataset_uuid is None else dataset_uuid


def update_table(table_name: str | None) -> str | None:
    """A write's ``table_name``: the default means "the dataset's table" ('table' for a new one).

    plateau writes an update's files under the table it is given, so the
    default on a dataset with another table breaks the dataset; we keep the
    dataset's table instead (and refuse any other explicit name).
    """
    return None if table_name in (None, "table") else table_name


def frames(dfs: Any) -> Iterator[pd.DataFrame | pa.Table]:
    """kartothek's inputs, one at a time: DataFrames, ``{"table": df}`` dicts, nested lists.

    Lists nest (kartothek's batch mode, ``[[df1, df2], df3]``); ``None`` items
    (kartothek's "no data" sentinel) and empty lists yield nothing.  pyarrow
    Tables pass through.
    """
    if dfs is None:
        return
    if isinstance(dfs, (pd.DataFrame, pa.Table, Mapping)):
        dfs = [dfs]
    if isinstance(dfs, (str, bytes)) or not isinstance(dfs, Iterable):
        raise InvalidArgumentError(f"expected an iterable of DataFrames, got {type(dfs).__name__}")
    for item in dfs:
        if item is None:
            continue
        if isinstance(item, Mapping):
            yield _single_table(item)
        elif isinstance(item, (list, tuple)):
            yield from frames(item)
        elif isinstance(item, (pd.DataFrame, pa.Table)):
            yield item
        else:
            raise InvalidArgumentError(
                f"cannot store an item of type {type(item).__name__}; "
                "pass pandas DataFrames (or pyarrow Tables), or lists of them"
            )


def _single_table(item: Mapping[str, Any]) -> pd.DataFrame | pa.Table:
    if len(item) != 1:
        raise InvalidArgumentError(
            f"multi-table input with tables {sorted(map(str, item))} is not supported; "
            "kartothek v4 datasets have one table"
        )
    value = next(iter(item.values()))
    if not isinstance(value, (pd.DataFrame, pa.Table)):
        raise InvalidArgumentError(
            f"the table in {sorted(map(str, item))} is a {type(value).__name__}, not a DataFrame"
        )
    return value


def sorted_frames(
    data: Iterable[Any], sort_partitions_by: Sequence[str] | str
) -> Iterator[pd.DataFrame | pa.Table]:
    """``sort_partitions_by`` for every input (one column or a list of them)."""
    for df in data:
        if isinstance(df, pa.Table):
            df = df.to_pandas()
        yield _common.sort_frame(df, sort_partitions_by)


def _check_format_args(storage_format: str, version: int) -> None:
    if storage_format != "json":
        raise InvalidArgumentError(
            f"metadata_storage_format={storage_format!r}: ktk-arrow writes JSON metadata only "
            "(it reads msgpack); omit the argument"
        )
    if version != 4:
        raise InvalidArgumentError(f"metadata_version={version!r}: only version 4 exists")
