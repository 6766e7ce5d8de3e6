"""Key layout of a kartothek v4 dataset, and partition-value quoting.

Layout (relative to the store root)::

    <uuid>.by-dataset-metadata.json                 the view plateau/kartothek read
    <uuid>/table/_common_metadata                   parquet schema with pandas metadata
    <uuid>/table/<col>=<value>/.../<file>.parquet   data; the label is the path without .parquet
    <uuid>/indices/<col>/<ts>.by-dataset-index.parquet
    <uuid>/_ktk/log/<version>.json                  our snapshot log (plateau ignores it)

Partition values are quoted with ``urllib.parse.quote(value, safe="")``:
plateau quotes with ``/`` left safe, which makes ``"US/CA"`` unreadable.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa

from ..errors import InvalidArgumentError

TABLE = "table"
METADATA_SUFFIX = ".by-dataset-metadata.json"
MSGPACK_SUFFIX = ".by-dataset-metadata.msgpack.zstd"
INDEX_SUFFIX = ".by-dataset-index.parquet"
PARQUET_SUFFIX = ".parquet"
COMMON_METADATA = "_common_metadata"
NULL_VALUE = "__HIVE_DEFAULT_PARTITION__"
LOG_DIR = "_ktk/log"

UUID_RE = re.compile(r"[a-zA-Z0-9+\-_]+")


def validate_uuid(dataset_uuid: object) -> str:
    """Return ``dataset_uuid`` if kartothek accepts it; refuse path tricks like ``../x``."""
    if not isinstance(dataset_uuid, str) or not UUID_RE.fullmatch(dataset_uuid):
        raise InvalidArgumentError(
            f"invalid dataset_uuid {dataset_uuid!r}: use only letters, digits, '+', '-' and '_' "
            "(no '/', '.', spaces or empty names)"
        )
    return dataset_uuid


#: table names that would collide with other keys under ``<uuid>/``
RESERVED_TABLES = frozenset({"indices"})


def validate_table(table: object) -> str:
    """Return ``table`` if it can name a dataset's table directory ``<uuid>/<table>/``.

    kartothek calls it ``table_name``; plateau writes any name, but ``indices``
    (the index directory) and names starting with ``_`` (ours, e.g. ``_ktk``)
    would collide with other keys.
    """
    if (
        not isinstance(table, str)
        or not UUID_RE.fullmatch(table)
        or table in RESERVED_TABLES
        or table.startswith("_")
    ):
        raise InvalidArgumentError(
            f"invalid table name {table!r}: use letters, digits, '+', '-' and '_' (not first), "
            f"and none of {sorted(RESERVED_TABLES)}"
        )
    return table


def metadata_key(dataset_uuid: str) -> str:
    return f"{dataset_uuid}{METADATA_SUFFIX}"


def msgpack_metadata_key(dataset_uuid: str) -> str:
    return f"{dataset_uuid}{MSGPACK_SUFFIX}"


def common_metadata_key(dataset_uuid: str, table: str = TABLE) -> str:
    return f"{dataset_uuid}/{table}/{COMMON_METADATA}"


def table_prefix(dataset_uuid: str, table: str = TABLE) -> str:
    return f"{dataset_uuid}/{table}"


def data_key(dataset_uuid: str, label: str, table: str = TABLE) -> str:
    return f"{dataset_uuid}/{table}/{label}{PARQUET_SUFFIX}"


def label_of_key(dataset_uuid: str, key: str, table: str = TABLE) -> str:
    prefix = f"{dataset_uuid}/{table}/"
    if not key.startswith(prefix) or not key.endswith(PARQUET_SUFFIX):
        raise InvalidArgumentError(f"key {key!r} is not a data file of dataset {dataset_uuid!r}")
    return key[len(prefix) : -len(PARQUET_SUFFIX)]


def index_key(dataset_uuid: str, column: str, stamp: datetime, suffix: str = "") -> str:
    """A new index file key; ``suffix`` keeps concurrent writers apart."""
    name = quote(stamp.isoformat(), safe="") + (f"-{suffix}" if suffix else "")
    return f"{dataset_uuid}/indices/{quote(column, safe='')}/{name}{INDEX_SUFFIX}"


HEAD_KEY = "_ktk/head.json"
SEGMENT_DIR = "_ktk/manifests"
INDEX_SEGMENT_DIR = "_ktk/index"


def head_key(dataset_uuid: str) -> str:
    """A copy of the newest root, read instead of a lazy view."""
    return f"{dataset_uuid}/{HEAD_KEY}"


def segment_key(dataset_uuid: str, version: int, suffix: str) -> str:
    return f"{dataset_uuid}/{SEGMENT_DIR}/{version:020d}-{suffix}.parquet"


def index_segment_key(dataset_uuid: str, column: str, version: int, suffix: str) -> str:
    return (
        f"{dataset_uuid}/{INDEX_SEGMENT_DIR}/{quote_value(column)}/"
        f"{version:020d}-{suffix}{INDEX_SUFFIX}"
    )


def log_key(dataset_uuid: str, version: int) -> str:
    return f"{dataset_uuid}/{LOG_DIR}/{version:020d}.json"


def quote_value(text: str) -> str:
    return quote(text, safe="")


def unquote_value(text: str) -> str:
    # most partition values need no decoding; skip urllib's slower path for them
    return unquote(text) if "%" in text else text


def partition_directory(partition_keys: tuple[str, ...] | list[str], raw_values: list[str]) -> str:
    """``col=value/...`` for already-stringified partition values."""
    return "/".join(
        f"{quote_value(col)}={quote_value(val)}"
        for col, val in zip(partition_keys, raw_values, strict=True)
    )


def parse_label(label: str) -> tuple[list[tuple[str, str]], str]:
    """Split a label into its unquoted ``(column, raw value)`` pairs and its file name.

    plateau leaves ``/`` unquoted in values, so its label for ``"US/CA"`` is
    ``col=US/CA/<file>``.  Both column names and values have ``=`` quoted, so a
    segment without ``=`` can only continue the previous value: it is joined
    back with ``/``, and the value reads as written (plateau itself reads ``"US"``).
    """
    parts = label.split("/")
    quoted: list[list[str]] = []
    for segment in parts[:-1]:
        col, sep, val = segment.partition("=")
        if sep:
            quoted.append([col, val])
        elif quoted:
            quoted[-1][1] += "/" + segment
        else:
            raise InvalidArgumentError(
                f"partition label {label!r} starts with a segment without '='; "
                "expected '<column>=<value>/.../<file>'"
            )
    pairs = [(unquote_value(col), unquote_value(val)) for col, val in quoted]
    return pairs, parts[-1]


def value_to_string(value: Any) -> str:
    """The partition directory text of a value, readable by plateau where plateau can."""
    if value is None or (not isinstance(value, str) and _is_nan(value)):
        return NULL_VALUE
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (datetime, pd.Timestamp)):
        stamp = pd.Timestamp(value)
        # tz-aware values are written in UTC: local offsets can have seconds
        # (LMT, "+00:53:28") that neither pandas nor Arrow parse back
        return str(stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, str, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "item"):  # numpy scalar
        return value_to_string(value.item())
    raise InvalidArgumentError(
        f"cannot partition on value {value!r} of type {type(value).__name__}; partition columns "
        "must hold strings, integers, floats, booleans, dates or timestamps"
    )


def string_to_value(text: str, arrow_type: pa.DataType) -> Any:
    """Parse partition directory text back into a Python value of ``arrow_type``."""
    if text == NULL_VALUE:
        return None
    try:
        if pa.types.is_boolean(arrow_type):
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)
        if pa.types.is_timestamp(arrow_type):
            stamp = pd.Timestamp(text)
            tz = arrow_type.tz
            if tz is not None:
                stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
                stamp = stamp.tz_convert(tz)
            elif stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            return pa.scalar(stamp, type=arrow_type).as_py()
        if pa.types.is_date(arrow_type):
            return pd.Timestamp(text).date()
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return text
        if pa.types.is_dictionary(arrow_type):
            return string_to_value(text, arrow_type.value_type)
        return pa.scalar(text).cast(arrow_type).as_py()
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise InvalidArgumentError(
            f"partition value {text!r} cannot be read as {arrow_type}"
        ) from exc


def _is_nan(value: Any) -> bool:
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False
