"""Arrow -> parquet files in kartothek's layout, then one commit.

Input is streamed: each incoming table is split by partition values and
written as one parquet file per partition (more when ``max_rows_per_file``
says so).  The split is one stable sort of the rows by partition code on the
calling thread; worker threads gather each file's rows and encode it, while
the next table is pulled and split (:meth:`FileWriter.write_all`, at most
two tables in flight).  Nothing is visible before the commit; if anything
fails the files written so far are deleted again.

A dataset whose ``auto_compact`` setting is on (:class:`AutoCompact`) is
compacted after a write, in the partitions the write touched, as a commit of
its own: see :meth:`PreparedWrite.compact_touched`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import uuid as uuidlib
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import commit as committer
from .commit import Change, Snapshot
from .errors import (
    CommitConflictError,
    CorruptMetadataError,
    DatasetExistsError,
    InvalidArgumentError,
    KtkError,
    SchemaMismatchError,
    StoreError,
)
from .spec import index as spec_index
from .spec import keys
from .spec.metadata import DatasetMetadata, FileEntry, file_stats
from .spec.schema import (
    SCHEMA_MODES,
    TimestampUnit,
    check_column_names,
    check_timestamps,
    conform,
    data_schema,
    is_scalar_type,
    merge_schemas,
    normalize_schema,
    timestamp_unit_of,
)
from .storage import Store, StoreLike, resolve_store, store_error

MODES = ("create", "append", "overwrite")
DEFAULT_ROW_GROUP_SIZE = 512 * 1024  # rows; 128Ki wrote 1M rows ~1.8x slower, 1Mi ~15% faster
DEFAULT_MAX_ROWS_PER_FILE = 4 * 1024 * 1024
SINGLE_PUT_BYTES = 16 * 1024 * 1024

DataLike = Any  # pa.Table | pa.RecordBatchReader | pd.DataFrame | Iterable of those / batches

#: the dataset setting (``DatasetMetadata.settings``) that holds the :class:`AutoCompact` policy
AUTO_COMPACT = "auto_compact"


@dataclass(frozen=True)
class AutoCompact:
    """Compact what many small appends leave behind: the ``auto_compact`` dataset setting.

    Stored with the dataset by ``write_dataset(..., auto_compact=...)``, so
    every later writer honours it.  After a write, each partition directory
    the write touched that holds more than ``min_files`` files smaller than
    ``target_size`` bytes has those files merged into files of about
    ``target_size`` bytes, as a ``"compact"`` commit of its own.  Reads then
    open a bounded number of files per partition however many appends came.
    """

    #: compact a partition directory once it holds more small files than this
    min_files: int = 8
    #: files of at least this many bytes are left alone; merged files aim at this size
    target_size: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, what in (("min_files", "files"), ("target_size", "bytes")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(
                    f"auto_compact {name} must be a positive int ({what}), got {value!r}; "
                    f"e.g. auto_compact={{'min_files': 8, 'target_size': 64 * 1024**2}}"
                )

    @classmethod
    def of(cls, value: Any) -> AutoCompact | None:
        """The policy ``value`` names; ``None`` when it turns auto-compaction off.

        ``True`` is the defaults, a dict names some fields, an ``AutoCompact``
        is itself, ``False`` is off; anything else is ``InvalidArgumentError``.
        """
        if isinstance(value, AutoCompact):
            return value
        if value is True:
            return cls()
        if value is False:
            return None
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise InvalidArgumentError(
                    f"auto_compact has unknown keys {unknown}; the keys are "
                    f"{sorted(known)}, e.g. auto_compact={{'min_files': 8}}"
                )
            return cls(**value)
        raise InvalidArgumentError(
            f"auto_compact must be True, False, a dict with keys 'min_files' and "
            f"'target_size', or ka.AutoCompact(...), got {value!r}"
        )

    @classmethod
    def of_setting(cls, settings: Mapping[str, Any]) -> AutoCompact | None:
        """The policy a dataset's settings hold (``None``: off)."""
        raw = settings.get(AUTO_COMPACT)
        return None if raw is None else cls.of(raw)

    def to_setting(self) -> dict[str, int]:
        """The JSON form kept under the dataset's ``ktk_arrow.settings``."""
        return dataclasses.asdict(self)


def _auto_compact_change(value: Any) -> dict[str, Any] | None:
    """The ``Change.settings`` for ``write_dataset(auto_compact=value)`` (``None``: unchanged)."""
    if value is None:
        return None
    policy = AutoCompact.of(value)
    return {AUTO_COMPACT: None if policy is None else policy.to_setting()}


def write_dataset(
    data: DataLike,
    store: StoreLike,
    dataset_uuid: str,
    *,
    partition_on: Sequence[str] | str | None = None,
    secondary_indices: Sequence[str] | str | None = None,
    mode: str = "create",
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    schema: pa.Schema | None = None,
    storage_options: dict[str, Any] | None = None,
    max_rows_per_file: int | None = None,
    row_group_size: int | None = None,
    timestamp_unit: TimestampUnit = "us",
    metadata: Mapping[str, Any] | None = None,
    allow_empty: bool = False,
    table: str | None = None,
    auto_compact: bool | Mapping[str, int] | AutoCompact | None = None,
    schema_mode: str | None = None,
) -> Snapshot:
    """Write ``data`` as a kartothek dataset and commit it as one snapshot.

    ``mode="create"`` refuses an existing dataset; ``"append"`` adds files
    (creating the dataset if needed); ``"overwrite"`` replaces the whole
    dataset, or only the partitions matched by ``delete_scope``.  A
    ``delete_scope`` entry on an indexed column removes *whole files* that hold
    the value, with all their other rows (kartothek's semantics; the returned
    ``Snapshot.rows_removed`` says how many rows went).
    ``allow_empty`` makes empty input to an existing dataset a no-op
    (kartothek's update semantics) instead of an error.  ``table`` names the
    table of a new dataset (kartothek's ``table_name``, default ``"table"``);
    an existing dataset keeps its own.

    ``data`` is a Table, RecordBatch(Reader), DataFrame, anything exporting
    ``__arrow_c_stream__`` (Polars, DuckDB, nanoarrow, ...), a Polars
    LazyFrame (collected in streaming batches), or an iterable (also nested)
    of these.  Empty input with a known schema creates a dataset that stores
    it; without partition keys as one file without rows (as plateau does).

    ``auto_compact`` stores the dataset's auto-compaction setting with this
    commit: ``True`` (more than 8 files under 64 MiB in a partition), a dict
    ``{"min_files": 8, "target_size": 64 * 1024**2}`` or :class:`AutoCompact`;
    ``False`` turns it off; ``None`` (default) keeps the dataset's.  While it
    is on, every write then compacts the partitions it touched that hold too
    many small files, as a separate ``"compact"`` commit (see ``ka.history``).
    That compaction is best effort: a concurrent commit it conflicts with makes
    it skip (the next write tries again), any other failure is a warning; the
    write is committed either way, and the returned snapshot is the write's.

    ``schema_mode="merge"`` (deltalake's name; ``mode="append"``, or
    ``"overwrite"`` with ``delete_scope``) evolves the schema: columns the
    dataset lacks are added as nullable (older files read them as null),
    integer and float columns widen (int32 -> int64, float32 -> float64), and
    columns the data lacks are written as null.  Any other change is a
    ``SchemaMismatchError`` naming the columns.  Concurrent evolving appends
    rebase while their schemas still merge.  An index on an added column is
    built afterwards with ``build_index``.
    """
    prepared = prepare_write(
        resolve_store(store, storage_options),
        dataset_uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode=mode,
        delete_scope=delete_scope,
        schema=schema,
        max_rows_per_file=max_rows_per_file,
        row_group_size=row_group_size,
        timestamp_unit=timestamp_unit,
        table=table,
        auto_compact=auto_compact,
        schema_mode=schema_mode,
    )

    def work(writer: FileWriter) -> Snapshot:
        writer.write_all(iter_tables(data))
        if prepared.needs_empty_file(writer.entries, writer.schema):
            writer.write_empty()
        return prepared.commit_files(
            writer.entries,
            writer.index_delta,
            writer.schema,
            metadata=metadata,
            allow_empty=allow_empty,
        )

    return prepared.committed(work)


def prepare_write(
    store: Store,
    dataset_uuid: str,
    *,
    partition_on: Sequence[str] | str | None = None,
    secondary_indices: Sequence[str] | str | None = None,
    mode: str = "create",
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    schema: pa.Schema | None = None,
    max_rows_per_file: int | None = None,
    row_group_size: int | None = None,
    timestamp_unit: TimestampUnit = "us",
    table: str | None = None,
    auto_compact: bool | Mapping[str, int] | AutoCompact | None = None,
    schema_mode: str | None = None,
) -> PreparedWrite:
    """Validate a write against the dataset's latest state, before any file is written.

    The result writes files anywhere (``writer_spec()`` pickles, so Dask workers
    can write in parallel) and commits what they wrote as one snapshot.
    """
    keys.validate_uuid(dataset_uuid)
    if table is not None:
        keys.validate_table(table)
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
    if timestamp_unit not in ("us", "ns"):
        raise InvalidArgumentError(f"timestamp_unit must be 'us' or 'ns', got {timestamp_unit!r}")
    if delete_scope is not None and mode != "overwrite":
        raise InvalidArgumentError(
            f"delete_scope needs mode='overwrite', got mode={mode!r}; pass mode='overwrite' "
            "to replace the matched partitions"
        )
    _check_schema_mode(schema_mode, mode, delete_scope)
    for name, value in (
        ("max_rows_per_file", max_rows_per_file),
        ("row_group_size", row_group_size),
    ):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    settings = _auto_compact_change(auto_compact)
    base = committer.load_latest(store, dataset_uuid)
    if mode == "create" and base is not None:
        raise DatasetExistsError(
            f"dataset {dataset_uuid!r} already exists in {store.url!r}; use mode='append' "
            "or mode='overwrite', or pick another dataset_uuid"
        )
    plan = _plan_write(
        base, partition_on, secondary_indices, mode, delete_scope, schema, timestamp_unit, table
    )
    if schema_mode is not None:
        plan = dataclasses.replace(plan, schema_mode=schema_mode)
    return PreparedWrite(
        store=store,
        dataset_uuid=dataset_uuid,
        mode=mode,
        base=base,
        plan=plan,
        delete_scope=delete_scope,
        schema_given=schema is not None,
        row_group_size=row_group_size or DEFAULT_ROW_GROUP_SIZE,
        max_rows_per_file=max_rows_per_file or DEFAULT_MAX_ROWS_PER_FILE,
        settings=settings,
    )


def _check_schema_mode(
    schema_mode: str | None, mode: str, delete_scope: Sequence[Mapping[str, Any]] | None
) -> None:
    if schema_mode is None:
        return
    if schema_mode not in SCHEMA_MODES:
        raise InvalidArgumentError(
            f"schema_mode must be None or 'merge', got {schema_mode!r}; schema_mode='merge' "
            "adds new columns and widens integer/float columns"
        )
    if mode == "create" or (mode == "overwrite" and delete_scope is None):
        raise InvalidArgumentError(
            f"schema_mode={schema_mode!r} needs mode='append' (or mode='overwrite' with "
            f"delete_scope), got mode={mode!r}: "
            + (
                "a new dataset takes the data's schema as it is"
                if mode == "create"
                else "an overwrite without delete_scope replaces the schema already"
            )
        )


@dataclass(frozen=True)
class WriterSpec:
    """What a :class:`FileWriter` needs; small and picklable, so workers can open one."""

    store: Store
    dataset_uuid: str
    plan: WritePlan
    row_group_size: int
    max_rows_per_file: int
    name_prefix: str = ""

    def open(self) -> FileWriter:
        return FileWriter(
            self.store,
            self.dataset_uuid,
            self.plan,
            row_group_size=self.row_group_size,
            max_rows_per_file=self.max_rows_per_file,
            name_prefix=self.name_prefix,
        )


@dataclass
class PreparedWrite:
    """A validated write: the state it was planned against, and the plan."""

    store: Store
    dataset_uuid: str
    mode: str
    base: DatasetMetadata | None
    plan: WritePlan
    delete_scope: Sequence[Mapping[str, Any]] | None
    schema_given: bool
    row_group_size: int
    max_rows_per_file: int
    #: dataset settings this write sets (``Change.settings``; ``None``: none)
    settings: Mapping[str, Any] | None = None

    def needs_empty_file(self, entries: Sequence[FileEntry], schema: pa.Schema | None) -> bool:
        """Whether this write must store a file without rows (plateau's empty partition).

        plateau stores empty input of an unpartitioned dataset it creates (or
        replaces) as one file without rows; readers then get one typed empty
        DataFrame.  With partition keys it stores no file, and neither do we.
        """
        defines = self.base is None or (self.mode == "overwrite" and self.delete_scope is None)
        return (
            defines
            and not entries
            and not self.plan.partition_keys
            and (schema is not None or self.plan.schema is not None)
        )

    def writer_spec(self, name_prefix: str = "") -> WriterSpec:
        """A spec for writers of this write; ``name_prefix`` starts every file name."""
        return WriterSpec(
            self.store,
            self.dataset_uuid,
            self.plan,
            self.row_group_size,
            self.max_rows_per_file,
            name_prefix,
        )

    def commit(
        self,
        entries: Sequence[FileEntry],
        index_delta: Mapping[str, spec_index.IndexMap],
        schema: pa.Schema | None,
        *,
        metadata: Mapping[str, Any] | None = None,
        allow_empty: bool = False,
    ) -> Snapshot:
        """:meth:`commit_files`, then :meth:`compact_touched`; returns the write's snapshot.

        The caller deletes the files if this raises and ``may_discard`` allows
        it, which it never does once the write is committed.
        """
        snapshot = self.commit_files(
            entries, index_delta, schema, metadata=metadata, allow_empty=allow_empty
        )
        try:
            self.compact_touched(entries, snapshot)
        except BaseException as exc:  # Ctrl-C while compacting: the write's files are in
            committer.mark_in_doubt(exc)
            raise
        return snapshot

    def commit_files(
        self,
        entries: Sequence[FileEntry],
        index_delta: Mapping[str, spec_index.IndexMap],
        schema: pa.Schema | None,
        *,
        metadata: Mapping[str, Any] | None = None,
        allow_empty: bool = False,
    ) -> Snapshot:
        """Commit the files written for this write (by any number of writers) as one snapshot.

        ``schema`` is the writers' schema (``None`` when no writer saw data).
        The caller deletes the files if this raises.
        """
        if (
            not entries
            and allow_empty
            and self.base is not None
            and self.delete_scope is None
            and not self._changes_settings()
        ):
            # no file written (the writers' schema is the base's when it exists): a no-op
            return Snapshot.of(self.base.commit)
        deletes_only = self.mode == "overwrite" and self.delete_scope is not None
        if schema is None and not deletes_only and not self.schema_given:
            raise InvalidArgumentError(
                f"no data to write to dataset {self.dataset_uuid!r}: the input is empty; "
                "pass at least one non-empty table or DataFrame (or schema= to create an "
                "empty dataset)"
            )
        change = _change(
            self.base,
            self.plan,
            self.store,
            entries,
            index_delta,
            schema,
            self.mode,
            self.delete_scope,
            metadata,
        )
        if self.settings:
            change = dataclasses.replace(change, settings=self.settings)
        return committer.commit(self.store, self.dataset_uuid, change, base=self.base)

    def _changes_settings(self) -> bool:
        current = {} if self.base is None else self.base.settings
        return any(current.get(k) != v for k, v in (self.settings or {}).items())

    def auto_compact_policy(self) -> AutoCompact | None:
        """The auto-compaction this write asks for, else the one the dataset had when read."""
        if self.settings is not None and AUTO_COMPACT in self.settings:
            return AutoCompact.of_setting(self.settings)
        return None if self.base is None else AutoCompact.of_setting(self.base.settings)

    def committed(self, work: Callable[[FileWriter], Snapshot]) -> Snapshot:
        """``work(writer)``'s commit, with a new writer; its files go if the commit provably failed.

        Auto-compaction runs after the cleanup: nothing it raises may delete the
        committed files.
        """
        writer = self.writer_spec().open()
        try:
            snapshot = work(writer)
        except BaseException as exc:
            if committer.may_discard(exc):  # never the files of a commit that may be in
                writer.abort()
            raise
        finally:
            writer.release()
        self.compact_touched(writer.entries, snapshot, stacklevel=4)  # warn at our caller's caller
        return snapshot

    def compact_touched(
        self, entries: Sequence[FileEntry], snapshot: Snapshot, *, stacklevel: int = 3
    ) -> None:
        """Auto-compaction: compact the partitions this write added files to, if asked to.

        Runs after the write's commit, as a commit of its own, on the partition
        directories of ``entries`` only (planning costs O(touched partitions)).
        Best effort, it never fails the write: a ``CommitConflictError`` (a
        concurrent overwrite or delete of those files) is skipped, as the next
        write tries again; any other error becomes a warning.  Costs nothing
        when the setting is off, or when the state this write read plus its own
        files leave no touched partition over ``min_files``.
        """
        if not entries or snapshot.files_added == 0:
            return
        try:
            policy = self.auto_compact_policy()
            if policy is None:
                return
            dirs = sorted({entry.partition_dir for entry in entries})
            _auto_compaction()(
                self.store, self.dataset_uuid, dirs, policy=policy, known=self.base, added=entries
            )
        except CommitConflictError:
            pass  # a concurrent commit changed these partitions; the next write tries again
        except Exception as exc:
            warnings.warn(
                f"auto-compaction of dataset {self.dataset_uuid!r} after version "
                f"{snapshot.version} failed ({type(exc).__name__}: {exc}); the write itself is "
                f"committed. The next write retries; to compact now run "
                f"ka.compact(store, {self.dataset_uuid!r}), or turn auto-compaction off with "
                "write_dataset(..., auto_compact=False)",
                UserWarning,
                stacklevel=stacklevel,
            )


def _auto_compaction() -> Any:
    """``compact.auto_compact``, looked up when a dataset asks for it.

    Compaction writes its files through this module's :class:`FileWriter`, so
    it sits above it (DESIGN §4) and cannot be imported here: the writer
    reaches it at run time only, after a write to a dataset whose
    ``auto_compact`` setting is on.
    """
    return importlib.import_module(f"{__package__}.compact").auto_compact


@dataclass
class WritePlan:
    """Everything about a write that is fixed before the first byte is written."""

    partition_keys: tuple[str, ...]
    indices: tuple[str, ...]
    schema: pa.Schema | None  # the dataset schema, when known up front
    unit: TimestampUnit
    base_version: int | None
    scope: list[dict[str, Any]] | None = None
    #: the table directory ``<uuid>/<table>/`` the data files go to
    table: str = keys.TABLE
    #: ``"merge"``: the data may add columns and widen types (``Change.schema_mode``)
    schema_mode: str | None = None


def _as_list(value: Sequence[str] | str | None, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    out = list(value)
    if not all(isinstance(v, str) for v in out):
        raise InvalidArgumentError(f"{name} must be a list of column names, got {value!r}")
    if len(set(out)) != len(out):
        raise InvalidArgumentError(f"{name} lists a column twice: {out!r}")
    return out


def _plan_write(
    base: DatasetMetadata | None,
    partition_on: Sequence[str] | str | None,
    secondary_indices: Sequence[str] | str | None,
    mode: str,
    delete_scope: Sequence[Mapping[str, Any]] | None,
    schema: pa.Schema | None,
    unit: TimestampUnit,
    table: str | None = None,
) -> WritePlan:
    if base is not None:
        if table is not None and table != base.table:
            raise InvalidArgumentError(
                f"table_name={table!r}, but dataset {base.uuid!r} has the table {base.table!r}; "
                "omit table_name (or pass the dataset's), or delete the dataset first"
            )
        table = base.table
    elif table is None:
        table = keys.TABLE
    partition_list = _as_list(partition_on, "partition_on")
    index_list = _as_list(secondary_indices, "secondary_indices") or []
    replace_all = mode == "overwrite" and delete_scope is None
    if base is not None and not replace_all:
        if partition_list is not None and tuple(partition_list) != base.partition_keys:
            raise InvalidArgumentError(
                f"partition_on={partition_list!r} differs from the dataset's partition keys "
                f"{list(base.partition_keys)!r}; omit partition_on or pass the dataset's keys"
            )
        partition_keys = base.partition_keys
        new_indices = [c for c in index_list if c not in base.indices]
        if new_indices and base.files:
            # an index over the new files only would hide the old rows from every filter
            raise InvalidArgumentError(
                f"secondary_indices names columns {new_indices} that dataset {base.uuid!r} has "
                f"no index on (its indices: {sorted(base.indices)}); build them over all files "
                "first (build_dataset_indices), or omit them"
            )
        indices = tuple(dict.fromkeys([*base.indices, *index_list]))
        dataset_schema = base.schema
        if dataset_schema is not None and timestamp_unit_of(dataset_schema) == "ns":
            unit = "ns"  # a nanosecond dataset stays one: no MICROS files among NANOS
    else:
        partition_keys = tuple(partition_list or ())
        indices = tuple(index_list)
        dataset_schema = normalize_schema(schema, unit) if schema is not None else None
    overlap = set(partition_keys) & set(indices)
    if overlap:
        raise InvalidArgumentError(
            f"columns {sorted(overlap)} are partition keys and cannot also be secondary indices; "
            "partition keys are indexed already"
        )
    if dataset_schema is not None:
        _check_columns_exist(dataset_schema, partition_keys, "partition_on")
        _check_columns_exist(dataset_schema, indices, "secondary_indices")
    scope = None
    if delete_scope is not None:
        scope = [] if base is None else _check_scope(base, delete_scope)
    return WritePlan(
        partition_keys=partition_keys,
        indices=indices,
        schema=dataset_schema,
        unit=unit,
        base_version=None if base is None else base.version,
        scope=scope,
        table=table,
    )


def _check_columns_exist(schema: pa.Schema, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InvalidArgumentError(
            f"{what} names columns {missing} that are not in the data; available columns: "
            f"{schema.names}"
        )


def _check_scope(
    base: DatasetMetadata, delete_scope: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Validate a delete_scope; an unknown column is an error, never "delete everything"."""
    if isinstance(delete_scope, Mapping) or not isinstance(delete_scope, Sequence):
        raise InvalidArgumentError(
            f"delete_scope must be a list of {{column: value}} dicts, got {delete_scope!r}"
        )
    usable = set(base.partition_keys) | set(base.indices)
    out = []
    for entry in delete_scope:
        if not isinstance(entry, Mapping) or not entry:
            raise InvalidArgumentError(
                f"each delete_scope entry must be a non-empty {{column: value}} dict, got {entry!r}"
            )
        unknown = [c for c in entry if c not in usable]
        if unknown:
            raise InvalidArgumentError(
                f"delete_scope names columns {unknown} that are neither partition keys "
                f"{list(base.partition_keys)} nor indexed columns {list(base.indices)}; "
                "nothing was deleted"
            )
        out.append(dict(entry))
    return out


_WRITE_THREADS = max(2, min(8, os.cpu_count() or 2))
#: input chunks in flight at once: one encoded by the threads while the next is split
_CHUNKS_IN_FLIGHT = 2
#: rows sampled per chunk to tell which columns repeat values enough for a dictionary
_DICTIONARY_SAMPLE = 8 * 1024

#: which rows of a chunk go to a file: a contiguous slice, or row numbers in ascending order
Rows: TypeAlias = slice | pa.Array


@dataclass(frozen=True)
class _FileJob:
    """One file to write: its name, and which rows of a chunk's data columns it stores."""

    label: str
    key: str
    position: int
    data: pa.Table  # the chunk's columns as stored (no partition columns)
    rows: Rows
    dictionary: bool | list[str]  # ``use_dictionary`` for the parquet writer

    def table(self) -> pa.Table:
        if isinstance(self.rows, slice):
            start, stop = self.rows.start or 0, self.rows.stop
            if start == 0 and stop >= self.data.num_rows:
                return self.data
            return self.data.slice(start, stop - start)
        return self.data.take(self.rows)


@dataclass(frozen=True)
class _Written:
    """What a worker reports about a file it wrote."""

    size: int
    rows: int
    stats: dict[str, list[Any]]
    index_values: dict[str, pa.Array]


class FileWriter:
    """Writes partitioned parquet files for one commit and remembers what it wrote."""

    def __init__(
        self,
        store: Store,
        dataset_uuid: str,
        plan: WritePlan,
        *,
        row_group_size: int,
        max_rows_per_file: int,
        name_prefix: str = "",
    ) -> None:
        self.store = store
        self.name_prefix = name_prefix
        self.dataset_uuid = dataset_uuid
        self.plan = plan
        self.schema: pa.Schema | None = plan.schema
        self.row_group_size = row_group_size
        self.max_rows_per_file = max_rows_per_file
        self.entries: list[FileEntry] = []
        self.index_delta: dict[str, spec_index.IndexMap] = {
            c: spec_index.Index() for c in plan.indices
        }
        self._fs = store.arrow_filesystem()
        self._made_dirs: set[str] = set()
        self._protected: list[str] = []

    def write(self, table: pa.Table) -> None:
        """Write one table's files; they are in ``entries`` when this returns."""
        self.write_all([table])

    def write_all(self, tables: Iterable[pa.Table]) -> None:
        """Write the files of every table in ``tables``, a chunk at a time.

        This thread validates each chunk and sorts its rows by partition; worker
        threads gather each file's rows and encode them (``pq.write_table``
        releases the GIL).  The next chunk is pulled from ``tables`` only while
        fewer than ``_CHUNKS_IN_FLIGHT`` are being written, so splitting one chunk
        overlaps with encoding the one before and an iterator is never drained
        ahead.  Every file is in ``entries`` when this returns; on an error no
        worker is left writing, and the first error is raised as it was.
        """
        pending: deque[list[tuple[_FileJob, Future[_Written]]]] = deque()
        pool: ThreadPoolExecutor | None = None
        try:
            for table in tables:
                jobs = self._jobs(table)
                if not jobs:
                    continue
                if pool is None:
                    pool = ThreadPoolExecutor(max_workers=_WRITE_THREADS)
                pending.append([(job, pool.submit(self._encode, job)) for job in jobs])
                while len(pending) >= _CHUNKS_IN_FLIGHT:
                    self._collect(pending[0])  # popped once collected: a failure cancels the rest
                    pending.popleft()
            while pending:
                self._collect(pending[0])
                pending.popleft()
        finally:
            for chunk in pending:
                for _, future in chunk:
                    future.cancel()
            if pool is not None:
                pool.shutdown(wait=True)  # nothing may write behind a caller's abort()

    def _jobs(self, table: pa.Table) -> list[_FileJob]:
        """Check one chunk against the schema and name its files (registered, not written)."""
        if table.num_rows == 0 and self.schema is not None:
            return []
        check_column_names(table.column_names)
        table = _drop_pandas_index(table)
        if self.schema is None:
            if not table.num_columns:
                raise InvalidArgumentError(
                    "the data has no columns (e.g. pd.DataFrame()); a dataset needs at least "
                    "one column: pass data with columns, or schema= to create an empty dataset"
                )
            self.schema = normalize_schema(_strip_metadata(table.schema), self.plan.unit)
            _check_columns_exist(self.schema, self.plan.partition_keys, "partition_on")
            _check_columns_exist(self.schema, self.plan.indices, "secondary_indices")
            if len(self.plan.partition_keys) == len(self.schema):
                raise InvalidArgumentError(
                    f"every column is a partition key ({list(self.plan.partition_keys)}); "
                    "keep at least one data column"
                )
            for key in self.plan.partition_keys:
                t = self.schema.field(key).type
                if not _partitionable(t):
                    raise InvalidArgumentError(
                        f"cannot partition on column {key!r} of type {t}; use a string, integer, "
                        "boolean, date or timestamp column"
                    )
        merging = self.plan.schema_mode == "merge"
        if merging:
            self._merge_schema(table)
        if table.num_rows == 0:
            return []
        check_timestamps(table, self.plan.unit)
        table = conform(table, self.schema, fill_missing=merging, merge_hint=True)
        data = table.select(
            [n for n in table.column_names if n not in self.plan.partition_keys]
        ).cast(data_schema(self.schema, self.plan.partition_keys))
        dictionary = _dictionary_columns(data)
        return [
            self._prepare_file(values, data, piece, dictionary)
            for values, rows in _split(table, self.plan.partition_keys)
            for piece in _pieces(rows, self.max_rows_per_file)
        ]

    def _merge_schema(self, table: pa.Table) -> None:
        """``schema_mode="merge"``: widen ``self.schema`` by this chunk's columns and types."""
        assert self.schema is not None
        missing = [k for k in self.plan.partition_keys if k not in table.column_names]
        if missing:
            raise SchemaMismatchError(
                f"the data lacks the partition columns {missing}; schema_mode='merge' can "
                "leave out data columns only: add these columns to the data"
            )
        incoming = normalize_schema(_strip_metadata(table.schema), self.plan.unit)
        self.schema = merge_schemas(self.schema, incoming, self.plan.partition_keys)

    def _encode(self, job: _FileJob) -> _Written:
        """Worker thread: gather the file's rows, write it, and describe it."""
        table = job.table()
        size = self._write_file(job.key, table, job.dictionary)
        return _Written(
            size,
            table.num_rows,
            file_stats(table),
            {c: spec_index.values_in(table.column(c)) for c in self.plan.indices},
        )

    def _collect(self, chunk: list[tuple[_FileJob, Future[_Written]]]) -> None:
        """Record a chunk's written files, in the order they were named."""
        for job, future in chunk:
            written = future.result()
            self.entries[job.position] = FileEntry(
                job.label, job.key, written.size, written.rows, written.stats
            )
            for column, values in written.index_values.items():
                spec_index.add(self.index_delta[column], values, job.label)

    def _prepare_file(
        self, values: list[Any], data: pa.Table, rows: Rows, dictionary: bool | list[str]
    ) -> _FileJob:
        """Name the file and register it (so abort() removes it even half-written)."""
        raw_values = [keys.value_to_string(v) for v in values]
        directory = keys.partition_directory(self.plan.partition_keys, raw_values)
        name = self.name_prefix + uuidlib.uuid4().hex
        label = f"{directory}/{name}" if directory else name
        key = keys.data_key(self.dataset_uuid, label, self.plan.table)
        self._ensure_dir(self.store.path(key), key)
        committer.IN_FLIGHT.add(self.store, [key])
        self._protected.append(key)
        self.entries.append(FileEntry(label, key, None, _row_count(rows)))
        return _FileJob(label, key, len(self.entries) - 1, data, rows, dictionary)

    def write_empty(self) -> None:
        """Write one file without rows (unpartitioned datasets only): it stores the schema."""
        assert self.schema is not None and not self.plan.partition_keys
        data = self.schema.empty_table().cast(data_schema(self.schema, ()))
        job = self._prepare_file([], data, slice(0, 0), True)
        size = self._write_file(job.key, data, True)
        self.entries[job.position] = FileEntry(job.label, job.key, size, 0, file_stats(data))

    def _write_file(self, key: str, table: pa.Table, dictionary: bool | list[str]) -> int:
        """Write one parquet file; returns its size in bytes."""
        options = {
            "row_group_size": self.row_group_size,
            "coerce_timestamps": None if self.plan.unit == "ns" else "us",
            "allow_truncated_timestamps": False,
            "compression": "snappy",
            "use_dictionary": dictionary,
            "store_schema": True,
        }
        if self.store.is_remote and table.nbytes < SINGLE_PUT_BYTES:
            # one PUT instead of a multipart upload's three requests
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf, **options)
            payload = buf.getvalue().to_pybytes()
            self.store.put(key, payload)
            return len(payload)
        try:
            with self._fs.open_output_stream(self.store.path(key)) as out:
                pq.write_table(table, out, **options)
                return int(out.tell())
        except OSError as exc:  # a name too long, no permission, a full disk, ...
            raise store_error(self.store, key, exc) from exc

    def _ensure_dir(self, path: str, key: str) -> None:
        if self.store.is_remote:
            return
        parent = path.rsplit("/", 1)[0]
        if parent not in self._made_dirs:
            try:
                self._fs.create_dir(parent, recursive=True)
            except OSError as exc:
                raise store_error(self.store, key, exc) from exc
            self._made_dirs.add(parent)

    def abort(self) -> None:
        """Delete every file this writer wrote (only when its commit provably failed)."""
        with contextlib.suppress(KtkError, OSError):  # garbage collection removes the rest
            self.store.delete_many([e.key for e in self.entries])
        self.release()
        self.entries = []

    def release(self) -> None:
        """The write is over (committed or not): its files no longer need gc's protection."""
        committer.IN_FLIGHT.discard(self.store, self._protected)
        self._protected = []


def _change(
    base: DatasetMetadata | None,
    plan: WritePlan,
    store: Store,
    entries: Sequence[FileEntry],
    index_delta: Mapping[str, spec_index.IndexMap],
    schema: pa.Schema | None,
    mode: str,
    delete_scope: Sequence[Mapping[str, Any]] | None,
    metadata: Mapping[str, Any] | None,
) -> Change:
    if mode == "overwrite" and plan.scope is None:
        return _with_table(
            Change(
                operation="overwrite",
                add=list(entries),
                remove=lambda state: list(state.files),
                index_delta=index_delta,
                schema=schema,
                partition_keys=plan.partition_keys,
                user_metadata=metadata,
                create=base is None,
                read_version=plan.base_version,
                depends_on=lambda state: list(state.files),
            ),
            plan,
        )
    if plan.scope is not None:
        scope = plan.scope

        def matched(state: DatasetMetadata) -> list[str]:
            return sorted(scope_labels(state, scope, store))

        return _with_table(
            Change(
                operation="delete_scope" if not entries else "overwrite_partitions",
                add=list(entries),
                remove=matched,
                index_delta=index_delta,
                schema=schema,
                partition_keys=plan.partition_keys,
                user_metadata=metadata,
                create=base is None,
                read_version=plan.base_version,
                depends_on=matched,
                schema_mode=plan.schema_mode,
            ),
            plan,
        )
    return _with_table(
        Change(
            operation="create" if base is None else "append",
            add=list(entries),
            index_delta=index_delta,
            schema=schema,
            partition_keys=plan.partition_keys,
            user_metadata=metadata,
            create=base is None,
            exclusive=mode == "create",
            schema_mode=plan.schema_mode,
        ),
        plan,
    )


#: whether the committer takes a new dataset's table name (``Change.table``)


def _with_table(change: Change, plan: WritePlan) -> Change:
    if plan.table == keys.TABLE:
        return change
    return dataclasses.replace(change, table=plan.table)


def scope_labels(
    state: DatasetMetadata, scope: Sequence[Mapping[str, Any]], store: Store
) -> set[str]:
    """Labels of the files matched by a kartothek delete_scope in ``state``."""
    out: set[str] = set()
    indices: dict[str, spec_index.IndexMap] = {}
    for entry in scope:
        labels = set(state.files)
        for column, value in entry.items():
            if column in state.partition_keys:
                labels &= {
                    label
                    for label in labels
                    if _same_value(state.partition_values(label).get(column), value)
                }
            elif column in state.indices:
                if column not in indices:
                    indices[column] = committer.read_index(store, state, column)
                idx = indices[column]
                labels &= {lbl for v, ls in idx.items() if _same_value(v, value) for lbl in ls}
            else:
                raise InvalidArgumentError(
                    f"delete_scope column {column!r} is neither a partition key nor indexed"
                )
        out |= labels
    return out


def _same_value(stored: Any, wanted: Any) -> bool:
    if stored is None or wanted is None:
        return stored is None and wanted is None
    stored, wanted = _plain(stored), _plain(wanted)
    if isinstance(stored, bool) != isinstance(wanted, bool):
        return False
    try:
        return bool(stored == wanted)
    except TypeError:  # e.g. naive vs aware datetimes
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _split(table: pa.Table, partition_keys: Sequence[str]) -> list[tuple[list[Any], Rows]]:
    """``(partition values, rows)`` per distinct combination, in first-seen order.

    One stable sort of the row numbers by partition code (Arrow counts them:
    the codes are dense) instead of a group-by with list aggregation; the rows
    of a partition keep their order, and are a slice where they are contiguous.
    """
    if not partition_keys:
        return [([], slice(0, table.num_rows))]
    columns = table.select(list(partition_keys)).combine_chunks().columns
    key_table = pa.table(
        {
            k: c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
            for k, c in zip(partition_keys, columns, strict=True)
        }
    )
    codes, groups = _partition_codes(key_table)
    if groups == 1:
        values = key_table.slice(0, 1).to_pydict()
        return [([values[k][0] for k in partition_keys], slice(0, table.num_rows))]
    order = pc.sort_indices(pa.array(codes))  # stable
    order_np = order.to_numpy()
    ends = np.cumsum(np.bincount(codes, minlength=groups))
    starts = np.concatenate([[0], ends[:-1]])
    firsts, lasts = order_np[starts], order_np[ends - 1]
    values = key_table.take(pa.array(firsts)).to_pydict()
    out: list[tuple[list[Any], Rows]] = []
    for g in range(groups):
        start, end, first, last = int(starts[g]), int(ends[g]), int(firsts[g]), int(lasts[g])
        contiguous = last - first == end - start - 1  # ascending row numbers without a gap
        rows = slice(first, last + 1) if contiguous else order.slice(start, end - start)
        out.append(([values[k][g] for k in partition_keys], rows))
    return out


def _partition_codes(key_table: pa.Table) -> tuple[np.ndarray, int]:
    """A dense code per row (``0..n-1`` in first-seen order, nulls too) and the count ``n``."""
    codes: np.ndarray | None = None
    groups = 0
    for column in key_table.columns:
        encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
        own = encoded.indices.to_numpy()
        if codes is None:
            codes, groups = own, len(encoded.dictionary)
            continue
        # re-encoding keeps the codes below the row count, so the product never overflows
        merged = pa.array(
            codes.astype(np.int64) * len(encoded.dictionary) + own
        ).dictionary_encode()
        codes, groups = merged.indices.to_numpy(), len(merged.dictionary)
    assert codes is not None
    return codes, groups


def _pieces(rows: Rows, size: int) -> Iterator[Rows]:
    """``rows`` cut into files of at most ``size`` rows."""
    if isinstance(rows, slice):
        start, stop = rows.start or 0, rows.stop
        if stop - start <= size:
            yield rows
            return
        for at in range(start, stop, size):
            yield slice(at, min(at + size, stop))
        return
    if len(rows) <= size:
        yield rows
        return
    for at in range(0, len(rows), size):
        yield rows.slice(at, size)


def _row_count(rows: Rows) -> int:
    return int(rows.stop - (rows.start or 0)) if isinstance(rows, slice) else len(rows)


def _dictionary_columns(data: pa.Table) -> bool | list[str]:
    """The columns worth dictionary encoding: those repeating values in a sample of the chunk.

    Parquet writers dictionary-encode every column unless told otherwise, and
    fall back to plain only once a dictionary passes 1 MiB, which a column of
    distinct ids, amounts or timestamps in files of thousands of rows never
    does: there the dictionary costs encode time and makes the file bigger.
    Dictionary-typed columns always keep it.  Nested columns and names with
    dots (Parquet addresses columns by dotted paths) keep the default.
    """
    if any(pa.types.is_nested(f.type) or "." in f.name for f in data.schema):
        return True
    step = max(1, data.num_rows // _DICTIONARY_SAMPLE)
    sample = data if step == 1 else data.take(pa.array(np.arange(0, data.num_rows, step)))
    out = []
    for field, column in zip(data.schema, sample.columns):
        if pa.types.is_dictionary(field.type):
            out.append(field.name)
        elif pa.types.is_boolean(field.type) or pa.types.is_null(field.type):
            continue
        elif len(column.unique()) * 2 <= len(column):  # count_distinct runs an exec plan: slow
            out.append(field.name)
    return out


def _partitionable(t: pa.DataType) -> bool:
    return is_scalar_type(t.value_type if pa.types.is_dictionary(t) else t)


def _strip_metadata(schema: pa.Schema) -> pa.Schema:
    """Keep pandas metadata (for categoricals) but drop its index description."""
    return schema


def _drop_pandas_index(table: pa.Table) -> pa.Table:
    names = [n for n in table.column_names if n.startswith("__index_level_")]
    return table.drop_columns(names) if names else table


# -- input normalisation --------------------------------------------------------


def iter_tables(data: DataLike) -> Iterator[pa.Table]:
    """Stream any supported input as Arrow tables, without materialising it whole.

    Tables, RecordBatches, DataFrames; RecordBatchReaders and anything else
    exporting an Arrow C stream (``__arrow_c_stream__``: Polars DataFrames,
    DuckDB relations, nanoarrow, ...) batch by batch; Polars LazyFrames in
    streaming batches; iterables (lists nest) of any of these.
    """
    if data is None:
        raise InvalidArgumentError("data is None; pass a pyarrow Table, DataFrame or an iterable")
    if isinstance(data, (pa.Table, pa.RecordBatch, pd.DataFrame)):
        yield _to_table(data)
        return
    if isinstance(data, Mapping):
        raise InvalidArgumentError(
            "data is a dict; pass a pyarrow Table or DataFrame (e.g. pd.DataFrame(data))"
        )
    streamed = _stream(data)
    if streamed is not None:
        yield from streamed
        return
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        for item in data:
            if isinstance(item, (list, tuple)) or _stream(item, probe=True) is not None:
                yield from iter_tables(item)
            else:
                yield _to_table(item)
        return
    raise InvalidArgumentError(
        f"cannot write data of type {type(data).__name__}; pass a pyarrow Table, "
        "RecordBatchReader, pandas DataFrame, an object exporting __arrow_c_stream__ "
        "(Polars, DuckDB, ...), or an iterable of these"
    )


def _stream(data: Any, *, probe: bool = False) -> Iterator[pa.Table] | None:
    """The tables of a streaming input (a reader, a C stream, a LazyFrame), else ``None``.

    With ``probe`` only tells (a non-``None`` result) whether ``data`` streams.
    """
    if isinstance(data, (pa.Table, pa.RecordBatch, pd.DataFrame)):
        return None
    if isinstance(data, pa.RecordBatchReader):
        return iter(()) if probe else _batches(data)
    if _is_polars_lazyframe(data):
        return iter(()) if probe else _lazyframe_tables(data)
    if hasattr(data, "__arrow_c_stream__"):
        if probe:
            return iter(())
        try:
            reader = pa.RecordBatchReader.from_stream(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InvalidArgumentError(
                f"cannot write a {type(data).__name__}: its Arrow stream is not a table "
                f"({exc}); pass a table-like object (e.g. a DataFrame, not a Series)"
            ) from exc
        return _batches(reader)
    return None


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.Table]:
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _is_polars_lazyframe(data: Any) -> bool:
    cls = type(data)
    return cls.__name__ == "LazyFrame" and cls.__module__.split(".")[0] == "polars"


def _lazyframe_tables(lf: Any) -> Iterator[pa.Table]:
    """A Polars LazyFrame, collected in streaming batches where Polars can."""
    if hasattr(lf, "collect_batches"):
        for frame in lf.collect_batches():
            yield from iter_tables(frame)
        return
    yield from iter_tables(lf.collect(engine="streaming"))


def _to_table(item: Any) -> pa.Table:
    if isinstance(item, pa.Table):
        return item
    if isinstance(item, pa.RecordBatch):
        return pa.Table.from_batches([item])
    if isinstance(item, pd.DataFrame):
        check_column_names(list(item.columns))
        try:
            return pa.Table.from_pandas(item, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaMismatchError(f"DataFrame cannot be converted to Arrow: {exc}") from exc
    if hasattr(item, "__arrow_c_array__"):
        try:
            return pa.Table.from_batches([pa.record_batch(item)])
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InvalidArgumentError(
                f"cannot write an item of type {type(item).__name__}: its Arrow array is not "
                f"a record batch ({exc})"
            ) from exc
    raise InvalidArgumentError(
        f"cannot write an item of type {type(item).__name__}; items must be pyarrow Tables, "
        "RecordBatches, pandas DataFrames or objects exporting __arrow_c_stream__"
    )


def build_indices(store: Store, dataset_uuid: str, columns: Sequence[str]) -> Snapshot:
    """Index ``columns`` over every file of the latest snapshot, as one commit."""
    base = committer.load(store, dataset_uuid)
    check_index_columns(base, columns)
    full: dict[str, spec_index.IndexMap] = {c: spec_index.Index() for c in columns}
    for entry in base.files.values():
        for column, values in index_values(store, entry, columns).items():
            spec_index.add(full[column], values, entry.label)
    return commit_indices(store, base, full)


def check_index_columns(base: DatasetMetadata, columns: Sequence[str]) -> None:
    """Refuse to index unknown columns and partition keys."""
    assert base.schema is not None
    _check_columns_exist(base.schema, columns, "columns")
    partitioned = [c for c in columns if c in base.partition_keys]
    if partitioned:
        raise InvalidArgumentError(
            f"columns {partitioned} are partition keys, which are indexed already"
        )


def index_values(store: Store, entry: FileEntry, columns: Sequence[str]) -> dict[str, list[Any]]:
    """The distinct non-null values of ``columns`` in one data file."""
    fs = store.arrow_filesystem()
    try:
        with fs.open_input_file(store.path(entry.key)) as source:
            parquet = pq.ParquetFile(source)
            # a file written before a column was added (schema_mode="merge") holds none of it
            stored = [c for c in columns if c in parquet.schema_arrow.names]
            table = parquet.read(columns=stored)
    except FileNotFoundError as exc:
        raise StoreError(
            f"data file {entry.key!r} is missing from {store.url!r} (deleted behind the "
            f"metadata's back); {committer.check_hint(store, entry.key.split('/', 1)[0])}"
        ) from exc
    except pa.ArrowInvalid as exc:
        raise CorruptMetadataError(
            f"data file {entry.key!r} cannot be decoded to build an index ({exc}); "
            f"{committer.check_hint(store, entry.key.split('/', 1)[0])}"
        ) from exc
    except OSError as exc:
        raise StoreError(
            f"reading data file {entry.key!r} from {store.url!r} failed ({exc}); retry"
        ) from exc
    return {c: spec_index.values_in(table.column(c)) if c in stored else [] for c in columns}


def commit_indices(
    store: Store, base: DatasetMetadata, full: Mapping[str, spec_index.IndexMap]
) -> Snapshot:
    """Commit complete indices built over the files of ``base``."""
    change = Change(
        operation="build_index",
        index_full=full,
        read_version=base.version,
    )
    return committer.commit(store, base.uuid, change)
