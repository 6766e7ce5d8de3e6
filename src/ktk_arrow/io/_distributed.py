"""What the Dask facades share: planned read parts, and parallel writes with one commit.

Reading: the driver plans (prunes files by partition values and indices) and
cuts the surviving files into :class:`ReadPart` s, one per Dask partition;
a :class:`PartReader` turns a part (or several, in one Arrow scan) into a
DataFrame on any worker.  Parts carry only their planned files; the reader
shares the dataset's metadata without its file list, so a graph of N parts
ships O(N) metadata, not O(N²).

Writing: :func:`prepare` validates the write against the dataset's latest
state on the driver.  Every Dask task then runs :func:`write_part`: it
writes its data's parquet files with a :class:`~ktk_arrow.write.FileWriter`
and returns a :class:`PartResult` (file entries, index delta, schema) —
never raising: a failure is returned too, after the task deleted its own
files.  :meth:`DistributedWrite.finish` then makes ONE commit of everything
(atomic and concurrent-safe through the committer), or deletes every file
written and raises the first failure.  File names start with the write's
id, so files of tasks that died mid-way can be found and deleted as well.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import traceback
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset

from .. import arrow, commit, write
from .._optional import import_optional
from ..errors import InvalidArgumentError, KtkError, SchemaMismatchError
from ..planning import FileTask
from ..spec import index as spec_index
from ..spec import keys
from ..spec.metadata import DatasetMetadata, FileEntry
from ..storage import Store
from . import _common
from .eager import frames

dask = import_optional("dask", extra="dask")
dask_delayed = import_optional("dask.delayed", extra="dask")
dask_threaded = import_optional("dask.threaded", extra="dask")

#: the hash-bucket column a shuffled write groups by (dropped before writing)
BUCKET_COLUMN = "__KTK_HASH_BUCKET"


# -- reading -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReadPart:
    """The files of one output partition, and the rows of them it keeps."""

    tasks: tuple[FileTask, ...]
    #: dispatch_by on an indexed column: only the rows with the group's values
    group_filter: pc.Expression | None = None
    #: the group's values (dispatch_by / dask_index_on), in dispatch order
    group: tuple[Any, ...] = ()

    @property
    def rows(self) -> int | None:
        """The rows of the part's files as the metadata records them (``None``: unknown)."""
        if self.group_filter is not None or any(t.rows is None for t in self.tasks):
            return None
        return sum(t.rows or 0 for t in self.tasks)

    @property
    def size(self) -> int:
        """The bytes of the part's files (0 where unrecorded)."""
        return sum(t.size or 0 for t in self.tasks)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # keys name immutable files: the labels say what the part reads (and fast:
        # Dask tokenizes every part of a graph)
        return (
            "ktk-read-part",
            tuple(t.key for t in self.tasks),
            str(self.group_filter),
            repr(self.group),
        )


class PartReader:
    """Reads :class:`ReadPart` s as DataFrames (the function of Dask's ``from_map``).

    Its ``columns=`` keyword lets Dask's optimizer push column selections into
    the read; it also follows the older ``DataFrameIOFunction`` protocol
    (``columns``, ``project_columns``).  :meth:`read_many` reads several parts
    in one Arrow scan (Dask's fused reads of small files).
    """

    def __init__(
        self,
        store: Store,
        metadata: DatasetMetadata,
        columns: list[str],
        *,
        row_filter: pc.Expression | None,
        categoricals: Sequence[str],
        dates_as_object: bool,
        categories: Mapping[str, pd.CategoricalDtype],
        index_on: str | None = None,
        dtypes: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        #: the dataset's metadata without its file list: the parts carry their files
        self.metadata = _slim(metadata)
        self.columns = list(columns)
        self.row_filter = row_filter
        self.categoricals = list(categoricals)
        self.dates_as_object = dates_as_object
        self.categories = dict(categories)
        self.index_on = index_on
        #: columns every part casts to, so parts agree with the meta
        self.dtypes = dict(dtypes or {})

    def project_columns(self, columns: Sequence[str]) -> PartReader:
        """A reader of ``columns`` only (of those this one reads)."""
        projected = copy.copy(self)
        projected.columns = [c for c in self.columns if c in set(columns)]
        return projected

    def __call__(self, part: ReadPart, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return self.read_many([part], columns)

    def read_many(
        self, parts: Sequence[ReadPart], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """``parts`` as one DataFrame, in order: one Arrow scan of all their files.

        Parts with a group filter (``dispatch_by`` on an indexed column) are
        read one at a time, each with its own filter.
        """
        wanted = self.columns if columns is None else [c for c in self.columns if c in columns]
        read = list(wanted)
        if self.index_on is not None and self.index_on not in read:
            read.append(self.index_on)
        filtered = [p for p in parts if p.group_filter is not None]
        if filtered and len(parts) > 1:
            return pd.concat([self.read_many([p], columns) for p in parts])
        row_filter = self.row_filter
        if filtered:
            group_filter = filtered[0].group_filter
            row_filter = group_filter if row_filter is None else row_filter & group_filter
        tasks = [t for p in parts for t in p.tasks]
        dataset_ = arrow.KartothekDataset(self.store, self.metadata, tasks)
        # per part, the index reading it alone gives (RangeIndex(rows)): several parts
        # need to know which rows came from which file
        per_part = len(parts) > 1 and self.index_on is None
        if per_part:
            read.append(FRAGMENT_INDEX)
        # the parts are planned already: scan them without planning again; Arrow
        # applies the row filter inside the scan (row groups it excludes are skipped)
        table = arrow.read_planned(dataset_, columns=read, filter=row_filter)
        index = None
        if per_part:
            table, index = _part_index(table, [len(p.tasks) for p in parts])
        df = frame(
            table,
            categoricals=self.categoricals,
            dates_as_object=self.dates_as_object,
            categories=self.categories,
        )
        for name, dtype in self.dtypes.items():
            if name in df.columns and df[name].dtype != dtype:
                df[name] = df[name].astype(dtype)
        if self.index_on is not None:
            df = df.set_index(self.index_on)
        elif index is not None:
            df.index = index
        return df[wanted]

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        meta = self.metadata
        return (
            "ktk-part-reader",
            self.store.url,
            meta.uuid,
            meta.version,
            meta.commit.token,
            self.columns,
            str(self.row_filter),
            self.categoricals,
            self.dates_as_object,
            {k: repr(list(v.categories)) for k, v in self.categories.items()},
            self.index_on,
            {k: str(v) for k, v in self.dtypes.items()},
        )


#: Arrow's scan column that numbers the fragment each row comes from
FRAGMENT_INDEX = "__fragment_index"


def _part_index(table: pa.Table, files_per_part: list[int]) -> tuple[pa.Table, pd.Index]:
    """``table`` (rows in file order, without the fragment column) and its index:
    per part ``0..rows-1``, as if each part had been read alone."""
    fragment = table.column(FRAGMENT_INDEX).to_numpy()
    table = table.drop_columns([FRAGMENT_INDEX])
    if len(fragment) > 1 and (np.diff(fragment) < 0).any():
        order = np.argsort(fragment, kind="stable")
        fragment = fragment[order]
        table = table.take(order)
    part_of_file = np.repeat(np.arange(len(files_per_part)), files_per_part)
    counts = np.bincount(part_of_file[fragment], minlength=len(files_per_part))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return table, pd.Index(np.arange(len(fragment)) - starts, dtype="int64")


def frame(
    table: pa.Table,
    *,
    categoricals: Sequence[str],
    dates_as_object: bool,
    categories: Mapping[str, pd.CategoricalDtype],
) -> pd.DataFrame:
    """kartothek's pandas conventions, with dataset-wide categories for indexed columns."""
    df = _common.to_pandas(table, categoricals=categoricals, dates_as_object=dates_as_object)
    for name, dtype in categories.items():
        if name in df.columns:
            df[name] = df[name].astype(dtype.categories.dtype).astype(dtype)
    return df


@dataclass
class ReadPlan:
    """Everything a Dask read needs, decided on the driver without reading data."""

    dataset: arrow.KartothekDataset
    parts: list[ReadPart]
    reader: PartReader
    meta: pd.DataFrame
    #: dask divisions, when ``index_on`` gives known ones
    divisions: list[Any] | None = None


def plan_read(
    store: Any,
    dataset_uuid: str | None,
    *,
    columns: Any = None,
    predicates: Any = None,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    dispatch_by: Sequence[str] | None = None,
    index_on: str | None = None,
    factory: Any = None,
    table: str | None = None,
) -> ReadPlan:
    """Open the dataset (planned once, with the predicates), group its files into parts
    and build the meta."""
    if dataset_uuid is None:
        raise InvalidArgumentError("dataset_uuid is required: pass the uuid of the dataset to read")
    resolved = _common.store_of(store, factory)
    ds = _common.open_dataset(resolved, dataset_uuid, predicates)
    _common.check_table(ds, table)
    cols = _common.column_list(columns, ds.metadata.table)
    _common.check_columns(ds, cols, "columns")
    cats = list(categoricals or [])
    _common.check_columns(ds, cats, "categoricals")
    if cols is None:
        cols = list(ds.schema.names)
    group_by = [index_on] if index_on is not None else _common.dispatch_columns(dispatch_by)
    parts = [ReadPart(g.tasks, g.row_filter, g.values) for g in _common.group_tasks(ds, group_by)]
    categories = _index_categories(ds, cats)
    divisions = None
    if index_on is None:
        meta = _meta(ds, cols, cats, dates_as_object, categories)
    else:
        # plateau's set_index(dask_index_on): the column becomes the index
        cols = [c for c in cols if c != index_on]
        meta = _meta(ds, [*cols, index_on], cats, dates_as_object, categories)
        meta = meta.set_index(index_on)
        divisions = _divisions(ds, index_on, parts, dates_as_object)
    dtypes = _nullable_integers(ds, [t for p in parts for t in p.tasks])
    for name, dtype in dtypes.items():
        if name in meta.columns:
            meta[name] = meta[name].astype(dtype)
    reader = PartReader(
        resolved,
        ds.metadata,
        cols,
        row_filter=_common.row_filter(ds),
        categoricals=cats,
        dates_as_object=dates_as_object,
        categories=categories,
        index_on=index_on,
        dtypes=dtypes,
    )
    return ReadPlan(ds, parts, reader, meta, divisions)


def _nullable_integers(ds: arrow.KartothekDataset, tasks: Sequence[FileTask]) -> dict[str, Any]:
    """Integer and bool columns some planned file holds nulls in (by the stored null counts).

    pandas reads such a file's column as ``Int64``/``boolean``, a file without
    nulls as ``int64``/``bool``; the meta and every part then use the nullable dtype.
    """
    out: dict[str, Any] = {}
    files = ds.metadata.files
    for column in ds.schema:
        t = column.type
        if column.name in ds.metadata.partition_keys:
            continue
        if not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            continue
        if any((files[k.label].stats or {}).get(column.name, [None, None, 0])[2] for k in tasks):
            if pa.types.is_boolean(t):
                out[column.name] = pd.BooleanDtype()
            elif pa.types.is_signed_integer(t):
                out[column.name] = pd.Int64Dtype()
            else:
                out[column.name] = pd.UInt64Dtype()
    return out


def _slim(meta: DatasetMetadata) -> DatasetMetadata:
    """``meta`` without files, indices and user metadata: what every read task shares.

    The parts carry their files as :class:`FileTask` s, so a graph of N parts
    ships O(N) metadata, not O(N²).
    """
    return replace(meta, files={}, indices={}, user_metadata={})


def _plain(t: pa.DataType) -> pa.DataType:
    return _common.plain_type(t)


def _index_categories(
    ds: arrow.KartothekDataset, categoricals: Sequence[str]
) -> dict[str, pd.CategoricalDtype]:
    """Dataset-wide categories for categoricals that are partition keys or indexed (plateau)."""
    out: dict[str, pd.CategoricalDtype] = {}
    meta = ds.metadata
    for column in categoricals:
        if column in meta.partition_keys:
            values = {t.partition_values.get(column) for t in ds.tasks}
        elif column in meta.indices:
            values = set(commit.read_index(ds.store, meta, column))
        else:
            continue
        ordered = sorted((v for v in values if v is not None), key=lambda v: (v is None, v))
        arrow_type = _plain(ds.schema.field(column).type)
        series = pa.array(ordered, type=arrow_type).to_pandas(
            date_as_object=True, coerce_temporal_nanoseconds=True
        )
        out[column] = pd.CategoricalDtype(pd.Index(series), ordered=False)
    return out


def _meta(
    ds: arrow.KartothekDataset,
    columns: list[str],
    categoricals: list[str],
    dates_as_object: bool,
    categories: Mapping[str, pd.CategoricalDtype],
) -> pd.DataFrame:
    dd = import_optional("dask.dataframe", extra="dask")
    meta = _common.empty_frame(ds, columns, categoricals, dates_as_object)
    for name, dtype in categories.items():
        if name in meta.columns:
            meta[name] = meta[name].astype(dtype)
    unknown = [
        c
        for c in meta.columns
        if isinstance(meta[c].dtype, pd.CategoricalDtype) and c not in categories
    ]
    if unknown:
        # per-file categories differ: tell Dask they are unknown
        meta = dd.utils.clear_known_categories(meta, cols=unknown)
    return meta


def _divisions(
    ds: arrow.KartothekDataset, column: str, parts: list[ReadPart], dates_as_object: bool
) -> list[Any] | None:
    values = [p.group[0] for p in parts]
    if not values or any(v is None for v in values):
        return None  # a null group has no place among sorted divisions
    arrow_type = _plain(ds.schema.field(column).type)
    series = pa.array(values, type=arrow_type).to_pandas(
        date_as_object=dates_as_object, coerce_temporal_nanoseconds=True
    )
    out = list(series)
    return [*out, out[-1]]


# -- writing -----------------------------------------------------------------------


@dataclass(frozen=True)
class PartTask:
    """What every write task needs (small and picklable)."""

    writer: write.WriterSpec
    sort_partitions_by: tuple[str, ...] = ()

    def __dask_tokenize__(self) -> str:
        return f"ktk-write-{self.writer.name_prefix}{self.sort_partitions_by}"


@dataclass
class PartResult:
    """What one write task wrote (or why it failed, after deleting its files)."""

    entries: list[FileEntry] = field(default_factory=list)
    index_delta: dict[str, spec_index.IndexMap] = field(default_factory=dict)
    schema: pa.Schema | None = None
    error: BaseException | None = None


def write_part(data: Any, task: PartTask) -> PartResult:
    """Write one task's data as parquet files; never raises (failures are returned)."""
    writer = task.writer.open()
    try:
        for table in _part_tables(data, task):
            writer.write(table)
        return PartResult(writer.entries, writer.index_delta, writer.schema)
    except Exception as exc:
        writer.abort()
        return PartResult(error=_portable(exc))
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.release()  # the driver protects the files until its commit ends


def write_parts(items: list[Any], task: PartTask) -> list[PartResult]:
    """``write_part`` for each item of a bag partition."""
    return [write_part(item, task) for item in items]


def _part_tables(data: Any, task: PartTask) -> Iterator[Any]:
    for item in frames(data):
        if isinstance(item, pd.DataFrame):
            if task.sort_partitions_by:
                item = _common.sort_frame(item, task.sort_partitions_by)
            if BUCKET_COLUMN in item.columns:
                for _, group in item.groupby(BUCKET_COLUMN, sort=True, observed=True):
                    yield from write.iter_tables(group.drop(columns=BUCKET_COLUMN))
                continue
        elif task.sort_partitions_by:
            raise InvalidArgumentError("sort_partitions_by needs pandas DataFrames as input")
        yield from write.iter_tables(item)


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (to travel back from a worker), else a KtkError."""
    text = "".join(traceback.format_exception(exc))
    try:
        if hasattr(exc, "add_note"):  # Python >= 3.11: keep the worker's traceback
            exc.add_note(f"raised in a ktk-arrow write task:\n{text}")
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any unpicklable error is replaced
        return KtkError(f"a write task failed with {type(exc).__name__}: {exc}\n{text}")
    return exc


@dataclass
class DistributedWrite:
    """A write planned on the driver, written by many tasks, committed once."""

    prepared: write.PreparedWrite
    write_id: str
    metadata: Mapping[str, Any] | None = None
    allow_empty: bool = False

    def task(self, sort_partitions_by: Sequence[str] | str | None = None) -> PartTask:
        if isinstance(sort_partitions_by, str):
            sort_partitions_by = [sort_partitions_by]
        return PartTask(
            self.prepared.writer_spec(name_prefix=f"{self.write_id}-"),
            tuple(sort_partitions_by or ()),
        )

    def finish(self, results: Sequence[PartResult]) -> DatasetMetadata:
        """Commit what every task wrote as one snapshot, or delete it all and raise."""
        results = [r for r in _flatten(results)]
        written = [e for r in results for e in r.entries]
        store = self.prepared.store
        commit.IN_FLIGHT.add(store, [e.key for e in written])
        try:
            failed = [r.error for r in results if r.error is not None]
            if failed:
                raise failed[0]
            schema = unify_schemas([r.schema for r in results])
            if schema is None and not results:
                schema = self.prepared.plan.schema
            delta = spec_index.merge_columns(r.index_delta for r in results)
            if self.prepared.needs_empty_file(written, schema):
                # plateau's one empty partition: written here, as no task wrote a file
                writer = self.prepared.writer_spec(name_prefix=f"{self.write_id}-").open()
                if schema is not None:
                    writer.schema = schema
                writer.write_empty()
                writer.release()
                written = [*written, *writer.entries]
                commit.IN_FLIGHT.add(store, [e.key for e in writer.entries])
            snap = self.prepared.commit(
                written, delta, schema, metadata=self.metadata, allow_empty=self.allow_empty
            )
        except BaseException as exc:
            if commit.may_discard(exc):  # never the files of a commit that may be in
                _delete(store, [e.key for e in written])
            raise
        finally:
            commit.IN_FLIGHT.discard(store, [e.key for e in written])
        return commit.load_version(self.prepared.store, self.prepared.dataset_uuid, snap.version)

    def delete_orphans(self) -> None:
        """Delete every file of this write (after a failure that lost the tasks' results)."""
        store = self.prepared.store
        prefix = keys.table_prefix(self.prepared.dataset_uuid, self.prepared.plan.table) + "/"
        with contextlib.suppress(KtkError, OSError):
            doomed = [
                info.key
                for info in store.list(prefix)
                if info.key.rsplit("/", 1)[-1].startswith(f"{self.write_id}-")
            ]
            _delete(store, doomed)


def _flatten(results: Sequence[Any]) -> Iterator[PartResult]:
    for r in results:
        if isinstance(r, PartResult):
            yield r
        else:  # a bag partition's list
            yield from _flatten(r)


def _delete(store: Store, keys_: list[str]) -> None:
    with contextlib.suppress(KtkError, OSError):  # garbage collection removes what is left
        store.delete_many(keys_)


def unify_schemas(schemas: Sequence[pa.Schema | None]) -> pa.Schema | None:
    """One dataset schema for files written by independent tasks.

    A column that is all-null in one task takes the type the others found;
    categorical in some tasks and plain in others gives the plain type.
    Anything else that differs is a :class:`SchemaMismatchError`.
    """
    present = [s for s in schemas if s is not None]
    if not present:
        return None
    first = present[0]
    for other in present[1:]:
        if set(other.names) != set(first.names):
            raise SchemaMismatchError(
                f"the partitions have different columns: {sorted(first.names)} and "
                f"{sorted(other.names)}; make every partition have the same columns"
            )
    fields = []
    for name in first.names:
        types = {s.field(name).type for s in present} - {pa.null()}
        if len(types) > 1:
            types = {_plain(t) for t in types}
        if len(types) > 1:
            raise SchemaMismatchError(
                f"column {name!r} has different types in different partitions: "
                f"{sorted(map(str, types))}; cast it to one type before writing"
            )
        fields.append(pa.field(name, types.pop() if types else pa.null()))
    return pa.schema(fields, metadata=first.metadata)


def prepare(
    store: Any,
    dataset_uuid: str,
    *,
    mode: str,
    partition_on: Sequence[str] | str | None = None,
    secondary_indices: Sequence[str] | str | None = None,
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    allow_empty: bool = False,
    table: str | None = None,
) -> DistributedWrite:
    """Validate a write on the driver, before any task runs.

    ``table``: a new dataset's table (``None``: the dataset's, or ``"table"``).
    """
    if dataset_uuid is None:
        raise InvalidArgumentError(
            "dataset_uuid is required: pass the uuid of the dataset to change"
        )
    prepared = write.prepare_write(
        _common.store_of(store),
        dataset_uuid,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        mode=mode,
        delete_scope=delete_scope,
        table=table,
    )
    return DistributedWrite(prepared, uuidlib.uuid4().hex[:16], metadata, allow_empty)


# -- the lazy result ----------------------------------------------------------------


def _commit_task(results: list[Any], job: _Opaque) -> DatasetMetadata:
    write_job: DistributedWrite = job.value
    return write_job.finish(results)


class WriteGraph(dask_delayed.Delayed):  # type: ignore[misc,name-defined]
    """A lazy dataset write; computing it returns the committed ``DatasetMetadata``.

    ``.compute()`` runs the write tasks on the active scheduler (a
    ``distributed.Client`` if one is active), waits for all of them, and
    commits once, on this machine.  If any task failed, every file the write
    produced is deleted and the first failure is raised.

    As a plain Dask collection (``dask.compute(g)``, ``client.compute(g)``,
    ``persist``), the commit is one final task of the graph; a failure inside
    a write task still deletes everything, but files of tasks that were cut
    short by a failing *upstream* task are left to ``garbage_collect_dataset``.
    """

    __slots__ = ("_job", "_parts")

    def __init__(self, parts: list[Any], job: DistributedWrite) -> None:
        final = dask.delayed(_commit_task, pure=False)(parts, _Opaque(job))
        super().__init__(final.key, final.dask)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_job", job)

    def compute(self, **kwargs: Any) -> DatasetMetadata:
        job: DistributedWrite = self._job
        return job.finish(compute_all(self._parts, job, **kwargs))

    def __repr__(self) -> str:
        job = self._job
        return (
            f"<WriteGraph dataset={job.prepared.dataset_uuid!r} mode={job.prepared.mode!r} "
            f"tasks={len(self._parts)}>"
        )


class _Opaque:
    """Keeps Dask from traversing (and tokenizing) the write job it wraps."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __dask_tokenize__(self) -> str:
        return f"ktk-write-job-{id(self.value)}"


def compute_all(parts: list[Any], job: DistributedWrite, **kwargs: Any) -> list[Any]:
    """Compute ``parts``; if that raises, wait until no task still runs, clean up, re-raise."""
    if not parts:
        return []
    scheduler = dask.base.get_scheduler(scheduler=kwargs.pop("scheduler", None), collections=parts)
    client = _client_of(scheduler)
    if client is not None:
        return _compute_on_cluster(client, parts, job)
    own_pool = None
    if (
        scheduler is dask_threaded.get
        and "pool" not in kwargs
        and not dask.config.get("pool", None)
    ):
        # our own pool, so that after a failure we can wait for the tasks still running
        workers = kwargs.get("num_workers") or dask.config.get("num_workers", None)
        executor = getattr(dask_threaded, "ContextAwareThreadPoolExecutor", ThreadPoolExecutor)
        own_pool = executor(workers or dask_threaded.CPU_COUNT)
        kwargs["pool"] = own_pool
    try:
        return list(dask.compute(*parts, scheduler=scheduler, **kwargs))
    except BaseException:
        if own_pool is not None:
            own_pool.shutdown(wait=True)
        job.delete_orphans()
        raise
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True)


def _client_of(scheduler: Any) -> Any:
    owner = getattr(scheduler, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client" and hasattr(owner, "compute"):
        return owner
    return None


def _compute_on_cluster(client: Any, parts: list[Any], job: DistributedWrite) -> list[Any]:
    distributed = import_optional("distributed", extra="dask")
    futures = client.compute(parts)
    distributed.wait(futures)  # every task settled: none can still write a file
    results, errors = [], []
    for future in futures:
        if future.status == "finished":
            results.append(future.result())
        else:
            errors.append(future)
    if errors:
        written = [e.key for r in _flatten(results) for e in r.entries]
        _delete(job.prepared.store, written)
        job.delete_orphans()  # a worker that died mid-write returned nothing
        errors[0].result()  # raises the task's error with its traceback
    return results
