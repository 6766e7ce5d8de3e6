"""The dataset metadata file (kartothek v4), plus our extension key.

The JSON that plateau/kartothek read::

    {"dataset_metadata_version": 4, "dataset_uuid": ..., "metadata": {...},
     "partitions": {label: {"files": {"table": key}}}, "partition_keys": [...],
     "indices": {col: index_key}}

Everything ktk-arrow adds lives under the single top-level key ``"ktk_arrow"``
(plateau ignores unknown keys): the snapshot number and its commit record,
per-file byte size and row count, and the schema, so that planning a read
needs no further object.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from ..errors import CorruptMetadataError, InvalidArgumentError
from . import keys, manifest
from .schema import is_scalar_type

EXTENSION_KEY = "ktk_arrow"
#: 2: roots may point at manifest segments and index segments (format 1 entries still read)
FORMAT_VERSION = 2
#: the operation of the log entry ``delete_dataset`` writes first: its linearisation point
TOMBSTONE_OPERATION = "delete_dataset"


@dataclass(frozen=True)
class FileEntry:
    """One kartothek "partition": a single parquet file and what we know of it."""

    label: str
    key: str
    size: int | None = None
    rows: int | None = None
    #: column -> [min, max, null count] as JSON values (see ``file_stats``)
    stats: Mapping[str, list[Any]] | None = None

    def typed_stats(self, schema: pa.Schema, columns: set[str]) -> dict[str, tuple[Any, Any, bool]]:
        """``column -> (min, max, has_nulls)`` in Python values of the column types.

        Planning prunes files by these, so bounds that do not fit the column
        type, or a minimum above the maximum, are ``CorruptMetadataError``:
        pruning by them would silently drop matching rows.
        """
        out: dict[str, tuple[Any, Any, bool]] = {}
        for column in columns & set(self.stats or ()) & set(schema.names):
            lo, hi, nulls = (self.stats or {})[column]
            arrow_type = schema.field(column).type
            try:
                typed_lo, typed_hi = _stat_value(lo, arrow_type), _stat_value(hi, arrow_type)
                if typed_lo is not None and typed_hi is not None and typed_lo > typed_hi:
                    raise ValueError(f"minimum {lo!r} is above maximum {hi!r}")
            except (ValueError, TypeError, pa.ArrowException) as exc:
                uuid = self.key.split("/", 1)[0]
                raise CorruptMetadataError(
                    f"the statistics of column {column!r} of data file {self.key!r} are "
                    f"malformed ({type(exc).__name__}: {exc}); run `ktk check STORE {uuid}`"
                ) from exc
            out[column] = (typed_lo, typed_hi, nulls > 0)
        return out

    @property
    def partition_dir(self) -> str:
        return self.label.rsplit("/", 1)[0] if "/" in self.label else ""


@dataclass(frozen=True)
class CommitInfo:
    """What a snapshot records about the commit that made it."""

    version: int
    timestamp: datetime
    operation: str
    files_added: int = 0
    files_removed: int = 0
    rows_added: int | None = None
    writer: str = ""
    #: unique per commit attempt: lets a writer recognise its own log entry
    #: after a put-if-absent whose answer was lost ("" in entries before tokens)
    token: str = ""
    #: the ``token`` of the entry this one was built on ("" for a first commit,
    #: a state plateau wrote, or an entry before tokens): a chain readers verify
    parent: str = ""
    #: rows of the files the commit removed (``None``: unknown, or an entry
    #: written before the field existed); 0 for compaction, which keeps its rows
    rows_removed: int | None = None

    @property
    def is_tombstone(self) -> bool:
        """Whether this entry records the deletion of the dataset (no state after it)."""
        return self.operation == TOMBSTONE_OPERATION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "timestamp": self.timestamp.isoformat(),
            "operation": self.operation,
            "files_added": self.files_added,
            "files_removed": self.files_removed,
            "rows_added": self.rows_added,
            "writer": self.writer,
            "token": self.token,
            "parent": self.parent,
            "rows_removed": self.rows_removed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitInfo:
        stamp = datetime.fromisoformat(str(data["timestamp"]))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return cls(
            version=int(data["version"]),
            timestamp=stamp,
            operation=str(data["operation"]),
            files_added=int(data.get("files_added", 0)),
            files_removed=int(data.get("files_removed", 0)),
            rows_added=_count_field(data, "rows_added"),
            writer=str(data.get("writer", "")),
            token=str(data.get("token", "")),
            parent=str(data.get("parent", "")),
            rows_removed=_count_field(data, "rows_removed"),
        )


def _count_field(data: Mapping[str, Any], name: str) -> int | None:
    """An optional row count of a commit record: absent or null is ``None``."""
    value = data.get(name)
    return None if value is None else int(value)


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class DatasetMetadata:
    """Parsed dataset metadata: the kartothek view and our extension together."""

    uuid: str
    partition_keys: tuple[str, ...] = ()
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    indices: Mapping[str, str | Mapping[Any, list[str]]] = field(default_factory=dict)
    user_metadata: Mapping[str, Any] = field(default_factory=dict)
    table: str = keys.TABLE
    schema: pa.Schema | None = None
    commit: CommitInfo = field(default_factory=lambda: CommitInfo(0, _epoch(), "external"))
    managed: bool = False  # True once ktk-arrow's log governs the dataset
    #: False when loaded past a missing or lagging view (its writer died before
    #: publishing): the next commit then rewrites ``_common_metadata`` too
    view_current: bool = field(default=True, compare=False)
    #: ``time.monotonic()`` when this state was read as the latest (0: unknown);
    #: a commit rebuilds on a fresh read when its base is older than a minute
    loaded_at: float = field(default=0.0, compare=False)
    #: dataset settings kept with the snapshot (``view``, ``auto_compact``, ...)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: index segments written since each column's base index (``indices``)
    index_tail: Mapping[str, tuple[IndexSegment, ...]] = field(default_factory=dict)
    #: ``(value, label)`` pairs of each column's base index, where known
    index_pairs: Mapping[str, int] = field(default_factory=dict)
    #: the version of the lazy view when this state was read past one (-1: the view is
    #: not lazy or unknown): writers refresh it when it lags too far
    view_version: int = field(default=-1, compare=False)
    #: files may hold fewer columns or narrower types than ``schema`` (it evolved
    #: under them, ``schema_mode="merge"``): readers unify the files' schemas by name
    schema_evolved: bool = False

    @property
    def segments(self) -> tuple[manifest.Segment, ...]:
        """The manifest segments holding the files not listed inline."""
        return self.files.segments if isinstance(self.files, manifest.LazyFiles) else ()

    @property
    def inline_files(self) -> Mapping[str, FileEntry]:
        """The files the root lists itself (all of them without segments)."""
        return self.files.inline if isinstance(self.files, manifest.LazyFiles) else self.files

    @property
    def version(self) -> int:
        return self.commit.version

    @property
    def partitions(self) -> Mapping[str, FileEntry]:
        """kartothek's name for the files (each file is a "partition" there)."""
        return self.files

    @property
    def total_rows(self) -> int | None:
        rows = [f.rows for f in self.inline_files.values()] + [s.rows for s in self.segments]
        return None if any(r is None for r in rows) else sum(r for r in rows if r is not None)

    def partition_values(self, label: str) -> dict[str, Any]:
        """The typed partition values of one file.

        A label that does not name exactly the partition keys, in order, or
        whose values do not parse as their column types is corrupt metadata:
        Arrow would otherwise be told wrong partition values.
        """
        try:
            return self._partition_values(label)
        except InvalidArgumentError as exc:
            raise CorruptMetadataError(
                f"dataset {self.uuid!r}: partition label {label!r} is malformed: {exc}"
            ) from exc

    def _partition_values(self, label: str) -> dict[str, Any]:
        pairs, _ = keys.parse_label(label)
        if len(pairs) != len(self.partition_keys) or any(
            col != want for (col, _), want in zip(pairs, self.partition_keys)
        ):
            raise InvalidArgumentError(
                f"it names the columns {[col for col, _ in pairs]}, but the partition keys "
                f"are {list(self.partition_keys)}"
            )
        out = {}
        for column, raw in pairs:
            arrow_type = (
                self.schema.field(column).type
                if self.schema is not None and column in self.schema.names
                else pa.string()
            )
            out[column] = _parse_value(raw, arrow_type)
        return out

    def with_changes(self, **changes: Any) -> DatasetMetadata:
        return replace(self, **changes)

    # -- serialisation ------------------------------------------------------
    def to_dict(self, *, view: bool = False, lazy_view: bool = False) -> dict[str, Any]:
        """The root (log entry) of this snapshot, or with ``view`` the kartothek view.

        Our extension comes first, so a reader can tell a lazy view (one that
        lags and points at the head) from the first bytes of the object.  A
        view lists every file; ``lazy_view`` leaves out our per-file facts.
        """
        files = self.files if view else self.inline_files
        ext: dict[str, Any] = {"format": FORMAT_VERSION, "commit": self.commit.to_json()}
        if lazy_view:
            ext["lazy"] = True
        else:
            ext["files"] = {
                label: [e.size, e.rows, e.stats] if e.stats else [e.size, e.rows]
                for label, e in files.items()
            }
        if self.schema is not None:
            ext["schema"] = base64.b64encode(self.schema.serialize().to_pybytes()).decode()
        if self.table != keys.TABLE:  # a dataset without files names its table nowhere else
            ext["table"] = self.table
        if self.settings:
            ext["settings"] = dict(self.settings)
        if self.schema_evolved:
            ext["schema_evolved"] = True
        if not view:
            if self.segments:
                ext["segments"] = [segment.to_json() for segment in self.segments]
            index_ext = {
                column: {
                    "pairs": self.index_pairs.get(column),
                    "tail": [t.to_json() for t in self.index_tail.get(column, ())],
                }
                for column in self.indices
                if self.index_tail.get(column) or column in self.index_pairs
            }
            if index_ext:
                ext["index"] = index_ext
        indices = {
            col: _index_ref_to_json(ref)
            for col, ref in self.indices.items()
            if not (view and self.index_tail.get(col))  # a view lists only whole indices
        }
        return {
            EXTENSION_KEY: ext,
            "dataset_metadata_version": 4,
            "dataset_uuid": self.uuid,
            "metadata": dict(self.user_metadata),
            "partitions": {
                label: {"files": {self.table: entry.key}} for label, entry in files.items()
            },
            "partition_keys": list(self.partition_keys),
            "indices": indices,
        }

    def to_json(self, *, view: bool = False, lazy_view: bool = False) -> bytes:
        return json.dumps(
            self.to_dict(view=view, lazy_view=lazy_view), separators=(",", ":")
        ).encode()

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "metadata",
        loader: Callable[[manifest.Segment], pa.Table] | None = None,
    ) -> DatasetMetadata:
        """Parse metadata; anything malformed or hostile is a ``CorruptMetadataError``.

        ``loader`` reads a manifest segment, for roots that have them.
        """
        try:
            meta = cls._from_dict(data, source, loader)
        except CorruptMetadataError:
            raise
        except (
            KeyError,
            TypeError,
            AttributeError,
            ValueError,
            IndexError,
            pa.ArrowException,
            binascii.Error,
        ) as exc:
            raise CorruptMetadataError(
                f"{source} is malformed: {type(exc).__name__}: {exc}"
            ) from exc
        _check_keys(meta, source)
        return meta

    @classmethod
    def _from_dict(
        cls,
        data: Mapping[str, Any],
        source: str,
        loader: Callable[[manifest.Segment], pa.Table] | None,
    ) -> DatasetMetadata:
        try:
            version = data["dataset_metadata_version"]
            uuid = data["dataset_uuid"]
        except (KeyError, TypeError) as exc:
            raise CorruptMetadataError(
                f"{source} is not kartothek dataset metadata: missing key {exc}"
            ) from exc
        if version != 4:
            raise CorruptMetadataError(
                f"{source} has dataset_metadata_version {version!r}; only version 4 is supported"
            )
        if "partitions" not in data:
            raise CorruptMetadataError(
                f"{source} has no explicit 'partitions'; rewrite it with plateau >= 4 first"
            )
        ext = data.get(EXTENSION_KEY) or {}
        if not isinstance(ext, Mapping):
            raise CorruptMetadataError(f"{source}: {EXTENSION_KEY!r} is not an object")
        sizes: Mapping[str, Any] = ext.get("files") or {}
        if not isinstance(sizes, Mapping):
            raise CorruptMetadataError(f"{source}: {EXTENSION_KEY}.files is not an object")
        files: dict[str, FileEntry] = {}
        table = ext.get("table", keys.TABLE)
        if type(table) is not str or not table or "/" in table or table in (".", ".."):
            raise CorruptMetadataError(f"{source}: invalid table name {table!r}")
        for label, part in data["partitions"].items():
            part_files = part.get("files", {}) if isinstance(part, Mapping) else {}
            if len(part_files) != 1:
                raise CorruptMetadataError(
                    f"{source}: partition {label!r} has tables {sorted(part_files)}; only "
                    "single-table datasets (kartothek v4 / plateau) are supported"
                )
            ((table, key),) = part_files.items()
            size, rows, stats = _file_facts(sizes.get(label), label, source)
            files[label] = FileEntry(label, key, size, rows, stats)
        schema = None
        if "schema" in ext:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(ext["schema"])))
        partition_keys = data.get("partition_keys")
        if partition_keys is None:
            partition_keys = _partition_keys_from_labels(files)
        segments = ext.get("segments")
        all_files: Mapping[str, FileEntry] = files
        if segments:
            if type(segments) is not list:
                raise CorruptMetadataError(f"{source}: {EXTENSION_KEY}.segments is not a list")
            parsed = [manifest.Segment.from_json(raw, source) for raw in segments]
            for segment in parsed:
                if not is_store_key(segment.key) or not segment.key.startswith(f"{uuid}/"):
                    raise CorruptMetadataError(
                        f"{source} references manifest segment {segment.key!r} outside "
                        f"dataset {uuid!r}"
                    )
            all_files = manifest.LazyFiles(
                files, parsed, loader, keys.table_prefix(uuid, table) + "/"
            )
        index_tail, index_pairs = _index_ext(ext.get("index"), uuid, source)
        if not isinstance(partition_keys, list) or not all(
            isinstance(k, str) for k in partition_keys
        ):
            raise CorruptMetadataError(
                f"{source}: partition_keys must be a list of column names, got {partition_keys!r}"
            )
        return cls(
            uuid=uuid,
            partition_keys=tuple(partition_keys),
            files=all_files,
            indices=dict(data.get("indices") or {}),
            index_tail=index_tail,
            index_pairs=index_pairs,
            user_metadata=dict(data.get("metadata") or {}),
            table=table,
            schema=schema,
            commit=CommitInfo.from_json(ext["commit"])
            if "commit" in ext
            else CommitInfo(0, _creation_time(data), "external"),
            managed=bool(ext),
            settings=_settings(ext.get("settings"), source),
            schema_evolved=ext.get("schema_evolved") is True,
        )

    @classmethod
    def from_json(
        cls,
        raw: bytes,
        *,
        source: str = "metadata",
        loader: Callable[[manifest.Segment], pa.Table] | None = None,
    ) -> DatasetMetadata:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorruptMetadataError(f"{source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=source, loader=loader)

    @classmethod
    def from_msgpack(cls, raw: bytes, *, source: str = "metadata") -> DatasetMetadata:
        try:
            data = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw), raw=False)
        except Exception as exc:
            raise CorruptMetadataError(f"{source} is not valid msgpack.zstd: {exc}") from exc
        return cls.from_dict(data, source=source)


@dataclass(frozen=True)
class IndexSegment:
    """One index file of a column (kartothek's layout), as a root references it."""

    key: str
    #: its ``(value, label)`` pairs (``None``: unknown)
    pairs: int | None
    level: int

    def to_json(self) -> list[Any]:
        return [self.key, self.pairs, self.level]


def _index_ext(
    raw: Any, uuid: str, source: str
) -> tuple[dict[str, tuple[IndexSegment, ...]], dict[str, int]]:
    if raw is None:
        return {}, {}
    if not isinstance(raw, Mapping):
        raise CorruptMetadataError(f"{source}: {EXTENSION_KEY}.index is not an object")
    tails: dict[str, tuple[IndexSegment, ...]] = {}
    pairs: dict[str, int] = {}
    for column, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise CorruptMetadataError(f"{source}: index of {column!r} is malformed: {spec!r}")
        count = spec.get("pairs")
        if count is not None:
            if type(count) is not int or count < 0:
                raise CorruptMetadataError(f"{source}: index of {column!r} has pairs {count!r}")
            pairs[column] = count
        tail = []
        for item in spec.get("tail") or ():
            if (
                type(item) is not list
                or len(item) != 3
                or not is_own_key(uuid, item[0])
                or not (item[1] is None or (type(item[1]) is int and item[1] >= 0))
                or type(item[2]) is not int
            ):
                raise CorruptMetadataError(
                    f"{source}: index segment {item!r} of column {column!r} is malformed"
                )
            tail.append(IndexSegment(item[0], item[1], item[2]))
        if tail:
            tails[column] = tuple(tail)
    return tails, pairs


def _settings(raw: Any, source: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise CorruptMetadataError(f"{source}: {EXTENSION_KEY}.settings is not an object")
    return dict(raw)


_STATS_MAX_TEXT = 64


def file_stats(table: pa.Table) -> dict[str, list[Any]]:
    """Per-column ``[min, max, null count]`` of a data file, for pruning at planning time.

    Kept for the types whose order Arrow and Python agree on; long strings are
    left out so the metadata stays small.
    """
    out: dict[str, list[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not is_scalar_type(column.type):
            continue
        if column.null_count == len(column):
            out[name] = [None, None, int(column.null_count)]  # bounds unknown, nulls known
            continue
        bounds = pc.min_max(column)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if isinstance(lo, str) and (len(lo) > _STATS_MAX_TEXT or len(hi) > _STATS_MAX_TEXT):
            continue
        if isinstance(lo, float) and (lo != lo or hi != hi):
            continue
        out[name] = [_stat_json(lo), _stat_json(hi), int(column.null_count)]
    return out


def _stat_json(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _stat_value(value: Any, arrow_type: pa.DataType) -> Any:
    if isinstance(value, str) and (
        pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)
    ):
        return pa.array([value]).cast(arrow_type)[0].as_py()
    return value


def _parse_value(raw: str, arrow_type: pa.DataType) -> Any:
    """Partition text -> value, with the common cases off Arrow's slow scalar path."""
    if raw != keys.NULL_VALUE:
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return raw
        if pa.types.is_integer(arrow_type):
            try:
                return int(raw)
            except ValueError:
                pass
    return _parse_cached(raw, arrow_type)


@functools.lru_cache(maxsize=65536)
def _parse_cached(raw: str, arrow_type: pa.DataType) -> Any:
    return keys.string_to_value(raw, arrow_type)


def _file_facts(
    known: Any, label: str, source: str
) -> tuple[int | None, int | None, Mapping[str, list[Any]] | None]:
    """``[size, rows]`` or ``[size, rows, stats]`` of one file, checked.

    Arrow is told the size (it reads the footer at that offset), ``count_rows``
    answers with the rows and planning prunes by the statistics: a value of the
    wrong type would surface as a raw ``TypeError`` deep inside a scan, a
    negative one as a wrong answer.
    """
    if known is None:
        return None, None, None
    if type(known) is not list or len(known) not in (2, 3):
        raise CorruptMetadataError(
            f"{source}: the facts of file {label!r} must be [size, rows] or "
            f"[size, rows, statistics], got {known!r}"
        )
    size, rows = known[0], known[1]
    if not _count_or_none(size) or not _count_or_none(rows):
        raise CorruptMetadataError(
            f"{source}: file {label!r} has byte size {size!r} and row count {rows!r}; "
            "expected non-negative integers (or null)"
        )
    stats = known[2] if len(known) == 3 else None
    if stats is None:
        return size, rows, None
    if not isinstance(stats, Mapping):
        raise CorruptMetadataError(
            f"{source}: the statistics of file {label!r} must be an object, got {stats!r}"
        )
    for column, triple in stats.items():
        if not _valid_stat(triple, rows):
            raise CorruptMetadataError(
                f"{source}: statistics {triple!r} of column {column!r} in file {label!r} are "
                "malformed; expected [min, max, null count] with both bounds or neither, "
                "min <= max, and at most as many nulls as rows"
            )
    return size, rows, stats


def _count_or_none(value: Any) -> bool:
    return value is None or (type(value) is int and value >= 0)


_NUMBERS = (int, float)


def _valid_stat(triple: Any, rows: int | None) -> bool:
    """``[min, max, null count]`` with JSON scalar bounds, both or neither, min <= max.

    Text bounds of dates and timestamps are ordered once typed (``typed_stats``).
    Exact type checks: JSON and msgpack yield no subclasses, and bool is no int here.
    """
    if type(triple) is not list or len(triple) != 3:
        return False
    lo, hi, nulls = triple
    if type(nulls) is not int or nulls < 0 or (rows is not None and nulls > rows):
        return False
    kind = type(lo)
    if kind is not type(hi):
        return kind in _NUMBERS and type(hi) in _NUMBERS and bool(lo <= hi)
    if kind is str or lo is None:
        return True
    if kind is int or kind is float or kind is bool:
        return bool(lo <= hi) or lo != lo or hi != hi  # NaN bounds are not ordered
    return False


def _check_keys(meta: DatasetMetadata, source: str) -> None:
    """Every referenced object is a plain key inside the store, referenced once.

    A key is relative to the store root: no leading ``/``, no ``\\``, no
    empty, ``.`` or ``..`` segment, so no reference escapes the store.  It may
    lie under another dataset's prefix (plateau datasets can reference files
    of another uuid in the same store): such files are read, never deleted
    (gc, ``delete_dataset`` and compaction touch only ``<uuid>/``, see
    :func:`is_own_key`).  No key under two labels or as data and index at
    once: two labels sharing a file would read its rows twice, and removing
    one label (overwrite, compaction, gc) would delete the other's data.
    """
    if not isinstance(meta.uuid, str) or not keys.UUID_RE.fullmatch(meta.uuid):
        raise CorruptMetadataError(f"{source} names an invalid dataset_uuid {meta.uuid!r}")
    for label in meta.inline_files:
        if not isinstance(label, str) or not label:
            raise CorruptMetadataError(f"{source} has an invalid partition label {label!r}")
    # key -> the label (or index column) referencing it; owners are named only on error
    owners: dict[str, tuple[str, str]] = {}
    for entry in meta.inline_files.values():
        _check_ref(meta, entry.key, ("partition", entry.label), owners, source)
    for column, ref in meta.indices.items():
        if isinstance(ref, str):
            _check_ref(meta, ref, ("the index of column", column), owners, source)
        elif not isinstance(ref, Mapping) or not all(
            type(labels) is list and all(type(x) is str for x in labels) for labels in ref.values()
        ):
            raise CorruptMetadataError(
                f"{source}: the index of column {column!r} must be an index file key or "
                f"{{value: [labels]}}, got {ref!r}"
            )


def is_store_key(ref: Any) -> bool:
    """Whether ``ref`` is a plain store-relative key that cannot escape the store root."""
    return (
        type(ref) is str
        and not ref.startswith("/")
        and "\\" not in ref
        and not any(part in ("", ".", "..") for part in ref.split("/"))
    )


def is_own_key(dataset_uuid: str, key: str) -> bool:
    """Whether ``key`` lies under the dataset's own prefix ``<uuid>/``.

    Only such objects are ever deleted by the dataset's maintenance (gc,
    deletion, compaction); referenced objects of other prefixes are read only.
    """
    return key.startswith(f"{dataset_uuid}/") and is_store_key(key)


def _check_ref(
    meta: DatasetMetadata,
    ref: Any,
    owner: tuple[str, str],
    owners: dict[str, tuple[str, str]],
    source: str,
) -> None:
    if not is_store_key(ref):
        raise CorruptMetadataError(
            f"{source} references {ref!r}, which is not an object of the store of dataset "
            f"{meta.uuid!r} (a key must be relative, without '..', '.', empty segments or "
            "backslashes)"
        )
    first = owners.setdefault(ref, owner)
    if first is not owner:
        raise CorruptMetadataError(
            f"{source} references {ref!r} twice, from {first[0]} {first[1]!r} and from "
            f"{owner[0]} {owner[1]!r}; an object belongs to one partition or index "
            f"(run `ktk check STORE {meta.uuid}`)"
        )


def _index_ref_to_json(ref: str | Mapping[Any, list[str]]) -> Any:
    if isinstance(ref, str):
        return ref
    return {str(k): list(v) for k, v in ref.items()}


def _creation_time(data: Mapping[str, Any]) -> datetime:
    raw = (data.get("metadata") or {}).get("creation_time")
    if isinstance(raw, str):
        try:
            stamp = datetime.fromisoformat(raw)
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return _epoch()


def _partition_keys_from_labels(files: Mapping[str, FileEntry]) -> list[str]:
    for label in files:
        pairs, _ = keys.parse_label(label)
        return [col for col, _ in pairs]
    return []
