"""Secondary (inverted) index files, in kartothek's layout.

An index file is a parquet table with two columns: ``<column>`` (the indexed
values, in the column's type) and ``partition`` (``list<string>`` of the
labels of the files holding that value).  Nulls are not indexed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CorruptMetadataError

PARTITION_COLUMN = "partition"

IndexMap = dict[Any, set[str]]


def values_in(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The distinct non-null values of ``column`` as Python objects."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return [v for v in pc.unique(column).drop_null().to_pylist()]


def add(index: IndexMap, values: Iterable[Any], label: str) -> None:
    for value in values:
        index.setdefault(value, set()).add(label)


def merge(base: Mapping[Any, Collection[str]], delta: Mapping[Any, Collection[str]]) -> IndexMap:
    out: IndexMap = {value: set(labels) for value, labels in base.items()}
    for value, labels in delta.items():
        out.setdefault(value, set()).update(labels)
    return out


def remove_labels(index: Mapping[Any, Collection[str]], labels: Collection[str]) -> IndexMap:
    gone = set(labels)
    out: IndexMap = {}
    for value, present in index.items():
        kept = set(present) - gone
        if kept:
            out[value] = kept
    return out


def to_parquet(column: str, value_type: pa.DataType, index: Mapping[Any, Collection[str]]) -> bytes:
    if pa.types.is_dictionary(value_type):
        value_type = value_type.value_type
    values = sorted(index, key=_sort_key)
    table = pa.table(
        {
            column: pa.array(values, type=value_type),
            PARTITION_COLUMN: pa.array(
                [sorted(index[v]) for v in values], type=pa.list_(pa.string())
            ),
        }
    )
    buf = pa.BufferOutputStream()
    # pyarrow coerces to "us" only; nanosecond indices are written uncoerced
    nanos = pa.types.is_timestamp(value_type) and value_type.unit == "ns"
    pq.write_table(
        table,
        buf,
        coerce_timestamps="us" if pa.types.is_timestamp(value_type) and not nanos else None,
    )
    return bytes(buf.getvalue().to_pybytes())


def from_parquet(column: str, raw: bytes, value_type: pa.DataType | None = None) -> IndexMap:
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(
            f"index file of column {column!r} is not parquet: {exc}"
        ) from exc
    if column not in table.column_names or PARTITION_COLUMN not in table.column_names:
        raise CorruptMetadataError(
            f"index file of column {column!r} lacks the columns {column!r} and 'partition'"
        )
    values = table.column(column)
    if value_type is not None:
        if pa.types.is_dictionary(value_type):
            value_type = value_type.value_type
        if values.type != value_type:
            values = values.cast(value_type)
    out: IndexMap = {}
    for value, labels in zip(
        values.to_pylist(), table.column(PARTITION_COLUMN).to_pylist(), strict=True
    ):
        if value is None:
            continue
        out.setdefault(value, set()).update(labels or ())
    return out


def from_embedded(raw: Mapping[Any, Collection[str]], value_type: pa.DataType) -> IndexMap:
    """An index kept inline in old metadata (``{value: [labels]}``, values as text)."""
    if pa.types.is_dictionary(value_type):
        value_type = value_type.value_type
    keys_ = list(raw)
    try:
        typed = pa.array(keys_).cast(value_type).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        typed = keys_
    return {t: set(raw[k]) for t, k in zip(typed, keys_, strict=True)}


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if value is not None else (1, 0)
