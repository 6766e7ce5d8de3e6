"""What the kartothek facades share: argument handling and Arrow -> pandas."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset

from .. import arrow, commit, planning
from ..errors import InvalidArgumentError
from ..planning import FileTask
from ..spec import keys
from ..storage import Store, StoreLike, resolve_store


def store_of(store: StoreLike, factory: Any = None) -> Store:
    """kartothek's ``store`` argument (URL, store factory, minimalkv store, Store)."""
    if factory is not None:
        raise InvalidArgumentError(
            "factory= (a plateau DatasetFactory) is not supported; pass store= and dataset_uuid="
        )
    if store is None:
        raise InvalidArgumentError("store is required; pass a URL, path or store factory")
    return resolve_store(store)


def column_list(columns: Sequence[str] | Mapping[str, Sequence[str]] | None) -> list[str] | None:
    """kartothek accepted ``{"table": [...]}`` as well as a plain list."""
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        if set(columns) - {keys.TABLE}:
            raise InvalidArgumentError(
                f"columns names tables {sorted(columns)}; only {keys.TABLE!r} exists"
            )
        columns = columns.get(keys.TABLE, [])
    if isinstance(columns, str):
        raise InvalidArgumentError(f"columns must be a list of names, got the string {columns!r}")
    return list(columns)


def open_dataset(store: Store, dataset_uuid: str, predicates: Any) -> arrow.KartothekDataset:
    ds = arrow.dataset(store, dataset_uuid)
    if predicates is not None:
        planning.make_filter(predicates, ds.schema)  # validate before any reading
    return ds


def check_columns(ds: arrow.KartothekDataset, columns: list[str] | None, what: str) -> None:
    if columns is None:
        return
    unknown = [c for c in columns if c not in ds.schema.names]
    if unknown:
        raise InvalidArgumentError(
            f"{what} names columns {unknown} that dataset {ds.dataset_uuid!r} does not have; "
            f"its columns are {ds.schema.names}"
        )


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def to_pandas(
    table: pa.Table,
    *,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
) -> pd.DataFrame:
    """kartothek's pandas conventions: nanosecond timestamps, optional categoricals."""
    df = table.to_pandas(
        date_as_object=dates_as_object,
        coerce_temporal_nanoseconds=True,
        ignore_metadata=True,
    )
    for name, column in zip(table.column_names, table.columns, strict=True):
        # numpy has no int/bool with nulls: pandas' nullable dtypes, not float64/object
        # (which would lose integers above 2**53 and the dtype family)
        if column.null_count and column.type in _NULLABLE:
            df[name] = column.to_pandas(types_mapper=_NULLABLE.get)
    for name in categoricals or ():
        if name in df.columns and not isinstance(df[name].dtype, pd.CategoricalDtype):
            df[name] = df[name].astype("category")
    return df


def read_frames(
    ds: arrow.KartothekDataset,
    *,
    columns: list[str] | None,
    predicates: Any,
    categoricals: Sequence[str] | None,
    dates_as_object: bool,
    dispatch_by: Sequence[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """One DataFrame per file (or per ``dispatch_by`` group), in label order."""
    check_columns(ds, columns, "columns")
    narrowed = ds._narrowed(predicates) if predicates is not None else ds
    row_filter = narrowed._arrow_filter(predicates) if predicates is not None else None
    for group in _groups(narrowed.tasks, dispatch_by, narrowed):
        part = arrow.KartothekDataset(narrowed.store, narrowed.metadata, group)
        # the group is planned already: scan it without planning again
        table = arrow.read_planned(part, columns=columns, filter=row_filter)
        if table.num_rows == 0 and predicates is not None:
            continue
        yield to_pandas(table, categoricals=categoricals, dates_as_object=dates_as_object)


def _groups(
    tasks: list[FileTask], dispatch_by: Sequence[str] | None, ds: arrow.KartothekDataset
) -> Iterator[list[FileTask]]:
    ordered = sorted(tasks, key=lambda t: t.label)
    if dispatch_by is None:
        for task in ordered:
            yield [task]
        return
    unknown = [c for c in dispatch_by if c not in ds.metadata.partition_keys]
    if unknown:
        raise InvalidArgumentError(
            f"dispatch_by names columns {unknown} that are not partition keys "
            f"{list(ds.metadata.partition_keys)}"
        )
    groups: dict[tuple[str, ...], list[FileTask]] = {}
    for task in ordered:
        key = tuple(keys.value_to_string(task.partition_values.get(c)) for c in dispatch_by)
        groups.setdefault(key, []).append(task)
    yield from groups.values()


def empty_frame(
    ds: arrow.KartothekDataset,
    columns: list[str] | None,
    categoricals: Sequence[str] | None,
    dates_as_object: bool,
) -> pd.DataFrame:
    schema = ds.schema
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    return to_pandas(
        schema.empty_table(), categoricals=categoricals, dates_as_object=dates_as_object
    )


def load(store: Store, dataset_uuid: str) -> Any:
    return commit.load(store, dataset_uuid)
