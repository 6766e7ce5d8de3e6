"""The change feed: rows inserted and deleted by a range of commits (``ka.changes``).

Like Delta Lake's change data feed (``table_changes(start, end)``): the
commits ``start_version`` .. ``end_version`` inclusive, each row tagged
with ``_change_type`` (``"insert"`` / ``"delete"``), ``_commit_version``
and ``_commit_timestamp``.  Rows are whole files' rows, because kartothek
commits add and remove whole files: a commit that removes files ``R`` and
adds files ``A`` of one partition directory deleted ``R - A`` and inserted
``A - R`` (multiset differences over every column), so rows a rewrite
carried over unchanged do not appear.

The log does not record a commit's file changes, but two consecutive
snapshots tell them: every entry lists its files (small datasets) or points
at immutable manifest segments (large ones), and a segment both snapshots
share holds the same files in both, so only the inline files and the
segments that differ are compared.  Only the files that differ are read.
Semantics, costs and limits: ``docs/changefeed.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import commit
from .arrow import KartothekDataset, _dataset_schema, read_planned
from .errors import DatasetNotFoundError, InvalidArgumentError
from .planning import FileTask
from .spec import keys, manifest
from .spec.metadata import DatasetMetadata, FileEntry
from .storage import Store, StoreLike, resolve_store

CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"
COMMIT_TIMESTAMP = "_commit_timestamp"
CHANGE_COLUMNS = (CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP)
INSERT = "insert"
DELETE = "delete"

#: data bytes of removed and added files compared in one multiset difference: partition
#: directories are batched up to this, so memory stays bounded by a batch, not a commit
DIFF_BATCH_BYTES = 256 * 1024 * 1024

#: compaction moves rows into other files without changing them (its commit records
#: ``rows_added == rows_removed == 0``): its files are not read
_ROW_PRESERVING = frozenset({"compact"})

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def changes(
    store: StoreLike,
    dataset_uuid: str,
    start_version: int,
    end_version: int | None = None,
    *,
    columns: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """The rows inserted and deleted by commits ``start_version`` .. ``end_version`` (inclusive).

    ``end_version=None`` is the latest version.  Each row carries the
    dataset's columns (partition columns typed as in the dataset schema,
    as ``ka.dataset(...).to_table()`` returns them), then ``_change_type``
    (``"insert"`` or ``"delete"``), ``_commit_version`` (int64) and
    ``_commit_timestamp`` (UTC).  Rows are ordered by commit, each commit's
    deletes before its inserts: replaying them in that order on the rows of
    version ``start_version - 1`` (none for the dataset's first version)
    yields the rows of ``end_version``.  ``columns`` selects the dataset
    columns returned (the change columns are always returned); rows are
    still compared on every column.

    Version ``start_version - 1`` must still be retained (not expired),
    unless ``start_version`` is the dataset's first version:
    ``InvalidArgumentError`` names the versions available otherwise.
    """
    resolved = resolve_store(store, storage_options)
    keys.validate_uuid(dataset_uuid)
    _check_version(start_version, "start_version")
    if end_version is not None:
        _check_version(end_version, "end_version")
    latest = commit.load_latest(resolved, dataset_uuid)
    if latest is None:
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} does not exist in {resolved.url!r}; check the uuid and store"
        )
    end = latest.version if end_version is None else end_version
    if start_version > end or end > latest.version:
        lo = _first_available(resolved, dataset_uuid, latest)
        if start_version > latest.version:
            why = f"start_version {start_version} is after the latest version {latest.version}"
        elif end > latest.version:
            why = f"end_version {end} is after the latest version {latest.version}"
        else:
            why = f"start_version {start_version} is after end_version {end}"
        raise InvalidArgumentError(
            f"cannot read the changes of versions {start_version}..{end} of dataset "
            f"{dataset_uuid!r}: {why}; changes are available for versions "
            f"{lo}..{latest.version}"
        )
    snapshots = _Snapshots(resolved, dataset_uuid, latest)
    end_meta = snapshots.known[end] = snapshots.read(end)  # its schema shapes the result
    if end_meta is None or end_meta.commit.is_tombstone:
        raise snapshots.unavailable(start_version, end, end_meta)
    data_schema = _data_schema(end_meta)
    selected = _selected_columns(columns, data_schema, dataset_uuid)
    pieces = [
        piece
        for before, after in snapshots.pairs(start_version, end)
        for piece in _commit_changes(resolved, before, after, selected)
    ]
    return _assemble(pieces, data_schema, selected)


# -- versions -------------------------------------------------------------------


def _check_version(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int, got {value!r}")


#: log entries read ahead (in parallel) while the commits before them are diffed
READ_AHEAD = 8


class _Snapshots:
    """The snapshots of a version range, read a window at a time.

    Only a window of entries is held: a small dataset's entry lists every
    file, so holding a long range at once would cost O(versions x files).
    """

    def __init__(self, store: Store, dataset_uuid: str, latest: DatasetMetadata) -> None:
        self.store = store
        self.dataset_uuid = dataset_uuid
        self.latest = latest
        #: snapshots already read (the latest may be a state plateau appended, not yet logged)
        self.known: dict[int, DatasetMetadata | None] = {latest.version: latest}

    def read(self, version: int) -> DatasetMetadata | None:
        """Snapshot ``version``, ``None`` if its log entry is gone (or ``version < 0``)."""
        if version in self.known:
            return self.known[version]
        if version < 0:
            return None
        entry = commit.read_entry(self.store, self.dataset_uuid, version)
        if entry is not None and entry.schema is None and entry.files:
            entry = commit.load_version(self.store, self.dataset_uuid, version)  # plateau's
        return entry

    def pairs(
        self, start: int, end: int
    ) -> Iterator[tuple[DatasetMetadata | None, DatasetMetadata]]:
        """``(snapshot v - 1, snapshot v)`` for ``v`` in ``start .. end`` (``None``: no dataset)."""
        windows = [
            list(range(lo, min(end, lo + READ_AHEAD - 1) + 1))
            for lo in range(start, end + 1, READ_AHEAD)
        ]
        with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
            first = pool.submit(self.read, start - 1)
            pending = [pool.submit(self.read, v) for v in windows[0]]
            before: DatasetMetadata | None = None
            for number, window in enumerate(windows):
                metas = [future.result() for future in pending]
                if number + 1 < len(windows):  # read the next window while this one is diffed
                    pending = [pool.submit(self.read, v) for v in windows[number + 1]]
                if number == 0:
                    before = self._before(start, first.result(), metas[0])
                for version, meta in zip(window, metas):
                    if meta is None or meta.commit.is_tombstone:
                        raise self.unavailable(start, version, meta)
                    yield before, meta
                    before = meta

    def _before(
        self, start: int, before: DatasetMetadata | None, first: DatasetMetadata | None
    ) -> DatasetMetadata | None:
        if first is None or first.commit.is_tombstone:
            raise self.unavailable(start, start, first)
        if before is not None and before.commit.is_tombstone:
            return None  # the dataset was created anew at ``start``
        if before is None and start > 0 and not _is_first(first):
            raise self.unavailable(start, start - 1, None)
        return before

    def unavailable(
        self, start: int, missing: int, meta: DatasetMetadata | None
    ) -> InvalidArgumentError:
        return _unavailable(self.store, self.dataset_uuid, self.latest, start, missing, meta)


def _is_first(meta: DatasetMetadata) -> bool:
    """Whether ``meta`` was built on no earlier snapshot (a create, or plateau's state logged).

    Version 0, or an entry with a token but no parent token (a dataset created
    anew after a deletion); any other entry without its predecessor lost it
    to expiry.
    """
    return meta.version == 0 or (not meta.commit.parent and bool(meta.commit.token))


def _first_available(store: Store, dataset_uuid: str, latest: DatasetMetadata) -> int:
    """The smallest ``start_version`` whose changes can be read: the dataset's first version,
    else the version after the oldest retained one.  Only for error messages: it reads
    every retained log entry (``history``)."""
    retained = commit.history(store, dataset_uuid)
    oldest = retained[0].version if retained else latest.version
    entry = latest if oldest == latest.version else commit.read_entry(store, dataset_uuid, oldest)
    if entry is not None and _is_first(entry):
        return oldest
    before = commit.read_entry(store, dataset_uuid, oldest - 1) if oldest > 0 else None
    if before is not None and before.commit.is_tombstone:
        return oldest  # created anew after a deletion
    return oldest + 1


def _unavailable(
    store: Store,
    dataset_uuid: str,
    latest: DatasetMetadata,
    start: int,
    missing: int,
    meta: DatasetMetadata | None,
) -> InvalidArgumentError:
    lo = _first_available(store, dataset_uuid, latest)
    if meta is not None and meta.commit.is_tombstone:
        why = (
            f"version {missing} deleted the dataset (ka.delete_dataset), which was created "
            "anew after it"
        )
    else:
        why = f"version {missing} is needed and was expired (ka.expire_snapshots)"
    return InvalidArgumentError(
        f"cannot read the changes of dataset {dataset_uuid!r} from version {start}: {why}; "
        f"changes are available for versions {lo}..{latest.version} (start_version >= {lo})"
    )


# -- files a commit changed -------------------------------------------------------


def file_changes(
    store: Store, before: DatasetMetadata | None, after: DatasetMetadata
) -> tuple[list[FileEntry], list[FileEntry]]:
    """``(removed, added)``: the files of ``before`` not in ``after``, and the reverse.

    Compared by key.  Manifest segments both snapshots reference hold the
    same files in both (segments are immutable), so they are not read: the
    cost is the inline files plus the segments one snapshot has and the
    other has not (those a commit wrote, rewrote or merged).
    """
    if before is None:
        return [], list(after.files.values())
    shared = {s.key for s in before.segments} & {s.key for s in after.segments}
    old = _listing(store, before, [s for s in before.segments if s.key not in shared])
    new = _listing(store, after, [s for s in after.segments if s.key not in shared])
    removed = old.filter(pc.invert(pc.is_in(old.column("key"), value_set=new.column("key"))))
    added = new.filter(pc.invert(pc.is_in(new.column("key"), value_set=old.column("key"))))
    return _entries(removed), _entries(added)


def _listing(store: Store, meta: DatasetMetadata, segments: Sequence[manifest.Segment]) -> pa.Table:
    """``label, key, size, rows`` of the inline files of ``meta`` and of ``segments``."""
    inline = list(meta.inline_files.values())
    parts = [
        pa.table(
            {
                "label": pa.array([e.label for e in inline], pa.string()),
                "key": pa.array([e.key for e in inline], pa.string()),
                "size": pa.array([e.size for e in inline], pa.int64()),
                "rows": pa.array([e.rows for e in inline], pa.int64()),
            }
        )
    ]
    prefix = keys.table_prefix(meta.uuid, meta.table) + "/"
    for segment in segments:
        table = commit.read_segment(store, segment)
        label = table.column(manifest.LABEL)
        stored = table.column(manifest.KEY)
        # a null key is the dataset's own <prefix><label>.parquet (manifest.to_table)
        own = pc.binary_join_element_wise(prefix, label, ".parquet", "")
        parts.append(
            pa.table(
                {
                    "label": label.cast(pa.string()),
                    "key": pc.if_else(pc.is_null(stored), own, stored).cast(pa.string()),
                    "size": table.column(manifest.SIZE).cast(pa.int64()),
                    "rows": table.column(manifest.ROWS).cast(pa.int64()),
                }
            )
        )
    return pa.concat_tables(parts)


def _entries(table: pa.Table) -> list[FileEntry]:
    return [
        FileEntry(row["label"], row["key"], row["size"], row["rows"]) for row in table.to_pylist()
    ]


# -- rows a commit changed ----------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """Rows one commit inserted, or deleted."""

    rows: pa.Table
    change_type: str
    version: int
    timestamp: Any


def _commit_changes(
    store: Store,
    before: DatasetMetadata | None,
    after: DatasetMetadata,
    columns: list[str] | None,
) -> Iterator[_Piece]:
    """The deleted rows, then the inserted rows, of the commit that made ``after``."""
    info = after.commit
    if info.operation in _ROW_PRESERVING and not info.rows_added and not info.rows_removed:
        return
    removed, added = file_changes(store, before, after)
    if not removed and not added:
        return  # index builds, settings, metadata: no file changed
    # rows of one partition directory hold its partition values, so only files of the
    # same directory can share rows; after a repartitioning any file may share rows
    group = _directory if before is None or before.partition_keys == after.partition_keys else _one
    mixed = {group(e) for e in removed} & {group(e) for e in added}
    deletes: list[pa.Table] = []
    inserts: list[pa.Table] = []
    gone = [e for e in removed if group(e) not in mixed]
    new = [e for e in added if group(e) not in mixed]
    if gone:
        assert before is not None
        deletes.append(_read(store, before, gone, _existing(columns, before)))
    if mixed:
        assert before is not None
        for old_files, new_files in _batches(removed, added, mixed, group):
            old_rows = _read(store, before, old_files, None)
            new_rows = _read(store, after, new_files, None)
            only_old, only_new = multiset_difference(old_rows, new_rows)
            deletes.append(_project(only_old, columns))
            inserts.append(_project(only_new, columns))
    if new:
        inserts.append(_read(store, after, new, _existing(columns, after)))
    for tables, change_type in ((deletes, DELETE), (inserts, INSERT)):
        for table in tables:
            if table.num_rows:
                yield _Piece(table, change_type, info.version, info.timestamp)


def _directory(entry: FileEntry) -> str:
    return entry.partition_dir


def _one(entry: FileEntry) -> str:
    return ""


def _batches(
    removed: Sequence[FileEntry],
    added: Sequence[FileEntry],
    dirs: Iterable[str],
    group: Callable[[FileEntry], str],
) -> Iterator[tuple[list[FileEntry], list[FileEntry]]]:
    """The files of ``dirs``, whole directories at a time, up to ``DIFF_BATCH_BYTES`` a batch."""
    by_dir: dict[str, tuple[list[FileEntry], list[FileEntry]]] = {d: ([], []) for d in dirs}
    for entry in removed:
        if group(entry) in by_dir:
            by_dir[group(entry)][0].append(entry)
    for entry in added:
        if group(entry) in by_dir:
            by_dir[group(entry)][1].append(entry)
    old: list[FileEntry] = []
    new: list[FileEntry] = []
    size = 0
    for directory in sorted(by_dir):
        old_files, new_files = by_dir[directory]
        grows = sum(e.size or 0 for e in (*old_files, *new_files))
        if (old or new) and size + grows > DIFF_BATCH_BYTES:
            yield old, new
            old, new, size = [], [], 0
        old.extend(old_files)
        new.extend(new_files)
        size += grows
    if old or new:
        yield old, new


def _read(
    store: Store, meta: DatasetMetadata, files: Sequence[FileEntry], columns: list[str] | None
) -> pa.Table:
    """The rows of ``files`` of snapshot ``meta``, partition columns included (typed)."""
    tasks = [
        FileTask(e.label, e.key, e.size, e.rows, meta.partition_values(e.label)) for e in files
    ]
    return read_planned(KartothekDataset(store, meta, tasks), columns=columns)


def _existing(columns: list[str] | None, meta: DatasetMetadata) -> list[str] | None:
    """``columns`` that snapshot ``meta`` has (the others read as nulls)."""
    if columns is None:
        return None
    names = set(_data_schema(meta).names)
    return [c for c in columns if c in names]


def _project(table: pa.Table, columns: list[str] | None) -> pa.Table:
    if columns is None:
        return table
    return table.select([c for c in columns if c in table.column_names])


# -- multiset difference ------------------------------------------------------------


def multiset_difference(old: pa.Table, new: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(old - new, new - old)`` as multisets of rows compared on every column.

    A row three times in ``old`` and once in ``new`` is twice in the first
    result.  Vectorised: every column is made groupable (nested values
    become ids), one hash aggregation counts each distinct row per side,
    and each surplus is taken that many times.  Tables of different schemas
    share no rows.
    """
    if not old.num_rows or not new.num_rows:
        return old, new
    if not old.schema.remove_metadata().equals(new.schema.remove_metadata()):
        return old, new
    old = old.replace_schema_metadata(None)
    both = pa.concat_tables([old, new.replace_schema_metadata(None)]).combine_chunks()
    n_old, total = old.num_rows, both.num_rows
    key_columns: list[pa.Array] = []
    for column in both.columns:
        key_columns.extend(_groupable(_array(column)))
    if not key_columns:  # no columns: all rows are equal
        key_columns = [pa.nulls(total, pa.int8())]
    index = np.arange(total, dtype=np.int64)
    is_new = index >= n_old
    names = [f"k{i}" for i in range(len(key_columns))]
    grouping = pa.table(
        {
            **dict(zip(names, key_columns)),
            "_new": pa.array(is_new.astype(np.int64)),
            "_old": pa.array((~is_new).astype(np.int64)),
            "_new_row": pa.array(index, mask=~is_new),
            "_old_row": pa.array(index, mask=is_new),
        }
    )
    groups = grouping.group_by(names, use_threads=False).aggregate(
        [("_new", "sum"), ("_old", "sum"), ("_new_row", "min"), ("_old_row", "min")]
    )
    surplus = pc.subtract(groups.column("_new_sum"), groups.column("_old_sum")).to_numpy()
    taken_new = _repeat(groups.column("_new_row_min"), surplus, surplus > 0) - n_old
    taken_old = _repeat(groups.column("_old_row_min"), -surplus, surplus < 0)
    return old.take(pa.array(taken_old)), new.take(pa.array(taken_new))


def _repeat(rows: pa.ChunkedArray, counts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each kept group's representative row, ``count`` times, in row order."""
    chosen = rows.to_numpy(zero_copy_only=False)[keep].astype(np.int64)
    return np.sort(np.repeat(chosen, counts[keep]))


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _groupable(values: pa.Array) -> list[pa.Array]:
    """Arrays Arrow can group by that are equal row by row exactly when ``values`` are.

    Dictionary and extension columns are decoded, a struct becomes its
    validity and its fields, a list (or map) a text of its elements' ids.
    """
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _groupable(values.dictionary_decode())
    if isinstance(kind, pa.BaseExtensionType):
        return _groupable(values.storage)
    if pa.types.is_struct(kind):
        out = [pc.is_valid(values)]
        for child in values.flatten():  # children of a null struct read as null
            out.extend(_groupable(child))
        return out
    if pa.types.is_map(kind):
        entries = pa.struct([kind.key_field, kind.item_field])
        return _groupable(values.cast(pa.list_(pa.field("entries", entries, nullable=False))))
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    ):
        return [_list_key(values)]
    if pa.types.is_union(kind) or pa.types.is_run_end_encoded(kind):
        # parquet stores neither: only an in-memory table can hold them
        raise InvalidArgumentError(
            f"rows with values of type {kind} cannot be compared (the change feed compares "
            "every column); compare the snapshots read with ka.dataset(..., version=N)"
        )
    return [values]


def _list_key(values: pa.Array) -> pa.Array:
    """Each list as the text of its elements' ids (``"3,0,7"``); a null list stays null."""
    elements = values.flatten()  # the elements of the non-null lists, in order
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    ids = _ids(elements).cast(pa.string())
    as_lists = pa.LargeListArray.from_arrays(
        pa.array(offsets, pa.int64()), ids, mask=pc.is_null(values)
    )
    return pc.binary_join(as_lists, ",")


def _ids(values: pa.Array) -> pa.Array:
    """A small int per value, equal exactly when the values are (nulls included)."""
    parts = _groupable(values)
    if len(parts) == 1:
        return pc.dictionary_encode(parts[0], null_encoding="encode").indices
    texts = [
        pc.dictionary_encode(part, null_encoding="encode").indices.cast(pa.string())
        for part in parts
    ]
    joined = pc.binary_join_element_wise(*texts, "|")
    return pc.dictionary_encode(joined, null_encoding="encode").indices


# -- the result ---------------------------------------------------------------------


def _data_schema(meta: DatasetMetadata) -> pa.Schema:
    """The columns readers of ``meta`` see (``ka.dataset(...).schema``), without metadata."""
    return _dataset_schema(meta).remove_metadata()


def _selected_columns(
    columns: Sequence[str] | None, schema: pa.Schema, dataset_uuid: str
) -> list[str] | None:
    clash = [c for c in CHANGE_COLUMNS if c in schema.names]
    if clash:
        raise InvalidArgumentError(
            f"dataset {dataset_uuid!r} has columns named {clash}, which the change feed "
            "adds itself; rename them to read its changes"
        )
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidArgumentError(f"columns must be a list of column names, got {columns!r}")
    unknown = [c for c in columns if c not in schema.names and c not in CHANGE_COLUMNS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown columns {unknown} for dataset {dataset_uuid!r}; its columns are "
            f"{schema.names} (the change columns {list(CHANGE_COLUMNS)} are always returned)"
        )
    return [c for c in dict.fromkeys(columns) if c not in CHANGE_COLUMNS]


def _assemble(pieces: Sequence[_Piece], schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    """The pieces as one table: the dataset's (selected) columns, then the change columns.

    A piece of a snapshot with an older schema is promoted to the end
    version's (a column it lacks reads as nulls).
    """
    data = [schema.field(c) for c in (columns if columns is not None else schema.names)]
    out_schema = pa.schema(
        [
            *data,
            pa.field(CHANGE_TYPE, pa.string()),
            pa.field(COMMIT_VERSION, pa.int64()),
            pa.field(COMMIT_TIMESTAMP, _TIMESTAMP),
        ]
    )
    tables = []
    for piece in pieces:
        n = piece.rows.num_rows
        rows = piece.rows.replace_schema_metadata(None)
        arrays = []
        for field in data:
            if field.name not in rows.column_names:
                arrays.append(pa.nulls(n, field.type))
                continue
            column = rows.column(field.name)
            try:
                arrays.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise InvalidArgumentError(
                    f"column {field.name!r} of version {piece.version} is {column.type}, which "
                    f"does not convert to {field.type} of the end version ({exc}); read the "
                    "changes before and after that schema change separately"
                ) from exc
        arrays += [
            pa.repeat(pa.scalar(piece.change_type, pa.string()), n),
            pa.repeat(pa.scalar(piece.version, pa.int64()), n),
            pa.repeat(pa.scalar(piece.timestamp, _TIMESTAMP), n),
        ]
        tables.append(pa.Table.from_arrays(arrays, schema=out_schema))
    if not tables:
        return out_schema.empty_table()
    return pa.concat_tables(tables)
