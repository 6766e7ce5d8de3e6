"""Manifest segments: immutable parquet files listing part of a snapshot's files.

A large dataset's snapshot (its root: the log entry) lists a few files
inline and points at segments for the rest, as Iceberg's manifest list
points at manifests.  A segment is written once and shared by every later
snapshot that keeps all of its files, so an append writes its own files and
a root, not the dataset.  Segments are merged in tiers (``FANIN`` segments of
one level make one of the next), which bounds their number by
``FANIN * levels`` and the bytes each file is rewritten to ``O(log files)``.

A segment's rows are sorted by the partition columns, which are stored
typed: planning hands a partition filter to Arrow, whose row-group
statistics skip the rest of a large segment, and builds Python objects only
for the files that match.  The root keeps each segment's per-column bounds,
so segments that cannot match are not read at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CorruptMetadataError

if TYPE_CHECKING:  # metadata imports this module
    from .metadata import FileEntry

T = TypeVar("T")

#: files a root lists inline before they are written out as a segment
INLINE_MAX = 64
#: segments of one level merged into one of the next
FANIN = 8
#: rows per row group of a segment: what a partition-filtered read fetches
ROW_GROUP = 2048

LABEL = "_ktk_label"
KEY = "_ktk_key"
SIZE = "_ktk_size"
ROWS = "_ktk_rows"
STATS = "_ktk_stats"
FIXED = (LABEL, KEY, SIZE, ROWS, STATS)


@dataclass(frozen=True)
class Segment:
    """A segment as its root references it."""

    key: str
    files: int
    rows: int | None
    level: int
    #: partition column -> [min, max, null count] (JSON values, like file statistics)
    bounds: Mapping[str, list[Any]]

    def to_json(self) -> list[Any]:
        return [self.key, self.files, self.rows, self.level, dict(self.bounds)]

    @classmethod
    def from_json(cls, raw: Any, source: str) -> Segment:
        if (
            type(raw) is not list
            or len(raw) != 5
            or type(raw[0]) is not str
            or type(raw[1]) is not int
            or raw[1] < 0
            or not (raw[2] is None or (type(raw[2]) is int and raw[2] >= 0))
            or type(raw[3]) is not int
            or not isinstance(raw[4], Mapping)
        ):
            raise CorruptMetadataError(
                f"{source}: a manifest segment must be [key, files, rows, level, bounds], "
                f"got {raw!r}"
            )
        return cls(raw[0], raw[1], raw[2], raw[3], dict(raw[4]))


def level_of(files: int) -> int:
    """Level 0 holds up to ``INLINE_MAX * FANIN`` files, each next level ``FANIN`` times more."""
    if files <= INLINE_MAX * FANIN:
        return 0
    return int(math.log(files / INLINE_MAX, FANIN))


def merge_plan(levels: Sequence[int]) -> list[int] | None:
    """Positions of the segments to merge next (``FANIN`` of the lowest full level), or None."""
    by_level: dict[int, list[int]] = {}
    for position, level in enumerate(levels):
        by_level.setdefault(level, []).append(position)
    for level in sorted(by_level):
        if len(by_level[level]) >= FANIN:
            return by_level[level][:FANIN]
    return None


def merge_tiers(
    items: Sequence[T], level: Callable[[T], int], merge: Callable[[list[T], int], T]
) -> list[T]:
    """``items`` after merging ``FANIN`` of one level at a time, until no level is full.

    ``merge(group, floor)`` writes the merged item; its level must be at least
    ``floor`` (one above the group's), so that merging always ends.  Used for
    manifest segments and index tails alike.
    """
    out = list(items)
    while (chosen := merge_plan([level(item) for item in out])) is not None:
        group = [out[i] for i in chosen]
        merged = merge(group, level(group[0]) + 1)
        out = [item for i, item in enumerate(out) if i not in chosen] + [merged]
    return out


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def table_schema(partition_keys: Sequence[str], schema: pa.Schema | None) -> pa.Schema:
    fields = [
        pa.field(LABEL, pa.string()),
        pa.field(KEY, pa.string()),
        pa.field(SIZE, pa.int64()),
        pa.field(ROWS, pa.int64()),
        pa.field(STATS, pa.string()),
    ]
    for column in partition_keys:
        arrow_type = (
            _value_type(schema.field(column).type)
            if schema is not None and column in schema.names
            else pa.string()
        )
        fields.append(pa.field(column, arrow_type))
    return pa.schema(fields)


def to_table(
    entries: Sequence[FileEntry],
    partition_keys: Sequence[str],
    schema: pa.Schema | None,
    values_of: Callable[[str], Mapping[str, Any]],
    prefix: str = "",
) -> pa.Table:
    """The segment table of ``entries``, sorted by partition values, then label.

    A key that is the dataset's own ``<prefix><label>.parquet`` is stored as
    null (a third of a segment's bytes otherwise): see :func:`entries`.
    """
    target = table_schema(partition_keys, schema)
    columns: dict[str, list[Any]] = {
        LABEL: [e.label for e in entries],
        KEY: [None if prefix and e.key == f"{prefix}{e.label}.parquet" else e.key for e in entries],
        SIZE: [e.size for e in entries],
        ROWS: [e.rows for e in entries],
        STATS: [json.dumps(e.stats, separators=(",", ":")) if e.stats else None for e in entries],
    }
    if partition_keys:
        values = [values_of(e.label) for e in entries]
        for column in partition_keys:
            columns[column] = [v[column] for v in values]
    table = pa.table(
        {name: pa.array(columns[name], type=target.field(name).type) for name in target.names}
    )
    order = [(c, "ascending") for c in partition_keys] + [(LABEL, "ascending")]
    return table.sort_by(order)


def concat(
    tables: Sequence[pa.Table], partition_keys: Sequence[str], schema: pa.Schema | None
) -> pa.Table:
    """Segment tables as one, sorted again (the merge of segments)."""
    target = table_schema(partition_keys, schema)
    table = pa.concat_tables([t.cast(target) for t in tables])
    order = [(c, "ascending") for c in partition_keys] + [(LABEL, "ascending")]
    return table.sort_by(order)


def encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=ROW_GROUP,
        compression="zstd",
        coerce_timestamps=None,
        write_statistics=[c for c in table.column_names if c not in (STATS, KEY, SIZE, ROWS)],
    )
    return bytes(sink.getvalue().to_pybytes())


def bounds_of(table: pa.Table, partition_keys: Sequence[str]) -> dict[str, list[Any]]:
    """``[min, max, null count]`` of each partition column, as a root keeps them."""
    from .metadata import _stat_json  # the same JSON form as file statistics

    out: dict[str, list[Any]] = {}
    for column in partition_keys:
        values = table.column(column)
        nulls = values.null_count
        if nulls == len(values):
            out[column] = [None, None, nulls]
            continue
        bounds = pc.min_max(values)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if isinstance(lo, float) and (lo != lo or hi != hi):
            out[column] = [None, None, nulls]
            continue
        out[column] = [_stat_json(lo), _stat_json(hi), nulls]
    return out


def decode(raw: bytes, source: str) -> pa.Table:
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptMetadataError(f"manifest segment {source!r} is not parquet: {exc}") from exc
    check_table(table, source)
    return table


def check_table(table: pa.Table, source: str) -> None:
    missing = [c for c in FIXED if c not in table.column_names]
    if missing:
        raise CorruptMetadataError(f"manifest segment {source!r} lacks the columns {missing}")
    if table.column(LABEL).null_count:
        raise CorruptMetadataError(f"manifest segment {source!r} has files without a label")
    # the checks metadata.is_store_key and _file_facts make per file, vectorised
    bad_key = pc.match_substring_regex(table.column(KEY), r"(^/)|\\|(^|/)\.{0,2}(/|$)")
    if pc.any(bad_key).as_py():
        key = table.column(KEY).filter(bad_key)[0].as_py()
        raise CorruptMetadataError(
            f"manifest segment {source!r} references {key!r}, which is not a plain key of the "
            "store (relative, without '..', '.', empty segments or backslashes)"
        )
    for column in (SIZE, ROWS):
        values = table.column(column).cast(pa.int64())
        if pc.any(pc.less(values, 0)).as_py():
            raise CorruptMetadataError(f"manifest segment {source!r} has negative {column}")


def entries(
    table: pa.Table, source: str, prefix: str, *, stats: bool = True
) -> Iterator[FileEntry]:
    """The files of (a filtered part of) a segment table, as Python objects.

    ``prefix`` is the dataset's ``<uuid>/<table>/``: a null key is
    ``<prefix><label>.parquet``.  ``stats=False`` leaves their statistics
    undecoded (planning without a filter on data columns never looks at them).
    """
    from .metadata import FileEntry, _file_facts

    labels = table.column(LABEL).to_pylist()
    keys_ = [
        f"{prefix}{label}.parquet" if key is None else key
        for label, key in zip(labels, table.column(KEY).to_pylist(), strict=True)
    ]
    sizes = table.column(SIZE).to_pylist()
    rows = table.column(ROWS).to_pylist()
    texts = table.column(STATS).to_pylist() if stats else [None] * table.num_rows
    for label, key, size, count, text in zip(labels, keys_, sizes, rows, texts, strict=True):
        if text is None:  # sizes and rows were checked with the table (check_table)
            yield FileEntry(label, key, size, count)
            continue
        facts: list[Any] = [size, count]
        if text is not None:
            try:
                facts.append(json.loads(text))
            except ValueError as exc:
                raise CorruptMetadataError(
                    f"manifest segment {source!r}: statistics of {label!r} are not JSON"
                ) from exc
        s, r, st = _file_facts(facts, label, source)
        yield FileEntry(label, key, s, r, st)


def partition_values(table: pa.Table, partition_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Each file's typed partition values, straight from the segment's columns (no parsing)."""
    columns = [table.column(c).to_pylist() for c in partition_keys]
    return (
        [dict(zip(partition_keys, row, strict=True)) for row in zip(*columns, strict=True)]
        if (partition_keys)
        else [{} for _ in range(table.num_rows)]
    )


class LazyFiles(Mapping[str, "FileEntry"]):
    """All files of a snapshot: the root's inline ones, plus its segments' read on first use.

    Code that needs every file (compaction, gc, a full overwrite) reads every
    segment once; planning instead reads only the segments and rows a filter
    can match (:mod:`ktk_arrow.planning`), through ``inline`` and ``segments``.
    """

    def __init__(
        self,
        inline: Mapping[str, FileEntry],
        segments: Sequence[Segment],
        loader: Callable[[Segment], pa.Table] | None,
        prefix: str,
    ) -> None:
        #: ``<uuid>/<table>/``: where a segment's null keys point
        self.prefix = prefix
        self.inline = dict(inline)
        self.segments = tuple(segments)
        self.loader = loader
        self._all: dict[str, FileEntry] | None = None

    def _files(self) -> dict[str, FileEntry]:
        if self._all is None:
            if self.loader is None:
                raise CorruptMetadataError(
                    "a snapshot with manifest segments was parsed without a store to read them"
                )
            out: dict[str, FileEntry] = {}
            for segment in self.segments:
                for entry in entries(self.loader(segment), segment.key, self.prefix):
                    if entry.label in out:
                        raise CorruptMetadataError(
                            f"file {entry.label!r} is listed by two manifest segments "
                            f"(one is {segment.key!r})"
                        )
                    out[entry.label] = entry
            for label, entry in self.inline.items():
                if label in out:
                    raise CorruptMetadataError(
                        f"file {label!r} is listed inline and by a manifest segment"
                    )
                out[label] = entry
            self._all = out
        return self._all

    def __getitem__(self, label: str) -> FileEntry:
        if label in self.inline:
            return self.inline[label]
        return self._files()[label]

    def __contains__(self, label: object) -> bool:
        if label in self.inline:
            return True
        return label in self._files()

    def __iter__(self) -> Iterator[str]:
        return iter(self._files())

    def __len__(self) -> int:
        return len(self.inline) + sum(s.files for s in self.segments)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyFiles) and self.segments == other.segments:
            return self.inline == other.inline
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]
