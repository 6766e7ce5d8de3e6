"""A kartothek dataset as a DuckDB relation over DuckDB's own parquet reader.

We plan the files; DuckDB's ``read_parquet`` reads exactly those, with
``hive_partitioning=false``: the partition columns come from our metadata,
typed by Arrow, joined to each row by file name (``read_parquet(...,
filename=...)`` against a small table of one row per file).  Measured in
``docs/engines.md``: the join costs less than a ``UNION ALL`` of one scan per
partition, and DuckDB still pushes projections and filters into the reader.

Stores DuckDB cannot open without configuration (object stores need the
``httpfs`` extension and credentials, ``memory://``) are read through
DuckDB's Arrow scan of the dataset itself (``connection.from_arrow(ds)``),
which calls our ``scanner`` and so prunes by our indices too.
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa

from ._optional import import_optional
from .arrow import KartothekDataset, native_predicate, planned_paths
from .spec import predicates
from .storage import LocalStore

_FILE_COLUMN = "__ktk_file"


def _duckdb() -> Any:
    return import_optional("duckdb", extra="duckdb")


def to_duckdb(dataset_: KartothekDataset, connection: Any = None) -> Any:
    """``dataset_`` as a ``duckdb.DuckDBPyRelation``; ``KartothekDataset.to_duckdb()`` calls this.

    The relation reads the dataset's planned files (its own filter applied to
    the rows); narrow it first with ``ds.filter(...)`` or ``ka.dataset(...,
    filter=...)`` so our indices prune the files.
    """
    duckdb = _duckdb()
    con = connection if connection is not None else duckdb.default_connection()
    if fallback_reason(dataset_) is not None:
        return con.from_arrow(dataset_)
    schema = dataset_.schema
    if not dataset_.tasks:
        return con.from_arrow(schema.empty_table())
    paths = planned_paths(dataset_)
    # files of an evolved schema (schema_mode="merge") may lack columns or hold
    # narrower types: DuckDB takes the first file's schema unless told to unify by
    # name, which reads every footer up front, so only then
    evolved = dataset_.metadata.schema_evolved
    files = con.sql(
        f"SELECT * FROM read_parquet($files, filename='{_FILE_COLUMN}', hive_partitioning=false"
        f"{', union_by_name=true' if evolved else ''})",
        params={"files": paths},
    )
    partition_keys = [k for k in dataset_.metadata.partition_keys if k in schema.names]
    if partition_keys:
        mapping = pa.table(
            {_FILE_COLUMN: pa.array(paths, pa.string())}
            | {
                k: pa.array(
                    [t.partition_values.get(k) for t in dataset_.tasks], schema.field(k).type
                )
                for k in partition_keys
            }
        )
        files = files.join(con.from_arrow(mapping), _FILE_COLUMN)
    columns = (
        _columns(duckdb, files, schema)
        if evolved
        else [duckdb.ColumnExpression(n) for n in schema.names]
    )
    relation = files.project(*columns)
    pred, _exact = native_predicate(dataset_)
    if pred is not None:
        relation = relation.filter(duckdb_expression(pred, schema))
    return relation


def _columns(duckdb: Any, files: Any, schema: pa.Schema) -> list[Any]:
    """The dataset's columns over files of an evolved schema, typed as the dataset's.

    A column none of the planned files holds is a typed null; one the files
    hold narrower (older files) is cast to the dataset's type.
    """
    have = dict(zip(files.columns, files.types))
    out = []
    for f in schema:
        want = _duckdb_type(duckdb, f.type)
        if f.name not in have:
            out.append(duckdb.ConstantExpression(None).cast(want).alias(f.name))
        elif have[f.name] != want:
            out.append(duckdb.ColumnExpression(f.name).cast(want).alias(f.name))
        else:
            out.append(duckdb.ColumnExpression(f.name))
    return out


def fallback_reason(dataset_: KartothekDataset) -> str | None:
    """Why DuckDB's ``read_parquet`` cannot serve ``dataset_`` (``None``: it can)."""
    if not isinstance(dataset_.store, LocalStore):
        return "only local files are read without DuckDB extensions and credentials"
    for f in dataset_.schema:
        if pa.types.is_dictionary(f.type) or pa.types.is_null(f.type):
            return f"column {f.name!r} is {f.type}"
        if f.name == _FILE_COLUMN:
            return f"column {f.name!r} is the name the file column needs"
    _pred, exact = native_predicate(dataset_)
    if not exact:
        return "the dataset's filter has terms our predicate form cannot express"
    return None


# -- predicates -----------------------------------------------------------------


def duckdb_expression(pred: predicates.Predicate, schema: pa.Schema) -> Any:
    """The DuckDB expression selecting exactly the rows ``pred`` selects (module semantics).

    Mirrors ``predicates.to_expression``: null and NaN are one value, ``!=``
    keeps nulls, ``not in`` keeps nulls unless the list holds one.  DuckDB
    orders NaN above every number and finds it equal to itself, so terms on
    floats exclude NaN explicitly.  Values are bound as typed constants.
    """
    duckdb = _duckdb()
    true = duckdb.ConstantExpression(True)
    disjunction = None
    for clause in pred.clauses:
        conjunction = true
        for term in clause:
            conjunction = conjunction & _term(duckdb, term, schema.field(term.column).type)
        disjunction = conjunction if disjunction is None else disjunction | conjunction
    return duckdb.ConstantExpression(False) if disjunction is None else disjunction


def _term(duckdb: Any, term: predicates.Term, arrow_type: pa.DataType) -> Any:
    column = duckdb.ColumnExpression(term.column)
    floating = pa.types.is_floating(arrow_type)
    # where NaN rows must be kept: DuckDB prunes row groups by parquet min/max and
    # null counts, which ignore NaN, so "isnan(x)" alone finds no NaN in a row group
    # whose statistics say 1..1; a non-deterministic term keeps it from pruning by them
    nan_kept = (
        duckdb.FunctionExpression("isnan", column)
        | (duckdb.FunctionExpression("random") < duckdb.ConstantExpression(0.0))
        if floating
        else None
    )
    # where NaN rows are dropped, pruning them is right
    nan_dropped = duckdb.FunctionExpression("isnan", column) if floating else None
    is_null = column.isnull() if nan_kept is None else column.isnull() | nan_kept
    # DuckDB's NOT of NULL is NULL, which a filter drops: negate by hand
    not_null = column.isnotnull() if nan_dropped is None else column.isnotnull() & ~nan_dropped
    if term.op in ("in", "not in"):
        present = [_constant(duckdb, v, arrow_type) for v in term.value if v is not None]
        has_null = len(present) != len(term.value)
        if term.op == "in":
            expr = column.isin(*present) if present else duckdb.ConstantExpression(False)
            return expr | is_null if has_null else expr
        if not present:
            return not_null if has_null else duckdb.ConstantExpression(True)
        expr = column.isnotin(*present)
        if has_null:
            return expr & not_null
        return expr | is_null
    if term.value is None:
        return is_null if term.op == "==" else not_null
    value = _constant(duckdb, term.value, arrow_type)
    if term.op in ("!=", "is distinct from"):
        return (column != value) | is_null
    compare = {
        "==": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }[term.op](column, value)
    return compare & ~nan_dropped if nan_dropped is not None and term.op != "==" else compare


def _constant(duckdb: Any, value: Any, arrow_type: pa.DataType) -> Any:
    """``value`` as a DuckDB constant of the column's type (cast by DuckDB from Arrow's form)."""
    scalar = pa.scalar(value, arrow_type)
    if pa.types.is_timestamp(arrow_type) or pa.types.is_time(arrow_type):
        # Python datetimes keep microseconds only: the ISO text keeps every digit
        text = pa.array([scalar]).cast(pa.string())[0].as_py()
        return duckdb.ConstantExpression(text).cast(_duckdb_type(duckdb, arrow_type))
    return duckdb.ConstantExpression(scalar.as_py()).cast(_duckdb_type(duckdb, arrow_type))


@functools.lru_cache(maxsize=256)
def _duckdb_type(duckdb: Any, arrow_type: pa.DataType) -> Any:
    """DuckDB's type for ``arrow_type``, as DuckDB itself maps Arrow columns."""
    con = duckdb.connect()
    try:
        return con.from_arrow(pa.table({"x": pa.array([], arrow_type)})).types[0]
    finally:
        con.close()
