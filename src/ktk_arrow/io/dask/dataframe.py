"""kartothek's Dask DataFrame API (``plateau.io.dask.dataframe``) on ktk-arrow.

Same function names, argument names and semantics, so a pipeline changes
one import.  Reading plans on the client (files are pruned by partition
values and secondary indices before the graph is built; the meta comes from
the dataset schema, no data is read).  Writing: every Dask partition is
written by its own task, in parallel; the files become visible in ONE
atomic, concurrent-safe commit when the returned object is computed, and
if any task fails every file the write produced is deleted.  Row-level
changes: ``update_dataset_from_ddf(..., upsert_on=)`` and
:func:`delete_rows`, with the same guarantees (``docs/changes.md``).

Needs ``pip install 'ktk-arrow[dask]'``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ... import commit, rows
from ..._optional import import_optional
from ...errors import InvalidArgumentError
from ...spec.schema import conform
from ...storage import StoreLike
from ...write import iter_tables
from .. import _distributed
from .._distributed import BUCKET_COLUMN, DistributedWrite, PartResult, PartTask, WriteGraph
from ..eager import update_table
from .delayed import RowChangeGraph, Runner, commit_row_change, delete_rows__delayed, rewrite_tasks

dask = import_optional("dask", extra="dask")
dd = import_optional("dask.dataframe", extra="dask")

__all__ = [
    "delete_rows",
    "hash_dataset",
    "read_dataset_as_ddf",
    "store_dataset_from_ddf",
    "update_dataset_from_ddf",
]


def read_dataset_as_ddf(
    dataset_uuid: str | None = None,
    store: StoreLike = None,
    table: str = "table",
    columns: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    predicate_pushdown_to_io: bool = True,
    categoricals: Sequence[str] | None = None,
    dates_as_object: bool = True,
    predicates: Any = None,
    factory: Any = None,
    dask_index_on: str | None = None,
    dispatch_by: Sequence[str] | None = None,
) -> Any:
    """The dataset as a ``dask.dataframe.DataFrame``: one partition per file.

    With ``dispatch_by``, one partition per distinct value combination of
    those columns (partition keys or indexed columns).  With
    ``dask_index_on`` (a partition key or indexed column), one partition per
    value, with that column as the index and known divisions.  Categoricals
    on partition keys and indexed columns get dataset-wide categories.
    ``predicates`` prune files before the graph is built and filter rows
    inside Arrow's scan of each file.

    Dask's optimizer pushes column selections into the read (``ddf.x.sum()``
    reads column ``x`` only), and then reads several small files in one task
    (one Arrow scan, up to about ``FUSED_READ_BYTES`` of the selected
    columns): ``ddf.npartitions`` stays one per file, the optimized graph has
    fewer.  Each partition's rows and index are the same either way.  The
    whole frame, ``dispatch_by`` and ``dask_index_on`` partitions are never
    fused.  Without ``predicates``, ``len(ddf)`` and ``ddf.shape[0]`` come
    from the row counts the metadata records: no file is read.
    """
    if dask_index_on is not None and not isinstance(dask_index_on, str):
        raise TypeError(
            f"The parameter `dask_index_on` must be a string but got {type(dask_index_on)}"
        )
    if dask_index_on is not None and dispatch_by:
        raise InvalidArgumentError(
            "`read_dataset_as_ddf` got parameters `dask_index_on` and `dispatch_by`. "
            "Note that `dispatch_by` can only be used if `dask_index_on` is None."
        )
    plan = _distributed.plan_read(
        store,
        dataset_uuid,
        table=table,
        columns=columns,
        predicates=predicates,
        categoricals=categoricals,
        dates_as_object=dates_as_object,
        dispatch_by=dispatch_by,
        index_on=dask_index_on,
        factory=factory,
    )
    with dask.config.set({"dataframe.convert-string": False}):
        if not plan.parts:
            return dd.from_pandas(plan.meta, npartitions=1)
        return _collection(plan)


#: file bytes one fused read task aims at, once Dask projected the columns a
#: computation needs (Dask's optimizer fuses the reads of small files)
FUSED_READ_BYTES = 128 * 2**20


def fused_read_bytes() -> int:
    """``FUSED_READ_BYTES``, or Dask's config ``ktk_arrow.fused-read-bytes`` (0: no fusion).

    Fusion changes the partitions of the optimized graph, which some Dask
    operations on projected columns do not expect (``to_dask_array(lengths=True)``,
    ``dask.persist`` of several columns: they fail as on ``dd.read_parquet``);
    ``dask.config.set({"ktk_arrow.fused-read-bytes": 0})`` turns it off.
    """
    return int(dask.config.get("ktk_arrow.fused-read-bytes", FUSED_READ_BYTES))


def _collection(plan: _distributed.ReadPlan) -> Any:
    """The Dask DataFrame of ``plan``: ``dd.from_map`` with our statistics and fusion.

    On a Dask whose expression internals differ, plain ``dd.from_map``:
    the same result, only ``len()`` then reads the files and reads are not fused.
    """
    expression = _read_expression(plan)
    if expression is not None:
        return dd.dask_expr._collection.new_collection(expression)
    return dd.from_map(
        plan.reader,
        plan.parts,
        meta=plan.meta,
        divisions=plan.divisions,
        label="read-ktk",
        enforce_metadata=False,
    )


def _read_expression(plan: _distributed.ReadPlan) -> Any:
    if not _DASK_HOOKS:
        return None
    operands = {
        "func": plan.reader,
        "iterables": [plan.parts],
        "columns": None,
        "args": [],
        "kwargs": {},
        "columns_arg_required": False,
        "user_meta": plan.meta,
        "enforce_metadata": False,
        "user_divisions": plan.divisions,
        "label": "read-ktk",
    }
    try:
        return KtkRead(*(operands[name] for name in KtkRead._parameters if name in operands))
    except Exception:  # Dask's private operands changed: fall back to from_map
        return None


# Dask expressions for our reads.  They hook into Dask's private expression API
# (as ``dd.read_parquet`` does): a ``Len``/``Lengths`` of the read is answered
# from the recorded row counts, and the reads of small files are fused into one
# Arrow scan per task when the optimizer projected columns.  Checked against the
# operands they rely on, so a changed Dask falls back to ``dd.from_map``.
try:
    from dask._task_spec import Task
    from dask.dataframe.dask_expr._expr import (
        Blockwise,
        Index,
        Lengths,
        Literal,
        determine_column_projection,
    )
    from dask.dataframe.dask_expr._expr import Expr as DataFrameExpr
    from dask.dataframe.dask_expr._reductions import Len
    from dask.dataframe.dask_expr._repartition import Repartition
    from dask.dataframe.dask_expr.io.io import FromMap, FromMapProjectable, FusedIO
except ImportError:  # pragma: no cover - another Dask
    _DASK_HOOKS = False
else:
    _DASK_HOOKS = set(FromMapProjectable._parameters) == {
        "func",
        "iterables",
        "columns",
        "args",
        "kwargs",
        "columns_arg_required",
        "user_meta",
        "enforce_metadata",
        "user_divisions",
        "label",
        "_partitions",
        "_series",
    } and hasattr(FusedIO, "_fusion_buckets")
    _DASK_HOOKS = _DASK_HOOKS and FromMap._parameters == [
        "func",
        "iterables",
        "args",
        "kwargs",
        "user_meta",
        "enforce_metadata",
        "user_divisions",
        "label",
        "_partitions",
    ]


if _DASK_HOOKS:

    class KtkRead(FromMapProjectable):  # type: ignore[misc,valid-type]
        """A kartothek read: ``from_map`` over planned parts, knowing their row counts."""

        @functools.cached_property
        def kwargs(self) -> dict[str, Any]:
            options = dict(self.operand("kwargs"))
            if self.columns_operand is not None:
                # also [] (a length under a row filter): FromMapProjectable drops it
                options["columns"] = self.columns
            return options

        @property
        def _parts(self) -> list[_distributed.ReadPart]:
            parts = self.iterables[0]
            if self._filtered:
                return [parts[i] for i in self._partitions]
            return list(parts)

        def _lengths(self) -> tuple[int, ...] | None:
            """Rows per partition as recorded (``None``: a filter applies, or some is unknown)."""
            if self.func.row_filter is not None:
                return None
            rows = [p.rows for p in self._parts]
            if any(r is None for r in rows):
                return None
            return tuple(r for r in rows if r is not None)

        def _simplify_up(self, parent: Any, dependents: Any) -> Any:
            if isinstance(parent, (Len, Lengths)):
                lengths = self._lengths()
                if lengths is not None:
                    return Literal(sum(lengths) if isinstance(parent, Len) else lengths)
                if isinstance(parent, Len) and self.columns_operand != []:
                    # rows under a filter: read no column beyond what the filter needs
                    return Len(self.substitute_parameters({"columns": [], "_series": False}))
                return None
            if isinstance(parent, Index):
                # ReadParquet's rule: the columns every consumer needs, none for the index
                columns = determine_column_projection(self, parent, dependents)
                columns = [c for c in self.columns if c in columns]
                if set(columns) == set(self.columns):
                    return None
                return Index(self.substitute_parameters({"columns": columns, "_series": False}))
            return super()._simplify_up(parent, dependents)

        @functools.cached_property
        def _fusion_compression_factor(self) -> float:
            """How many partitions' reads one fused task takes (its inverse).

            1 (no fusion) for the whole frame, for ``dispatch_by`` and
            ``dask_index_on`` groups: those partitions are the documented ones.
            """
            parts = self._parts
            reader = self.func
            target = fused_read_bytes()
            if (
                not target
                or self.columns_operand is None
                or len(parts) < 2
                or any(p.group for p in parts)
                or any(p.group_filter is not None for p in parts)
            ):
                return 1.0
            share = max(len(self.columns), 1) / max(len(reader.columns), 1)
            if share >= 1:
                return 1.0
            projected = share * sum(p.size for p in parts) / len(parts)
            return min(max(projected / target, 0.001), 1.0)

        def _tune_up(self, parent: Any) -> Any:
            # BlockwiseIO._tune_up, with our fused read in place of FusedIO; not under
            # a collection wrapper (``persist``'s sequence): the persisted frame keeps
            # the partitions of its divisions
            if (
                self._fusion_compression_factor >= 1
                or isinstance(parent, FusedIO)
                or not isinstance(parent, DataFrameExpr)
            ):
                return None
            fused = KtkFusedRead(self)
            if isinstance(parent, Blockwise):
                for arg in parent.dependencies():
                    if arg is not self and not parent._broadcast_dep(arg):
                        parent = parent.substitute(
                            arg, Repartition(arg, new_partitions=fused.npartitions)
                        )
            return parent.substitute(self, fused)

    class KtkFusedRead(FusedIO):  # type: ignore[misc,valid-type]
        """Several partitions of a :class:`KtkRead` in one task: one Arrow scan of their files."""

        def _task(self, name: Any, index: int) -> Any:
            read = self.operand("_expr")
            parts = read.iterables[0]
            bucket = [parts[i] for i in self._fusion_buckets[index]]
            task = Task(
                name,
                read.func.read_many,
                bucket,
                columns=read.kwargs.get("columns"),
                _data_producer=True,
            )
            if read._series:
                return Task(name, operator.getitem, task, read.columns[0])
            return task


def store_dataset_from_ddf(
    ddf: Any,
    store: StoreLike,
    dataset_uuid: str | None,
    table: str = "table",
    secondary_indices: Sequence[str] | None = None,
    shuffle: bool = False,
    repartition_ratio: float | None = None,
    num_buckets: int = 1,
    sort_partitions_by: Sequence[str] | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    df_serializer: Any = None,
    metadata_merger: Callable[..., Any] | None = None,
    metadata_version: int = 4,
    partition_on: Sequence[str] | None = None,
    bucket_by: Sequence[str] | str | None = None,
    overwrite: bool = False,
) -> WriteGraph:
    """A lazy write of ``ddf`` as a new dataset (replace it with ``overwrite=True``).

    Compute the result to write and commit; it returns the dataset metadata.
    Without ``shuffle``, every Dask partition writes one file per
    ``partition_on`` value it holds.  With ``shuffle=True`` the data is first
    shuffled so that each ``partition_on`` value ends up in ``num_buckets``
    files (rows hashed by ``bucket_by``, or by all columns).
    """
    _check_args(metadata_version)
    job = _distributed.prepare(
        store,
        dataset_uuid,
        mode="overwrite" if overwrite else "create",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        metadata=metadata,
        table=update_table(table),
    )
    return _write_graph(
        ddf,
        job,
        partition_on=partition_on,
        shuffle=shuffle,
        repartition_ratio=repartition_ratio,
        num_buckets=num_buckets,
        sort_partitions_by=sort_partitions_by,
        bucket_by=bucket_by,
    )


def update_dataset_from_ddf(
    ddf: Any,
    store: StoreLike = None,
    dataset_uuid: str | None = None,
    table: str = "table",
    secondary_indices: Sequence[str] | None = None,
    shuffle: bool = False,
    repartition_ratio: float | None = None,
    num_buckets: int = 1,
    sort_partitions_by: Sequence[str] | str | None = None,
    delete_scope: Iterable[Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    df_serializer: Any = None,
    metadata_merger: Callable[..., Any] | None = None,
    default_metadata_version: int = 4,
    partition_on: Sequence[str] | None = None,
    factory: Any = None,
    bucket_by: Sequence[str] | str | None = None,
    upsert_on: Sequence[str] | str | None = None,
) -> WriteGraph | RowChangeGraph:
    """A lazy append of ``ddf`` (created if missing); compute it to commit.

    With ``delete_scope``, the matched partitions are replaced by the new
    data in the same commit; ``ddf=None`` only deletes them.

    With ``upsert_on`` (key column names), :func:`ktk_arrow.upsert` on a
    cluster: each row of ``ddf`` replaces the stored rows with its key, the
    other rows are appended.  Keys must be non-null and unique across the
    whole ``ddf``; the dataset must exist.  Computing it writes every
    partition in its own task (each also returns its keys), checks the keys
    on this machine, plans the stored files that may hold one (as
    ``ka.upsert`` does), rewrites each of them without those keys in a task
    of its own (peak memory per task: one file), and commits once, with
    ``ka.upsert``'s conflict rule, only if every task succeeded; otherwise
    every file written is deleted.  It returns the committed
    ``DatasetMetadata`` (``.commit`` has ``rows_added`` / ``rows_removed``).
    Run by ``dask.compute`` as part of a larger graph, the rewrites run in
    the graph's final task instead, one file after another.
    """
    _check_args(default_metadata_version)
    if factory is not None:
        raise InvalidArgumentError(
            "factory= (a plateau DatasetFactory) is not supported; pass store= and dataset_uuid="
        )
    if upsert_on is not None:
        if delete_scope is not None:
            raise InvalidArgumentError(
                "update_dataset_from_ddf got both upsert_on= and delete_scope=; pass one of them "
                "(an upsert replaces rows by key, delete_scope whole partitions)"
            )
        if ddf is None:
            raise InvalidArgumentError("upsert_on= needs a ddf holding the rows to upsert")
    job = _distributed.prepare(
        store,
        dataset_uuid,
        mode="overwrite" if delete_scope is not None else "append",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        delete_scope=None if delete_scope is None else list(delete_scope),
        metadata=metadata,
        allow_empty=True,
        table=update_table(table),
    )
    if upsert_on is not None:
        return _upsert_graph(
            ddf,
            job,
            rows.check_key_columns(upsert_on),
            shuffle=shuffle,
            repartition_ratio=repartition_ratio,
            num_buckets=num_buckets,
            sort_partitions_by=sort_partitions_by,
            bucket_by=bucket_by,
        )
    return _write_graph(
        ddf,
        job,
        partition_on=list(job.prepared.plan.partition_keys),
        shuffle=shuffle,
        repartition_ratio=repartition_ratio,
        num_buckets=num_buckets,
        sort_partitions_by=sort_partitions_by,
        bucket_by=bucket_by,
    )


def _check_args(metadata_version: int) -> None:
    if metadata_version != 4:
        raise InvalidArgumentError(f"metadata_version={metadata_version!r}: only 4 exists")


def _write_graph(
    ddf: Any,
    job: _distributed.DistributedWrite,
    *,
    partition_on: Sequence[str] | None,
    shuffle: bool,
    repartition_ratio: float | None,
    num_buckets: int,
    sort_partitions_by: Sequence[str] | str | None,
    bucket_by: Sequence[str] | str | None,
) -> WriteGraph:
    task = job.task(sort_partitions_by)
    if ddf is None:
        return WriteGraph([], job)
    _check_ddf(ddf)
    with dask.config.set({"dataframe.convert-string": False, "dataframe.shuffle.method": "tasks"}):
        ddf = _arranged(ddf, partition_on, shuffle, repartition_ratio, num_buckets, bucket_by)
        written = ddf.map_partitions(
            _distributed.write_part,
            task,
            meta=(None, "object"),
            enforce_metadata=False,
            align_dataframes=False,
        )
        parts = list(written.to_delayed())
    return WriteGraph(parts, job)


def _check_ddf(ddf: Any) -> None:
    if not isinstance(ddf, dd.DataFrame):
        raise InvalidArgumentError(
            f"ddf must be a dask.dataframe.DataFrame, got {type(ddf).__name__}"
        )


def _arranged(
    ddf: Any,
    partition_on: Sequence[str] | None,
    shuffle: bool,
    repartition_ratio: float | None,
    num_buckets: int,
    bucket_by: Sequence[str] | str | None,
) -> Any:
    """``ddf`` repartitioned and shuffled as the write's options ask (within the config)."""
    if repartition_ratio:
        npartitions = max(1, math.ceil(ddf.npartitions / repartition_ratio))
        ddf = ddf.repartition(npartitions=npartitions)
    if shuffle:
        ddf = _shuffle(ddf, list(partition_on or []), num_buckets, bucket_by)
    return ddf


# -- row-level changes -------------------------------------------------------------


def delete_rows(
    store: StoreLike,
    dataset_uuid: str,
    filter: Any = None,
    *,
    all_rows: bool = False,
) -> RowChangeGraph:
    """:func:`ktk_arrow.delete_rows` with one Dask task per file that holds a matching row.

    Lazy: computing the result rewrites the files in parallel and commits
    once, only if every task succeeded, returning the ``delete_rows``
    ``Snapshot`` (see :func:`~ktk_arrow.io.dask.delayed.delete_rows__delayed`).
    """
    return delete_rows__delayed(store, dataset_uuid, filter, all_rows=all_rows)


def _upsert_graph(
    ddf: Any,
    job: DistributedWrite,
    key_columns: list[str],
    *,
    shuffle: bool,
    repartition_ratio: float | None,
    num_buckets: int,
    sort_partitions_by: Sequence[str] | str | None,
    bucket_by: Sequence[str] | str | None,
) -> RowChangeGraph:
    """Phase 1 of an upsert: a task per partition writes its rows and returns their keys."""
    base = rows.existing(job.prepared, job.prepared.dataset_uuid)
    rows.check_keys_known(base, key_columns)
    _check_ddf(ddf)
    missing = [c for c in key_columns if c not in ddf.columns]
    if missing:
        raise InvalidArgumentError(
            f"upsert key columns {missing} are missing from the data; the data has "
            f"columns {list(ddf.columns)}"
        )
    assert base.schema is not None
    key_schema = pa.schema([base.schema.field(c) for c in key_columns])
    task = job.task(sort_partitions_by)
    partition_on = list(job.prepared.plan.partition_keys)
    with dask.config.set({"dataframe.convert-string": False, "dataframe.shuffle.method": "tasks"}):
        ddf = _arranged(ddf, partition_on, shuffle, repartition_ratio, num_buckets, bucket_by)
        pieces = list(ddf.to_delayed())
    write = dask.delayed(_upsert_part, pure=False)
    parts = [write(piece, i, task, key_columns, key_schema) for i, piece in enumerate(pieces)]
    finish = functools.partial(_finish_upsert, job, key_columns, job.metadata)
    return RowChangeGraph(parts, job, finish)


@dataclass
class _UpsertPart(PartResult):
    """What one upsert task wrote, and the keys of its rows (``None``: none, or it failed)."""

    keys: pa.Table | None = None


def _upsert_part(
    data: Any, number: int, task: PartTask, key_columns: list[str], key_schema: pa.Schema
) -> _UpsertPart:
    """Check the partition's keys (non-null), write its rows; never raises."""
    try:
        frame = data.drop(columns=[BUCKET_COLUMN]) if BUCKET_COLUMN in data.columns else data
        tables = [t for t in iter_tables(frame[key_columns]) if t.num_rows]
        rows.check_not_null(tables, key_columns, where=f" of Dask partition {number}")
        keys = [conform(t, key_schema, what="upsert keys") for t in tables]
    except Exception as exc:
        return _UpsertPart(error=_distributed._portable(exc))
    written = _distributed.write_part(data, task)
    ok = written.error is None and bool(keys)
    return _UpsertPart(
        written.entries,
        written.index_delta,
        written.schema,
        written.error,
        keys=pa.concat_tables(keys) if ok else None,
    )


def _finish_upsert(
    job: DistributedWrite,
    key_columns: list[str],
    metadata: Mapping[str, Any] | None,
    results: Sequence[_UpsertPart],
    run: Runner,
) -> Any:
    """Phase 2, on this machine (or in the graph's final task): check the keys, rewrite
    the stored files holding them (``run`` computes those tasks), commit once."""
    prepared = job.prepared
    store = prepared.store
    base = prepared.base
    assert base is not None
    added = list(results)
    written = [e.key for r in added for e in r.entries]
    commit.IN_FLIGHT.add(store, written)
    try:
        failed = [r.error for r in added if r.error is not None]
        if failed:
            raise failed[0]
        key_tables = [r.keys for r in results if r.keys is not None]
        if not key_tables:
            return base  # no rows: nothing to commit
        keys = pa.concat_tables(key_tables).combine_chunks()
        rows.check_unique_keys(keys, key_columns)
        scan_filter, tasks = rows.plan_upsert(store, base, keys)
        rewritten = run(rewrite_tasks(job, base, rows.Matcher(keys=keys), tasks))
        snapshot = commit_row_change(
            job, "upsert", added, rewritten, scan_filter, keys.num_rows, metadata=metadata
        )
    except BaseException as exc:
        if commit.may_discard(exc):
            _distributed._delete(store, written)
        raise
    finally:
        commit.IN_FLIGHT.discard(store, written)
    return commit.load_version(store, prepared.dataset_uuid, snapshot.version)


def _shuffle(
    ddf: Any, partition_on: list[str], num_buckets: int, bucket_by: Sequence[str] | str | None
) -> Any:
    """Move rows so that each partition value lands in ``num_buckets`` tasks (plateau)."""
    if not isinstance(num_buckets, int) or num_buckets < 1:
        raise InvalidArgumentError(f"num_buckets must be a positive int, got {num_buckets!r}")
    subset = [bucket_by] if isinstance(bucket_by, str) else list(bucket_by or [])
    unknown = [c for c in subset if c not in ddf.columns]
    if unknown:
        raise InvalidArgumentError(
            f"bucket_by names columns {unknown} that are not in the data; columns are "
            f"{list(ddf.columns)}"
        )
    meta = ddf._meta.assign(**{BUCKET_COLUMN: np.uint64(0)})
    ddf = ddf.map_partitions(_hash_bucket, subset, num_buckets, meta=meta)
    return ddf.shuffle(on=[*partition_on, BUCKET_COLUMN])


def _hash_bucket(df: pd.DataFrame, subset: list[str], num_buckets: int) -> pd.DataFrame:
    hashes = pd.util.hash_pandas_object(df[subset or list(df.columns)], index=False)
    return df.assign(**{BUCKET_COLUMN: (hashes % num_buckets).astype("uint64")})


def hash_dataset(
    store: StoreLike = None,
    dataset_uuid: str | None = None,
    subset: Sequence[str] | None = None,
    group_key: Sequence[str] | None = None,
    table: str = "table",
    predicates: Any = None,
    factory: Any = None,
) -> Any:
    """A hash per partition, or per ``group_key`` group, as a ``dask`` Series of uint64.

    The values are not guaranteed to stay the same across versions.
    """
    if isinstance(subset, str):
        subset = [subset]
    if isinstance(group_key, str):
        group_key = [group_key]
    columns = list(subset) if subset else None
    if subset and group_key:
        columns = sorted(set(subset) | set(group_key))
    ddf = read_dataset_as_ddf(
        dataset_uuid=dataset_uuid,
        store=store,
        table=table,
        columns=columns,
        predicates=predicates,
        factory=factory,
        dates_as_object=True,
    )
    hashed = list(subset) if subset else list(ddf.columns)
    with dask.config.set({"dataframe.convert-string": False, "dataframe.shuffle.method": "tasks"}):
        if not group_key:
            return ddf.map_partitions(_hash_partition, subset=hashed, meta=(None, "uint64"))
        keys = list(group_key)
        return ddf.shuffle(on=keys).map_partitions(
            _hash_groups, group_key=keys, subset=hashed, meta=(None, "uint64")
        )


def _hash_groups(df: pd.DataFrame, group_key: list[str], subset: list[str]) -> pd.Series:
    df = df.set_index(group_key, drop=True)
    return df.groupby(df.index).apply(_hash_partition, subset=subset)


def _hash_partition(part: pd.DataFrame, subset: list[str]) -> Any:
    return pd.util.hash_pandas_object(part.reset_index()[subset], index=False).sum()
