"""What the kartothek facades share: argument handling and Arrow -> pandas."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset

from .. import arrow, commit
from ..errors import InvalidArgumentError
from ..planning import FileTask
from ..spec import keys, predicates
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


def column_list(
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None, table: str = keys.TABLE
) -> list[str] | None:
    """kartothek accepted ``{"<table>": [...]}`` as well as a plain list."""
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        known = {table, keys.TABLE}
        if set(columns) - known:
            raise InvalidArgumentError(
                f"columns names tables {sorted(map(str, columns))}; the dataset has one table, "
                f"{table!r}"
            )
        columns = next(iter(columns.values()), [])
    if isinstance(columns, str):
        raise InvalidArgumentError(f"columns must be a list of names, got the string {columns!r}")
    return list(columns)


def check_table(ds: arrow.KartothekDataset, table: str | None) -> None:
    """kartothek's ``table=`` read argument: the dataset's table, or the default name."""
    if table is None or table in (keys.TABLE, ds.metadata.table):
        return
    raise InvalidArgumentError(
        f"table={table!r}: dataset {ds.dataset_uuid!r} has one table, named "
        f"{ds.metadata.table!r}; pass that name or omit table="
    )


def open_dataset(store: Store, dataset_uuid: str, predicates: Any) -> arrow.KartothekDataset:
    """The dataset planned once: with ``predicates``, only the files that can match.

    The predicates are validated here, before any data is read; the result's
    ``_ktk_filter`` carries them for the row filter (:func:`row_filter`).
    """
    return arrow.dataset(store, dataset_uuid, filter=predicates)


def row_filter(ds: arrow.KartothekDataset) -> pc.Expression | None:
    """The rows the dataset was opened for (``None``: all)."""
    return ds._ktk_filter.expression


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
    if not len(df.columns):
        # ``columns=[]``: the rows without columns, labelled like plateau's (str, not object)
        df.columns = pd.Index([], dtype=str)
    return df


def sort_frame(df: pd.DataFrame, columns: Sequence[str] | str) -> pd.DataFrame:
    """``sort_partitions_by``: sort by one column or a list of them.

    Categoricals sort by their values, not their category order (plateau).
    """
    by = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise InvalidArgumentError(
            f"sort_partitions_by names columns {missing} that are not in the data; "
            f"columns are {list(df.columns)}"
        )

    def key(column: pd.Series) -> pd.Series:
        if isinstance(column.dtype, pd.CategoricalDtype):
            return column.astype(column.dtype.categories.dtype)
        return column

    return df.sort_values(by, kind="stable", key=key).reset_index(drop=True)


def read_frames(
    ds: arrow.KartothekDataset,
    *,
    columns: list[str] | None,
    categoricals: Sequence[str] | None,
    dates_as_object: bool,
    dispatch_by: Sequence[str] | None = None,
    groups: Sequence[Group] | None = None,
) -> Iterator[pd.DataFrame]:
    """One DataFrame per file (or per ``dispatch_by`` group), in label (group) order.

    ``ds`` is opened with the predicates (:func:`open_dataset`): its files are
    the planned ones, and each is read as planned, projected to ``columns``.
    ``groups`` are ``group_tasks(ds, dispatch_by)`` if the caller has them
    already (grouping by an indexed column reads its index).  A file or group
    whose rows the predicates filter out gives an empty (typed) DataFrame, as
    in plateau.
    """
    check_columns(ds, columns, "columns")
    rows = row_filter(ds)
    for group in group_tasks(ds, dispatch_by) if groups is None else groups:
        part = arrow.KartothekDataset(ds.store, ds.metadata, list(group.tasks))
        wanted = rows
        if group.row_filter is not None:
            wanted = group.row_filter if wanted is None else wanted & group.row_filter
        # the group is planned already: scan it without planning again
        table = arrow.read_planned(part, columns=columns, filter=wanted)
        yield to_pandas(table, categoricals=categoricals, dates_as_object=dates_as_object)


@dataclass(frozen=True)
class Group:
    """The files of one ``dispatch_by`` group (or one file), and the rows of them it keeps."""

    tasks: tuple[FileTask, ...]
    #: dispatch_by on an indexed column: only the rows with the group's values
    row_filter: pc.Expression | None = None
    #: the group's values, in ``dispatch_by`` order
    values: tuple[Any, ...] = ()


def dispatch_columns(dispatch_by: Sequence[str] | str | None) -> list[str] | None:
    if dispatch_by is None:
        return None
    if isinstance(dispatch_by, str):
        return [dispatch_by]
    out = list(dispatch_by)
    if not all(isinstance(c, str) for c in out):
        raise InvalidArgumentError(f"dispatch_by must be a list of column names, got {out!r}")
    return out


def group_tasks(ds: arrow.KartothekDataset, dispatch_by: Sequence[str] | str | None) -> list[Group]:
    """kartothek's ``dispatch_by``: the planned files of ``ds`` grouped.

    ``None``: one group per file.  ``[]``: one group of every file.  Columns
    must be partition keys or indexed: partition keys group whole files; for an
    indexed column a file joins every group whose value it holds (per the
    index) and the group keeps only that value's rows.  Rows with a null in an
    indexed column belong to no group (nulls are not indexed), as in plateau;
    groups whose values cannot satisfy the predicates ``ds`` was opened with
    are left out.
    """
    group_by = dispatch_columns(dispatch_by)
    ordered = sorted(ds.tasks, key=lambda t: t.label)
    if group_by is None:
        return [Group((t,)) for t in ordered]
    if not group_by:
        return [Group(tuple(ordered))] if ordered else []
    meta = ds.metadata
    unknown = [c for c in group_by if c not in meta.partition_keys and c not in meta.indices]
    if unknown:
        raise InvalidArgumentError(
            f"cannot dispatch by columns {unknown}: only partition keys "
            f"{list(meta.partition_keys)} and indexed columns {sorted(meta.indices)} can be used"
        )
    by_label = {t.label: t for t in ordered}
    value_sets: dict[str, dict[str, list[Any]]] = {}
    for column in group_by:
        if column in meta.partition_keys:
            continue
        per_label: dict[str, list[Any]] = {}
        for value, labels in commit.read_index(ds.store, meta, column).items():
            for label in labels:
                if label in by_label:
                    per_label.setdefault(label, []).append(value)
        value_sets[column] = per_label
    groups: dict[tuple[Any, ...], list[FileTask]] = {}
    for label, task in by_label.items():
        combos: list[tuple[Any, ...]] = [()]
        for column in group_by:
            if column in meta.partition_keys:
                options = [task.partition_values.get(column)]
            else:
                options = value_sets[column].get(label, [])
            combos = [(*c, v) for c in combos for v in options]
        for combo in combos:
            groups.setdefault(combo, []).append(task)
    pred = ds._ktk_filter.predicate
    out = []
    for combo in sorted(groups, key=_sort_key):
        if not predicates.evaluate(pred, dict(zip(group_by, combo, strict=True))):
            continue  # plateau filters the index values by the predicates too
        expr: pc.Expression | None = None
        for column, value in zip(group_by, combo, strict=True):
            if column in meta.partition_keys:
                continue  # whole files: nothing to filter
            term = pc.field(column) == pa.scalar(
                value, type=plain_type(ds.schema.field(column).type)
            )
            expr = term if expr is None else expr & term
        out.append(Group(tuple(groups[combo]), expr, combo))
    return out


def _sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, v if v is not None else 0) for v in values)


def plain_type(t: pa.DataType) -> pa.DataType:
    """The value type of a dictionary type, else ``t``."""
    return t.value_type if pa.types.is_dictionary(t) else t


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
