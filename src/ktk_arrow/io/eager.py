"""kartothek's eager API (``kartothek.io.eager`` / ``plateau.io.eager``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Every write is one atomic, concurrent-safe commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pandas as pd

from .. import commit, write
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
) -> pd.DataFrame:
    """The whole dataset (or the rows matching ``predicates``) as one DataFrame."""
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    cols = _common.column_list(columns)
    _common.check_columns(ds, cols, "columns")
    _common.check_columns(ds, list(categoricals or []), "categoricals")
    table = ds.to_table(columns=cols, filter=predicates)
    return _common.to_pandas(table, categoricals=categoricals, dates_as_object=dates_as_object)


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
    """One DataFrame per file (or per ``dispatch_by`` group)."""
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, _uuid(dataset_uuid), predicates)
    return list(
        _common.read_frames(
            ds,
            columns=_common.column_list(columns),
            predicates=predicates,
            categoricals=categoricals,
            dates_as_object=dates_as_object,
            dispatch_by=dispatch_by,
        )
    )


def store_dataframes_as_dataset(
    store: StoreLike,
    dataset_uuid: str,
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
    """Create a dataset from DataFrames (replace it with ``overwrite=True``)."""
    _check_format_args(metadata_storage_format, metadata_version, table_name)
    resolved = _common.store_of(store)
    snap = write.write_dataset(
        _frames(dfs),
        resolved,
        _uuid(dataset_uuid),
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode="overwrite" if overwrite else "create",
        metadata=metadata,
    )
    return commit.load_version(resolved, dataset_uuid, snap.version)


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
    sort_partitions_by: str | None = None,
    secondary_indices: Sequence[str] | None = None,
    table_name: str = "table",
    factory: Any = None,
) -> DatasetMetadata:
    """Append DataFrames; with ``delete_scope``, replace the matched partitions atomically."""
    _check_format_args("json", default_metadata_version, table_name)
    resolved = _common.store_of(store, factory)
    uuid = _uuid(dataset_uuid)
    frames = _frames(df_list)
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
    cols = [columns] if isinstance(columns, str) else list(columns)
    snap = write.build_indices(resolved, _uuid(dataset_uuid), cols)
    return commit.load_version(resolved, dataset_uuid, snap.version)


def _uuid(dataset_uuid: str | None) -> str:
    if dataset_uuid is None:
        raise InvalidArgumentError("dataset_uuid is required")
    return dataset_uuid


def _frames(dfs: Iterable[pd.DataFrame] | pd.DataFrame) -> Iterable[pd.DataFrame]:
    if isinstance(dfs, pd.DataFrame):
        return [dfs]
    if isinstance(dfs, Mapping):
        raise InvalidArgumentError(
            "multi-table input ({table: DataFrame}) is not supported; pass a list of DataFrames"
        )
    out = []
    for df in dfs:
        if isinstance(df, Mapping):
            if set(df) != {"table"} and len(df) != 1:
                raise InvalidArgumentError(
                    f"multi-table input with tables {sorted(df)} is not supported"
                )
            df = next(iter(df.values()))
        out.append(df)
    return out


def _sorted(df: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in df.columns:
        raise InvalidArgumentError(
            f"sort_partitions_by={column!r} is not a column; columns are {list(df.columns)}"
        )
    return df.sort_values(column, kind="stable")


def _check_format_args(storage_format: str, version: int, table_name: str) -> None:
    if storage_format != "json":
        raise InvalidArgumentError(
            f"metadata_storage_format={storage_format!r}: ktk-arrow writes JSON metadata only "
            "(it reads msgpack); omit the argument"
        )
    if version != 4:
        raise InvalidArgumentError(f"metadata_version={version!r}: only version 4 exists")
    if table_name != "table":
        raise InvalidArgumentError(
            f"table_name={table_name!r}: kartothek v4 datasets have one table named 'table'"
        )
