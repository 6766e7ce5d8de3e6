"""A kartothek dataset that *is* a ``pyarrow.dataset.FileSystemDataset``.

``ka.dataset()`` reads the metadata (two small objects), plans the files
(pruning by partition values and secondary indices) and builds one parquet
fragment per file, with its ``partition_expression`` and byte size, so Arrow
needs no listing and no HEAD request.  Every entry point that takes a filter
(``filter``, ``scanner``, ``to_table``, ``to_batches``, ``count_rows``,
``head``, ``take``, ``get_fragments``) plans again with that filter first, so
DuckDB, Polars and plain pyarrow all profit from the indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from . import commit, planning
from .planning import FileTask, ScanFilter
from .spec import keys
from .spec.metadata import DatasetMetadata
from .storage import Store, StoreLike, resolve_store

_NULL_FALLBACK = keys.NULL_VALUE


class KartothekPartitioning:
    """Partitioning discovery for kartothek's layout.

    Wraps ``pyarrow.dataset.HivePartitioning`` with the dataset's typed
    partition schema and ``segment_encoding="uri"`` (values are quoted with
    ``quote(safe="")``), so ``pyarrow.dataset.dataset(table_dir,
    partitioning=p.arrow)`` reads a dataset directory with typed partition values.
    """

    def __init__(self, schema: pa.Schema, partition_keys: tuple[str, ...] | list[str]) -> None:
        self.partition_keys = tuple(partition_keys)
        self.schema = pa.schema(
            [pa.field(k, _plain_type(schema.field(k).type)) for k in self.partition_keys]
        )

    @property
    def arrow(self) -> ds.HivePartitioning:
        return ds.HivePartitioning(
            self.schema, null_fallback=_NULL_FALLBACK, segment_encoding="uri"
        )

    def discover(self) -> ds.PartitioningFactory:
        return ds.HivePartitioning.discover(
            schema=self.schema, null_fallback=_NULL_FALLBACK, segment_encoding="uri"
        )

    def parse(self, path: str) -> dict[str, Any]:
        """Typed partition values of a label or path relative to the table directory.

        ``path`` may name a file (``"c=1/d=x/<label>.parquet"``) or a partition
        directory, with or without the trailing ``/``.
        """
        if "=" in path.rsplit("/", 1)[-1]:
            # names and values have "=" quoted and file names have none: a directory
            path += "/"
        pairs, _ = keys.parse_label(path)
        return {
            col: keys.string_to_value(raw, self.schema.field(col).type)
            for col, raw in pairs
            if col in self.partition_keys
        }

    def __repr__(self) -> str:
        return f"KartothekPartitioning({list(self.partition_keys)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KartothekPartitioning)
            and other.partition_keys == self.partition_keys
            and other.schema.equals(self.schema)
        )

    def __hash__(self) -> int:
        return hash((self.partition_keys, self.schema))


def _plain_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _dataset_schema(meta: DatasetMetadata) -> pa.Schema:
    """The Arrow schema readers see: partition columns decoded, no pandas index."""
    if meta.schema is None:
        raise commit.CorruptMetadataError(f"dataset {meta.uuid!r} has no schema")
    fields = []
    for f in meta.schema:
        if f.name.startswith("__index_level_"):
            continue
        t = _plain_type(f.type) if f.name in meta.partition_keys else f.type
        fields.append(pa.field(f.name, t))
    return pa.schema(fields, metadata=meta.schema.metadata)


class KartothekDataset(ds.FileSystemDataset):
    """A kartothek dataset at one snapshot, as an Arrow ``FileSystemDataset``.

    Extra attributes: ``dataset_uuid``, ``version``, ``snapshot``,
    ``metadata`` (parsed dataset metadata), ``partitioning``
    (:class:`KartothekPartitioning`), ``indices``, ``store``.

    Scans through ``scanner``/``to_table``/``to_batches``/... (DuckDB calls
    ``scanner``, Polars ``to_batches``) prune files by the secondary indices
    and file statistics too.  ``pyarrow.dataset.Scanner.from_dataset(ds,
    filter=...)``, an Acero ``ScanNodeOptions(ds, ...)`` and ``ds.join``
    read the C++ dataset directly: Arrow prunes by partition values only.
    Hand them ``ds.filter(expr)``, whose files are already pruned.
    """

    def __init__(
        self,
        store: Store,
        metadata: DatasetMetadata,
        tasks: list[FileTask] | None = None,
        scan_filter: ScanFilter = planning.NO_FILTER,
    ) -> None:
        schema = _dataset_schema(metadata)
        if tasks is None:
            tasks = planning.plan(metadata, scan_filter, planning.index_loader(store, metadata))
        fs = store.arrow_filesystem()
        fmt = _parquet_format(store)
        expressions = _partition_expressions(tasks, schema)
        if isinstance(fs, pafs.LocalFileSystem):
            # a local open learns the size by fstat: a FileInfo per file would only cost time
            fragments = [
                fmt.make_fragment(store.path(t.key), filesystem=fs, partition_expression=e)
                for t, e in zip(tasks, expressions)
            ]
        else:
            # the size lets object stores read the footer without a HEAD request
            fragments = [
                fmt.make_fragment(
                    store.path(t.key), filesystem=fs, partition_expression=e, file_size=t.size
                )
                for t, e in zip(tasks, expressions)
            ]
        super().__init__(fragments, schema, fmt, fs)
        self._attach(store, metadata, tasks, scan_filter)

    def _attach(
        self,
        store: Store,
        metadata: DatasetMetadata,
        tasks: list[FileTask],
        scan_filter: ScanFilter,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.tasks = tasks
        self._ktk_filter = scan_filter

    # -- attributes of DESIGN §1 ---------------------------------------------
    @property
    def dataset_uuid(self) -> str:
        return self.metadata.uuid

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def snapshot(self) -> commit.Snapshot:
        return commit.Snapshot.of(self.metadata.commit)

    @property
    def partitioning(self) -> KartothekPartitioning:  # type: ignore[override]
        return KartothekPartitioning(_dataset_schema(self.metadata), self.metadata.partition_keys)

    @property
    def indices(self) -> list[str]:
        return sorted(self.metadata.indices)

    def __repr__(self) -> str:
        return (
            f"<KartothekDataset {self.dataset_uuid!r} version={self.version} "
            f"files={len(self.tasks)} store={self.store.url!r}>"
        )

    # -- pruning entry points -----------------------------------------------
    def _narrowed(self, user_filter: Any) -> KartothekDataset:
        """This dataset re-planned with ``user_filter`` (no filter attached yet)."""
        if user_filter is None:
            return self
        extra = planning.make_filter(user_filter, self.schema)
        combined = planning.combine(self._ktk_filter, extra)
        tasks = planning.plan(
            self.metadata, combined, planning.index_loader(self.store, self.metadata)
        )
        allowed = {t.label for t in tasks}
        tasks = [t for t in self.tasks if t.label in allowed]
        return KartothekDataset(self.store, self.metadata, tasks, combined)

    def filter(self, expression: Any) -> KartothekDataset:  # type: ignore[override]
        """A dataset with ``expression`` applied; accepts Arrow expressions and DNF."""
        narrowed = self._narrowed(expression)
        filtered = ds.FileSystemDataset.filter(narrowed, _expression_or_true(narrowed._ktk_filter))
        filtered._attach(narrowed.store, narrowed.metadata, narrowed.tasks, narrowed._ktk_filter)
        assert isinstance(filtered, KartothekDataset)
        return filtered

    def _arrow_filter(self, user_filter: Any) -> Any:
        if user_filter is None:
            return None
        if isinstance(user_filter, (list, tuple)):
            return _expression_or_true(planning.make_filter(user_filter, self.schema))
        return user_filter

    def _row_filter(self, narrowed: KartothekDataset) -> Any:
        # a re-planned dataset carries no attached filter: give Arrow the combined one
        return None if narrowed is self else narrowed._ktk_filter.expression

    def scanner(self, columns: Any = None, filter: Any = None, **kwargs: Any) -> ds.Scanner:  # type: ignore[override]
        kwargs.setdefault("fragment_scan_options", _scan_options(self.store))
        narrowed = self._narrowed(filter)
        scanner = ds.FileSystemDataset.scanner(
            narrowed, columns=columns, filter=self._row_filter(narrowed), **kwargs
        )
        if isinstance(self.filesystem, pafs.PyFileSystem):
            # pyarrow's Scanner.to_reader() keeps the GIL while reads through a
            # Python filesystem need it on Arrow's I/O threads: a deadlock (DuckDB
            # calls to_reader).  to_table() releases the GIL, so read through it.
            # Only memory:// and unmapped fsspec stores take this path.
            table = scanner.to_table()
            passthrough = {k: v for k, v in kwargs.items() if k in ("batch_size", "use_threads")}
            return ds.InMemoryDataset(table).scanner(**passthrough)
        return scanner

    def to_table(self, columns: Any = None, filter: Any = None, **kwargs: Any) -> pa.Table:  # type: ignore[override]
        return self.scanner(columns=columns, filter=filter, **kwargs).to_table()

    def to_batches(
        self, columns: Any = None, filter: Any = None, **kwargs: Any
    ) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        return self.scanner(columns=columns, filter=filter, **kwargs).to_batches()

    def to_reader(
        self, columns: Any = None, filter: Any = None, **kwargs: Any
    ) -> pa.RecordBatchReader:
        return self.scanner(columns=columns, filter=filter, **kwargs).to_reader()

    def count_rows(self, filter: Any = None, **kwargs: Any) -> int:  # type: ignore[override]
        if filter is None and self._ktk_filter.is_empty:
            rows = [t.rows for t in self.tasks]
            if all(r is not None for r in rows):
                return sum(r for r in rows if r is not None)
        return self.scanner(filter=filter, **kwargs).count_rows()

    def head(
        self, num_rows: int, columns: Any = None, filter: Any = None, **kwargs: Any
    ) -> pa.Table:  # type: ignore[override]
        return self.scanner(columns=columns, filter=filter, **kwargs).head(num_rows)

    def take(
        self, indices: Any, columns: Any = None, filter: Any = None, **kwargs: Any
    ) -> pa.Table:  # type: ignore[override]
        return self.scanner(columns=columns, filter=filter, **kwargs).take(indices)

    def get_fragments(self, filter: Any = None) -> Iterator[ds.Fragment]:  # type: ignore[override]
        narrowed = self._narrowed(filter)
        return ds.FileSystemDataset._get_fragments(narrowed, self._row_filter(narrowed))

    def replace_schema(self, schema: pa.Schema) -> ds.Dataset:  # type: ignore[override]
        return ds.FileSystemDataset(
            list(ds.FileSystemDataset._get_fragments(self, None)),
            schema,
            self.format,
            self.filesystem,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.store, self.metadata.to_json(), self.tasks, self._ktk_filter))


def _rebuild(
    store: Store, raw_metadata: bytes, tasks: list[FileTask], scan_filter: ScanFilter
) -> KartothekDataset:
    meta = DatasetMetadata.from_json(raw_metadata)
    dataset_ = KartothekDataset(store, meta, tasks, scan_filter)
    return _refilter(dataset_)


def _refilter(dataset_: KartothekDataset) -> KartothekDataset:
    """Attach the dataset's own filter for Arrow, so every consumer applies it to rows."""
    expr = dataset_._ktk_filter.expression
    if expr is None:
        return dataset_
    filtered = ds.FileSystemDataset.filter(dataset_, expr)
    filtered._attach(dataset_.store, dataset_.metadata, dataset_.tasks, dataset_._ktk_filter)
    assert isinstance(filtered, KartothekDataset)
    return filtered


def _partition_expressions(tasks: list[FileTask], schema: pa.Schema) -> list[pc.Expression]:
    """``planning.partition_expression`` of each task, each term and directory built once.

    Files of one partition directory share its expression, and a value's term
    is built once per column, its scalar converted with the column's other
    distinct values in one ``pa.array`` call (``pa.scalar`` per value is ~8x
    slower): ``ka.dataset()`` on 10,000 single-file partitions spent most of
    its time here.  Values are dict keys as they are: a partition column's
    values all have one Python type, so ``True`` never meets ``1``.
    """
    distinct: dict[str, dict[Any, None]] = {}
    for task in tasks:
        for column, value in task.partition_values.items():
            distinct.setdefault(column, {})[value] = None
    terms: dict[str, dict[Any, pc.Expression]] = {}
    for column, values in distinct.items():
        field = pc.field(column)
        present = [v for v in values if v is not None]
        scalars = pa.array(present, type=schema.field(column).type)
        by_value = {v: field == scalar for v, scalar in zip(present, scalars)}
        by_value[None] = field.is_null()
        terms[column] = by_value
    by_directory: dict[tuple[Any, ...], pc.Expression] = {}
    out = []
    for task in tasks:
        values = task.partition_values
        directory = (*values, *values.values())
        expr = by_directory.get(directory)
        if expr is None:
            for column, value in values.items():
                term = terms[column][value]
                expr = term if expr is None else expr & term
            by_directory[directory] = expr = expr if expr is not None else pc.scalar(True)
        out.append(expr)
    return out


def _expression_or_true(scan_filter: ScanFilter) -> Any:
    return scan_filter.expression if scan_filter.expression is not None else pc.scalar(True)


def _parquet_format(store: Store) -> ds.ParquetFileFormat:
    return ds.ParquetFileFormat(default_fragment_scan_options=_scan_options(store))


def _scan_options(store: Store) -> ds.ParquetFragmentScanOptions:
    # pre_buffer coalesces column-chunk reads: few large requests on object stores
    return ds.ParquetFragmentScanOptions(pre_buffer=store.is_remote)


def dataset(
    store: StoreLike,
    dataset_uuid: str,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    filter: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> KartothekDataset:
    """Open a kartothek dataset (at a snapshot) as a ``pyarrow.dataset.Dataset``."""
    resolved = resolve_store(store, storage_options)
    meta = commit.load(resolved, dataset_uuid, version=version, as_of=as_of)
    if filter is None:
        return KartothekDataset(resolved, meta, None, planning.NO_FILTER)
    # plan once, with the filter, instead of building every fragment first
    scan_filter = planning.make_filter(filter, _dataset_schema(meta))
    return _refilter(KartothekDataset(resolved, meta, None, scan_filter))


def history(
    store: StoreLike, dataset_uuid: str, *, storage_options: dict[str, Any] | None = None
) -> list[commit.Snapshot]:
    """Every retained snapshot of a dataset, oldest first."""
    return commit.history(resolve_store(store, storage_options), dataset_uuid)
