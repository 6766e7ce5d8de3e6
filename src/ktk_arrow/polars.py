"""A kartothek dataset as a Polars ``LazyFrame`` over Polars' own parquet reader.

We plan (partition values, secondary indices, file statistics) and hand
``pl.scan_parquet`` exactly the planned files, with ``hive_partitioning=False``:
the partition columns are typed literals we add per partition, decoded from
our metadata, because Polars would neither know their types nor our quoting
(``"US/CA"`` is stored as ``US%2FCA``).  Polars then does projection, row
group pruning and parallel decoding natively.

``to_polars()`` goes one step further: its ``LazyFrame`` is resolved only
when Polars optimises the query, so a ``.filter(...)`` written after it is
planned by us too (Polars hands the dataset provider its predicate as an Arrow
expression, the mechanism behind its own ``scan_delta``/``scan_iceberg``).
Where the native reader cannot express something, the scan goes through
``pl.scan_pyarrow_dataset`` instead (see ``docs/engines.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from . import planning
from ._optional import import_optional
from .arrow import KartothekDataset, dataset, native_predicate, planned_paths
from .errors import KtkError
from .spec import predicates
from .storage import (
    _NEUTRAL_OPTIONS,
    AzureStore,
    GCSStore,
    LocalStore,
    S3Store,
    Store,
    StoreLike,
    _parse_connection_string,
)

if TYPE_CHECKING:
    import polars as pl

#: up to this many partitions, one scan per partition with literal columns;
#: beyond it one scan whose file-path column is joined with the partition values
#: (concatenating thousands of scans costs more in planning than it saves)
MAX_CONCAT_PARTITIONS = 64

_FILE_COLUMN = "__ktk_file"


def _pl() -> Any:
    return import_optional("polars", extra="polars")


def scan_kartothek(
    store: StoreLike,
    dataset_uuid: str,
    *,
    version: int | None = None,
    filter: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> pl.LazyFrame:
    """A ``polars.LazyFrame`` of the dataset's planned files, read by Polars natively.

    ``filter`` (kartothek DNF or a ``pyarrow.compute.Expression``) is planned
    by us (partition values, indices, statistics) and applied to the rows by
    Polars.  Filters written later on the ``LazyFrame`` reach our planner too.
    """
    return to_polars(
        dataset(
            store, dataset_uuid, version=version, filter=filter, storage_options=storage_options
        )
    )


def to_polars(dataset_: KartothekDataset) -> pl.LazyFrame:
    """``dataset_`` as a ``LazyFrame``; ``KartothekDataset.to_polars()`` calls this.

    A Polars IO source: when the query runs, Polars hands it the projection and
    the pushed-down predicate; we plan with the predicate (translated to an
    Arrow expression by Polars' own converter), then collect Polars' native
    scan of the surviving files with the predicate and projection applied.
    """
    pl = _pl()
    if fallback_reason(dataset_) is not None:
        return pl.scan_pyarrow_dataset(dataset_)
    from polars.io.plugins import register_io_source

    def source(
        with_columns: list[str] | None,
        predicate: Any,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        narrowed = dataset_
        expression = _pushed_expression(predicate, dataset_.schema)
        if expression is not None:
            # not plannable: Polars filters the rows of every planned file
            with contextlib.suppress(KtkError):
                narrowed = dataset_._narrowed(expression)
        frame = native_scan(dataset_, narrowed.tasks)
        if predicate is not None:
            frame = frame.filter(predicate)
        if with_columns is not None:
            frame = frame.select(with_columns)
        if n_rows is not None:
            frame = frame.head(n_rows)
        # yielded whole anyway: the in-memory engine runs the concatenated scans
        # ~15 % faster than the streaming one (docs/engines.md)
        yield frame.collect(engine="in-memory")

    return register_io_source(
        source,
        schema=pl.DataFrame(dataset_.schema.empty_table()).schema,
        is_pure=True,
        explain_name="ktk_arrow",
        explain_detail=f"{dataset_.dataset_uuid} version {dataset_.version}",
    )


def _pushed_expression(predicate: Any, schema: pa.Schema) -> pc.Expression | None:
    """Polars' pushed-down predicate as an Arrow expression to plan with (``None``: don't).

    Polars renders it with its own converter (the one behind
    ``scan_pyarrow_dataset``); parts it cannot render are left out, so the
    expression matches at least the rows Polars keeps.  Polars orders NaN
    above every number where Arrow's comparisons are false, so a predicate on
    a float column could prune a file whose NaN rows Polars keeps: such
    predicates are not planned (Polars still filters the rows).
    """
    if predicate is None:
        return None
    try:
        names = predicate.meta.root_names()
        if any(n not in schema.names or pa.types.is_floating(schema.field(n).type) for n in names):
            return None
        polars_schema = _pl().DataFrame(schema.empty_table()).schema
        source = predicate._pyexpr.to_pyarrow_predicate(polars_schema)
        if source is None:
            return None
        expression = eval(source, _eval_namespace())  # Polars' own rendering, as scan_delta
    except Exception:
        return None  # an older or newer Polars: plan without the predicate
    return expression if isinstance(expression, pc.Expression) else None


def _eval_namespace() -> dict[str, Any]:
    from polars._utils.convert import to_py_date, to_py_datetime, to_py_time, to_py_timedelta
    from polars.datatypes import Date, Datetime, Duration

    return {
        "pa": pa,
        "Date": Date,
        "Datetime": Datetime,
        "Duration": Duration,
        "to_py_date": to_py_date,
        "to_py_datetime": to_py_datetime,
        "to_py_time": to_py_time,
        "to_py_timedelta": to_py_timedelta,
    }


def fallback_reason(dataset_: KartothekDataset) -> str | None:
    """Why Polars' native reader cannot serve ``dataset_`` (``None``: it can)."""
    if native_source(dataset_.store) is None:
        return "the store has no location Polars' reader can open"
    for f in dataset_.schema:
        if pa.types.is_dictionary(f.type) or pa.types.is_null(f.type):
            return f"column {f.name!r} is {f.type}"
    _pred, exact = native_predicate(dataset_)
    if not exact:
        return "the dataset's filter has terms our predicate form cannot express"
    return None


def native_scan(dataset_: KartothekDataset, tasks: list[planning.FileTask] | None = None) -> Any:
    """``pl.scan_parquet`` of ``tasks`` (default: the dataset's), partition columns typed.

    The dataset's own filter, if any, is applied to the rows.
    """
    pl = _pl()
    tasks = dataset_.tasks if tasks is None else tasks
    schema = dataset_.schema
    empty = pl.DataFrame(schema.empty_table())
    partition_keys = [k for k in dataset_.metadata.partition_keys if k in schema.names]
    file_columns = [n for n in schema.names if n not in partition_keys]
    if not tasks:
        return empty.lazy()
    location = native_source(dataset_.store)
    assert location is not None
    prefix, options = location
    file_schema = {n: empty.schema[n] for n in file_columns}
    paths = planned_paths(dataset_, tasks, prefix)

    # files written by older writers may hold narrower integers or nanosecond
    # timestamps than the dataset schema: read them as Arrow would, cast to it
    cast = pl.ScanCastOptions(
        integer_cast="upcast",
        float_cast="upcast",
        datetime_cast=["nanosecond-downcast", "convert-timezone"],
    )

    def scan(files: list[str], **kwargs: Any) -> Any:
        return pl.scan_parquet(
            files,
            hive_partitioning=False,
            glob=False,
            schema=file_schema,
            missing_columns="insert",
            # plateau's files also hold the pandas index (__index_level_0__)
            extra_columns="ignore",
            cast_options=cast,
            storage_options=options,
            **kwargs,
        )

    groups: dict[tuple[Any, ...], list[str]] = {}
    for task, path in zip(tasks, paths):
        values = tuple(task.partition_values.get(k) for k in partition_keys)
        groups.setdefault(values, []).append(path)
    if not partition_keys:
        frame = scan(paths)
    elif len(groups) <= MAX_CONCAT_PARTITIONS:
        frames = []
        for values, files in groups.items():
            literals = _literals(pl, partition_keys, values, schema)
            frames.append(scan(files).with_columns(literals))
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
    else:
        mapping = pa.table(
            {_FILE_COLUMN: pa.array(paths, pa.string())}
            | {
                k: pa.array([t.partition_values.get(k) for t in tasks], schema.field(k).type)
                for k in partition_keys
            }
        )
        frame = (
            scan(paths, include_file_paths=_FILE_COLUMN)
            .join(pl.from_arrow(mapping).lazy(), on=_FILE_COLUMN, how="left")
            .drop(_FILE_COLUMN)
        )
    frame = frame.select(schema.names)
    pred, _exact = native_predicate(dataset_)
    if pred is not None:
        frame = frame.filter(polars_expression(pred, schema))
    return frame


def _literals(pl: Any, keys: list[str], values: tuple[Any, ...], schema: pa.Schema) -> list[Any]:
    return [
        _scalar(pl, value, schema.field(key).type).alias(key) for key, value in zip(keys, values)
    ]


# -- predicates -----------------------------------------------------------------


def polars_expression(pred: predicates.Predicate, schema: pa.Schema) -> Any:
    """The Polars expression selecting exactly the rows ``pred`` selects (module semantics).

    Mirrors ``predicates.to_expression``: null and NaN are one value, ``!=``
    keeps nulls, ``not in`` keeps nulls unless the list holds one.  Polars
    orders NaN above every number, so ordering terms on floats exclude NaN.
    """
    pl = _pl()
    disjunction = None
    for clause in pred.clauses:
        conjunction = pl.lit(True)
        for term in clause:
            conjunction = conjunction & _term(pl, term, schema.field(term.column).type)
        disjunction = conjunction if disjunction is None else disjunction | conjunction
    return pl.lit(False) if disjunction is None else disjunction


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _term(pl: Any, term: predicates.Term, arrow_type: pa.DataType) -> Any:
    column = pl.col(term.column)
    floating = pa.types.is_floating(arrow_type)
    is_null = (column.is_null() | column.is_nan()) if floating else column.is_null()
    if term.op in ("in", "not in"):
        present = [v for v in term.value if v is not None]
        has_null = len(present) != len(term.value)
        member = None
        if present:
            values = pl.from_arrow(pa.array(present, arrow_type)).implode()
            member = column.is_in(values).fill_null(False)
        if term.op == "in":
            expr = member if member is not None else pl.lit(False)
            return expr | is_null if has_null else expr
        expr = ~member if member is not None else pl.lit(True)
        return expr & ~is_null if has_null else expr
    if term.value is None:
        return is_null if term.op == "==" else ~is_null
    value = _scalar(pl, term.value, arrow_type)
    if term.op in ("!=", "is distinct from"):
        return (column != value).fill_null(True) | is_null
    expr = _COMPARE[term.op](column, value)
    return expr & ~column.is_nan() if floating and term.op != "==" else expr


def _scalar(pl: Any, value: Any, arrow_type: pa.DataType) -> Any:
    """A Polars literal of ``value`` typed as ``arrow_type``, converted by Arrow.

    Temporal values go through their integer form, so nanoseconds survive
    (a Python ``datetime`` has microseconds only).
    """
    series = pl.from_arrow(pa.array([value], arrow_type))
    if series.dtype.is_temporal():
        return pl.lit(series.to_physical()[0]).cast(series.dtype)
    return pl.lit(series[0], dtype=series.dtype)


# -- where Polars reads the files ------------------------------------------------


def native_source(store: Store) -> tuple[str, dict[str, Any] | None] | None:
    """``(URL prefix of store.path(key), Polars storage_options)``; ``None``: not mapped.

    Local disk always; S3 and Azure when the fsspec options have a Polars
    (object_store) equivalent; GCS with default credentials.  Anything else
    (memory://, profiles, credential objects, custom endpoints on GCS) is read
    through ``pl.scan_pyarrow_dataset``.
    """
    if isinstance(store, LocalStore):
        return "", None
    opts = {k: v for k, v in store.fs.storage_options.items() if k not in _NEUTRAL_OPTIONS}
    if isinstance(store, S3Store):
        mapped = _s3_options(opts)
        return None if mapped is None else ("s3://", mapped)
    if isinstance(store, AzureStore):
        mapped = _azure_options(opts)
        return None if mapped is None else ("az://", mapped)
    if isinstance(store, GCSStore):
        if set(opts) - {"token"} or opts.get("token") not in (None, "google_default"):
            return None
        return "gs://", None
    return None


def _s3_options(opts: dict[str, Any]) -> dict[str, str] | None:
    opts = dict(opts)
    client = dict(opts.pop("client_kwargs", None) or {})
    out: dict[str, str] = {}
    endpoint = opts.pop("endpoint_url", None) or client.pop("endpoint_url", None)
    region = client.pop("region_name", None)
    for ours, theirs in (
        ("key", "aws_access_key_id"),
        ("secret", "aws_secret_access_key"),
        ("token", "aws_session_token"),
    ):
        value = opts.pop(ours, None)
        if value:
            out[theirs] = str(value)
    if opts.pop("anon", False):
        out["aws_skip_signature"] = "true"
    if opts or client:
        return None  # profiles, sessions, SSE, TLS settings: only s3fs knows them
    if endpoint:
        out["aws_endpoint_url"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["aws_allow_http"] = "true"
        region = region or "us-east-1"
    if region:
        out["aws_region"] = str(region)
    return out


def _azure_options(opts: dict[str, Any]) -> dict[str, str] | None:
    opts = dict(opts)
    out: dict[str, str] = {}
    conn = opts.pop("connection_string", None)
    if conn:
        parts = _parse_connection_string(str(conn))
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            return None  # the default Azurite endpoint: adlfs knows it, object_store differently
        opts.setdefault("account_name", parts.get("accountname"))
        opts.setdefault("account_key", parts.get("accountkey"))
        opts.setdefault("sas_token", parts.get("sharedaccesssignature"))
        endpoint = parts.get("blobendpoint")
        if endpoint:
            out["azure_storage_endpoint"] = endpoint.rstrip("/")
            if endpoint.startswith("http://"):
                out["azure_allow_http"] = "true"
    for ours, theirs in (
        ("account_name", "azure_storage_account_name"),
        ("account_key", "azure_storage_account_key"),
        ("sas_token", "azure_storage_sas_key"),
    ):
        value = opts.pop(ours, None)
        if value:
            out[theirs] = str(value)
    if {k for k, v in opts.items() if v is not None} or "azure_storage_account_name" not in out:
        return None  # credential objects, service principals, custom hosts: adlfs only
    return out
