"""Dataset schema: normalisation, ``_common_metadata``, compatibility checks.

Two views of one schema are kept:

* the *dataset schema* (stored in our metadata extension): the user's column
  order, kartothek's type normalisation (signed ints -> int64, unsigned ->
  uint64, floats -> float64), categoricals kept as dictionaries, timestamps
  in microseconds (or nanoseconds when the user opts in);
* ``_common_metadata``: the same schema as plateau would derive it (partition
  keys first, then columns sorted by name, dictionaries decoded, pandas
  metadata attached), so plateau accepts appends to our datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CorruptMetadataError, InvalidArgumentError, SchemaMismatchError

TimestampUnit = Literal["us", "ns"]


def normalize_type(t: pa.DataType, unit: TimestampUnit = "us") -> pa.DataType:
    """kartothek's type normalisation, plus our timestamp unit."""
    if pa.types.is_signed_integer(t):
        return pa.int64()
    if pa.types.is_unsigned_integer(t):
        return pa.uint64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_timestamp(t):
        return pa.timestamp(unit, tz=t.tz)
    if pa.types.is_dictionary(t):
        return pa.dictionary(pa.int32(), normalize_type(t.value_type, unit))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(normalize_type(t.value_type, unit))
    if pa.types.is_string_view(t):  # Polars' C stream exports its strings as views
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    return t


def is_scalar_type(t: pa.DataType) -> bool:
    """Strings, numbers, bools, dates and timestamps: the types partition values
    and file statistics are kept for (each has a text form and an order)."""
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_floating(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
    )


def normalize_schema(schema: pa.Schema, unit: TimestampUnit = "us") -> pa.Schema:
    """The dataset schema for data of ``schema`` (metadata kept as given)."""
    check_column_names(schema.names)
    fields = [pa.field(f.name, normalize_type(f.type, unit), nullable=True) for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def check_column_names(names: Sequence[object]) -> None:
    seen: set[object] = set()
    dupes = sorted({str(n) for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise InvalidArgumentError(
            f"duplicate column names {dupes}; rename the columns so each appears once"
        )
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise InvalidArgumentError(
            f"column names must be non-empty strings, got {bad!r}; rename these columns"
        )


def decoded(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary types replaced by their value types."""
    return pa.schema(
        [
            pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            for f in schema
        ],
        metadata=schema.metadata,
    )


def data_schema(schema: pa.Schema, partition_keys: Sequence[str]) -> pa.Schema:
    """The schema of a data file: the dataset schema without partition columns."""
    return pa.schema([f for f in schema if f.name not in partition_keys])


def common_metadata_schema(schema: pa.Schema, partition_keys: Sequence[str]) -> pa.Schema:
    """``_common_metadata`` content as plateau would write it for this dataset.

    plateau checks every append against it, type for type, with the types it
    derives from the appended DataFrame (pandas 3): ``str``, object and
    categorical columns of strings are ``large_string`` there, ``StringDtype``
    columns ``string``.  So a string column is recorded as ``string`` only
    where the dataset's pandas metadata says it came from a ``StringDtype``
    column; Arrow ``string`` input (no pandas dtype) as ``large_string``,
    what plateau derives for pandas' default string dtype.  Bytes are
    ``binary`` there, so ``large_binary`` is recorded as ``binary``.
    """
    plain = decoded(schema)
    numpy_types = _pandas_numpy_types(schema)
    plain = pa.schema(
        [
            pa.field(
                f.name, pa.string() if numpy_types.get(f.name) == "string" else pa.large_string()
            )
            if _is_string_type(f.type)
            else pa.field(f.name, pa.binary())
            if pa.types.is_large_binary(f.type) or pa.types.is_binary_view(f.type)
            else f
            for f in plain
        ]
    )
    by_name = {f.name: f for f in plain}
    order = list(partition_keys) + sorted(n for n in plain.names if n not in partition_keys)
    fields = [by_name[n] for n in order]
    empty = pa.schema(fields).empty_table()
    pandas_md = pa.Table.from_pandas(empty.to_pandas(), preserve_index=False).schema.metadata
    return pa.schema(fields, metadata={b"pandas": pandas_md[b"pandas"]} if pandas_md else None)


def _is_string_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def coerce_timestamps(unit: TimestampUnit) -> str | None:
    """pyarrow's ``coerce_timestamps`` for ``unit``.

    pyarrow coerces only to ``"ms"``/``"us"``; nanoseconds are kept by not
    coercing (parquet format 2.6, pyarrow's default).
    """
    return None if unit == "ns" else "us"


def common_metadata_bytes(schema: pa.Schema, partition_keys: Sequence[str]) -> bytes:
    buf = pa.BufferOutputStream()
    target = common_metadata_schema(schema, partition_keys)
    unit: TimestampUnit = "ns" if any(_has_nanos(f.type) for f in target) else "us"
    pq.write_metadata(target, buf, coerce_timestamps=coerce_timestamps(unit))
    return bytes(buf.getvalue().to_pybytes())


def timestamp_unit_of(schema: pa.Schema) -> TimestampUnit:
    """``"ns"`` if the dataset was created with ``timestamp_unit="ns"``, else ``"us"``."""
    return "ns" if any(_has_nanos(f.type) for f in schema) else "us"


def _has_nanos(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t):
        return bool(t.unit == "ns")
    if pa.types.is_dictionary(t):
        return _has_nanos(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_nanos(t.value_type)
    return False


def schema_from_common_metadata(raw: bytes, *, source: str = "_common_metadata") -> pa.Schema:
    """The dataset schema of a dataset we did not write (plateau/kartothek)."""
    try:
        schema = pq.read_schema(pa.BufferReader(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptMetadataError(f"{source} is not a parquet schema: {exc}") from exc
    categoricals = _pandas_categoricals(schema)
    fields = [
        pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in categoricals else f
        for f in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def _pandas_columns(schema: pa.Schema) -> list[dict[str, object]]:
    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return []
    try:
        columns = json.loads(raw).get("columns", [])
    except (ValueError, AttributeError):
        return []
    return [c for c in columns if isinstance(c, dict)] if isinstance(columns, list) else []


def _pandas_numpy_types(schema: pa.Schema) -> dict[str, object]:
    """Column name -> the numpy type pandas metadata records (``"object"``, ``"str"``, ...)."""
    out: dict[str, object] = {}
    for column in _pandas_columns(schema):
        name = column.get("name")
        if isinstance(name, str):
            out[name] = column.get("numpy_type")
    return out


def _pandas_categoricals(schema: pa.Schema) -> set[str]:
    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return set()
    try:
        columns = json.loads(raw).get("columns", [])
    except ValueError:
        return set()
    return {c["name"] for c in columns if c.get("pandas_type") == "categorical" and c.get("name")}


def check_timestamps(table: pa.Table, unit: TimestampUnit) -> None:
    """Refuse sub-microsecond timestamps unless nanoseconds were chosen.

    Timestamps inside lists and dictionaries are checked too.
    """
    if unit == "ns":
        return
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not _has_nanos(column.type):
            continue
        for chunk in column.chunks:
            if any(_sub_micro(leaf) for leaf in _timestamp_leaves(chunk)):
                raise InvalidArgumentError(
                    f"column {name!r} holds timestamps with sub-microsecond precision; "
                    "round them (e.g. Series.dt.floor('us')), or pass timestamp_unit='ns' "
                    "(not readable by Spark/Hive)"
                )


def _timestamp_leaves(array: pa.Array) -> list[pa.Array]:
    t = array.type
    if pa.types.is_timestamp(t):
        return [array]
    if pa.types.is_dictionary(t):
        return _timestamp_leaves(array.dictionary)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _timestamp_leaves(array.flatten())
    return []


def _sub_micro(array: pa.Array) -> bool:
    if array.type.unit != "ns" or len(array) == 0:
        return False
    nanos = array.view(pa.int64())
    remainder = pc.max(pc.abs(pc.subtract(nanos, pc.multiply(pc.divide(nanos, 1000), 1000))))
    return bool(remainder.is_valid and remainder.as_py() != 0)


#: the values of ``write_dataset(schema_mode=...)`` (deltalake's name); ``None``: no change
SCHEMA_MODES = ("merge",)


def merge_schemas(
    current: pa.Schema,
    incoming: pa.Schema,
    partition_keys: Sequence[str] = (),
    *,
    what: str = "data",
) -> pa.Schema:
    """The dataset schema once data of schema ``incoming`` is merged in (``schema_mode="merge"``).

    ``current``'s columns keep their place; columns only ``incoming`` has
    follow, nullable (older files read them as null).  A numeric column
    widens within its family (int8 -> ... -> int64, uint8 -> ... -> uint64,
    float16 -> float32 -> float64, as kartothek normalises), and an all-null
    column takes the type the new data gives it; other lossless differences
    (``string``/``large_string``, dictionaries, timestamp units) keep
    ``current``'s type, the data is cast to it.  Any other type change, or a
    partition column changing type, is a ``SchemaMismatchError`` naming the
    columns with both types: old files could not be read as the new type.
    """
    by_name = {f.name: f for f in current}
    problems = []
    fields = []
    for f in current:
        if f.name not in incoming.names:
            fields.append(f)
            continue
        new_type = incoming.field(f.name).type
        merged = _merged_type(f.type, new_type)
        if merged is None or (f.name in partition_keys and merged != f.type):
            kind = "partition column " if f.name in partition_keys else ""
            problems.append(f"{kind}{f.name!r}: dataset has {f.type}, {what} has {new_type}")
            continue
        fields.append(f if merged == f.type else pa.field(f.name, merged, nullable=True))
    if problems:
        raise SchemaMismatchError(
            f"{what} cannot be merged into the dataset schema: {'; '.join(problems)}. "
            "schema_mode='merge' adds columns and widens integer/float columns only; cast "
            f"these columns of the {what} to the dataset's types, or rewrite the dataset with "
            "mode='overwrite'"
        )
    fields += [pa.field(f.name, f.type, nullable=True) for f in incoming if f.name not in by_name]
    return pa.schema(fields, metadata=current.metadata)


def fits(schema: pa.Schema, dataset_schema: pa.Schema, partition_keys: Sequence[str] = ()) -> bool:
    """Whether files of ``schema`` read as ``dataset_schema`` as they are.

    True when ``dataset_schema`` has every column of ``schema``, of the same
    or a wider type (merging changes nothing): an append of files written
    before a concurrent schema evolution stays readable, its files read the
    added columns as null.
    """
    try:
        merged = merge_schemas(dataset_schema, schema, partition_keys)
    except SchemaMismatchError:
        return False
    return bool(merged.equals(dataset_schema, check_metadata=False))


_WIDTHS = {
    "int": [pa.int8(), pa.int16(), pa.int32(), pa.int64()],
    "uint": [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()],
    "float": [pa.float16(), pa.float32(), pa.float64()],
}


def _merged_type(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The column type holding values of both ``old`` and ``new``; ``None``: no such type."""
    if old == new or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    if pa.types.is_dictionary(old):
        value = _merged_type(old.value_type, new.value_type if pa.types.is_dictionary(new) else new)
        return None if value is None else pa.dictionary(old.index_type, value)
    if pa.types.is_dictionary(new):
        return _merged_type(old, new.value_type)
    for family in _WIDTHS.values():
        if old in family and new in family:
            return max(old, new, key=family.index)
    if (pa.types.is_list(old) or pa.types.is_large_list(old)) and (
        pa.types.is_list(new) or pa.types.is_large_list(new)
    ):
        value = _merged_type(old.value_type, new.value_type)
        return None if value is None else pa.list_(value)
    return old if _castable(new, old) else None


def conform(
    table: pa.Table,
    schema: pa.Schema,
    *,
    what: str = "data",
    fill_missing: bool | None = None,
    merge_hint: bool = False,
) -> pa.Table:
    """Cast ``table`` to ``schema`` (same column set), or explain what differs.

    ``fill_missing`` adds the columns ``table`` lacks as nulls (data written
    with ``schema_mode="merge"``).  Rows read back from the dataset's own files
    (``what="stored rows"``) are filled by default: a file written before a
    column was added lacks it, and reads it as null.  ``merge_hint`` names
    ``schema_mode="merge"`` in the error as the fix for added columns.
    """
    if fill_missing is None:
        fill_missing = what == "stored rows"
    if fill_missing:
        for f in schema:
            if f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    missing = [n for n in schema.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    mismatched = []
    for f in schema:
        if f.name in table.column_names:
            have = table.schema.field(f.name).type
            if not _castable(have, f.type):
                mismatched.append(f"{f.name!r}: dataset has {f.type}, {what} has {have}")
    if missing or extra or mismatched:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        if mismatched:
            parts.append("different types: " + "; ".join(mismatched))
        fix = (
            f"Make the {what} match the dataset schema, or rewrite the dataset with "
            "mode='overwrite'"
        )
        if merge_hint and (missing or extra):
            fix += (
                ", or pass schema_mode='merge' to evolve the schema (new columns are added as "
                "nullable and read as null in older files; missing columns are written as null)"
            )
        raise SchemaMismatchError(
            f"{what} does not match the dataset schema: {', '.join(parts)}. {fix}"
        )
    columns = []
    for f in schema:
        column = table.column(f.name)
        if column.type != f.type:
            try:
                column = column.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"column {f.name!r} cannot be converted from {column.type} to {f.type}: {exc}"
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(list(schema)))


def _castable(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether data of type ``have`` belongs in a column of type ``want`` without loss."""
    if have == want or pa.types.is_null(have):
        return True
    if pa.types.is_dictionary(have):
        return _castable(have.value_type, want)
    if pa.types.is_dictionary(want):
        return _castable(have, want.value_type)
    string_like = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(p(have) for p in string_like) and any(p(want) for p in string_like):
        return True
    binary_like = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    if any(p(have) for p in binary_like) and any(p(want) for p in binary_like):
        return True
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return have.tz == want.tz or (have.tz is not None and want.tz is not None)
    if pa.types.is_signed_integer(have) and pa.types.is_signed_integer(want):
        return True
    if pa.types.is_unsigned_integer(have) and pa.types.is_unsigned_integer(want):
        return True
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return True
    if (pa.types.is_list(have) or pa.types.is_large_list(have)) and (
        pa.types.is_list(want) or pa.types.is_large_list(want)
    ):
        return _castable(have.value_type, want.value_type)
    return False
