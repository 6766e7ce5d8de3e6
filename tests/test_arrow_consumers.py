"""Every Arrow consumer of a KartothekDataset gets the right rows, and the pruning.

One dataset, partitioned by a string (``country``) and an int (``year``),
with a secondary index on a high-cardinality column (``customer``, unique per
row, scattered so that no file's min/max statistics can exclude a value),
written in three commits: three files in each of the six partitions.

The store wraps the local filesystem with an fsspec subclass that records
every data file opened, so each test asserts not only the rows but how many
files the consumer's scan actually opened: a consumer that reaches our
re-planning entry points (``scanner``, ``to_batches``, ...) opens only the
files the index and the partition values leave; one that builds its scan from
the C++ dataset (``Scanner.from_dataset``, an Acero scan node) gets Arrow's own
partition pruning but not the index, unless it is handed ``ds.filter(expr)``.

What each consumer calls (DuckDB 2.0, Polars 2.1, pyarrow 26):

- DuckDB (replacement scan, ``from_arrow``, ``register``): its
  ``PyArrowDatasetSource`` calls ``type(ds).scanner(ds, columns=[...],
  filter=expr)`` once per scan, with the filters it can translate exactly
  (comparisons, AND/OR/NOT, IS NULL; ``IN`` as ``if_else(is_valid(c),
  is_in(c, ...), null)``); ``LIKE``, casts etc. stay in DuckDB.
- Polars ``scan_pyarrow_dataset``: ``ds.to_batches(columns=, filter=)``; no
  filter when a row limit is pushed (``head``), Polars then filters itself.
- ``Scanner.from_dataset`` / Acero ``ScanNodeOptions`` / ``ds.join`` /
  ``ds.sort_by``: the C++ dataset of the object they are given.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.acero as acero
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pytest
from fsspec.implementations.local import LocalFileSystem

import ktk_arrow as ka

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

UUID = "sales"
COLUMNS = ["country", "year", "customer", "amount"]
COUNTRIES = ["DE", "US/CA", "FR"]
YEARS = [2023, 2024]
WRITES = 3
ROWS_PER_WRITE = 600
ALL_FILES = WRITES * len(COUNTRIES) * len(YEARS)


class CountingFileSystem(LocalFileSystem):
    """Local disk that counts how often each data file is opened."""

    opened: collections.Counter[str] = collections.Counter()

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "/table/" in path and path.endswith(".parquet"):
            type(self).opened[path] += 1
        return super()._open(path, mode=mode, **kwargs)


def _reference() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    n = WRITES * ROWS_PER_WRITE
    i = np.arange(n)
    return pd.DataFrame(
        {
            "write": i // ROWS_PER_WRITE,  # reference only: which commit wrote the row
            "country": [COUNTRIES[k % 3] for k in i],
            "year": np.array(YEARS, dtype="int64")[(i // 3) % 2],
            # unique and scattered: every file spans nearly the whole range
            "customer": rng.permutation(n).astype("int64"),
            "amount": rng.random(n),
        }
    )


REFERENCE = _reference()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("consumers") / "store")
    for write, chunk in REFERENCE.groupby("write"):
        ka.write_dataset(
            chunk[COLUMNS],
            path,
            UUID,
            partition_on=["country", "year"],
            secondary_indices=["customer"],
            mode="create" if write == 0 else "append",
        )
    return path


@pytest.fixture
def sales(root: str) -> ka.KartothekDataset:
    """A fresh dataset (no fragment has cached a footer yet) on the counting store."""
    dataset = ka.dataset(ka.Store(CountingFileSystem(), root), UUID)
    assert len(dataset.tasks) == ALL_FILES
    CountingFileSystem.opened.clear()
    return dataset


def files_opened() -> int:
    return len(CountingFileSystem.opened)


def expected(mask: pd.Series) -> pd.DataFrame:
    return REFERENCE.loc[mask, COLUMNS].sort_values("customer").reset_index(drop=True)


def files_holding(mask: pd.Series) -> int:
    """How many data files hold a row of ``mask``: one per commit and partition."""
    return len(REFERENCE.loc[mask, ["write", "country", "year"]].drop_duplicates())


def as_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, (pa.Table, pl.DataFrame)):
        data = data.to_pandas()
    return data[COLUMNS].sort_values("customer").reset_index(drop=True)


def assert_rows(got: Any, mask: pd.Series) -> None:
    pd.testing.assert_frame_equal(as_frame(got), expected(mask), check_dtype=False)


def duck_rows(relation: Any) -> pd.DataFrame:
    return pd.DataFrame(relation.fetchall(), columns=relation.columns)


CUSTOMER = int(REFERENCE.customer.iloc[1234])
OTHERS = [int(c) for c in REFERENCE.customer.iloc[[7, 700, 1500]]]
BY_CUSTOMER = REFERENCE.customer == CUSTOMER
BY_CUSTOMERS = REFERENCE.customer.isin([CUSTOMER, *OTHERS])
BY_COUNTRY = REFERENCE.country == "US/CA"


def test_the_data_defeats_statistics_so_only_the_index_can_prune(root: str) -> None:
    assert files_holding(BY_CUSTOMER) == 1
    assert files_holding(BY_CUSTOMERS) == 4
    assert files_holding(BY_COUNTRY) == WRITES * len(YEARS)
    # every file's customer range covers CUSTOMER: min/max statistics cannot skip one
    for _, rows in REFERENCE.groupby(["write", "country", "year"]):
        assert rows.customer.min() < CUSTOMER < rows.customer.max()


# -- DuckDB ------------------------------------------------------------------

#: (WHERE clause, reference mask, files DuckDB's scan opens: an int, or "pruned")
DUCK_QUERIES = [
    (f"customer = {CUSTOMER}", BY_CUSTOMER, "pruned"),
    (
        " OR ".join(f"customer = {c}" for c in [CUSTOMER, *OTHERS]),
        BY_CUSTOMERS,
        "pruned",
    ),
    (
        f"customer BETWEEN {CUSTOMER} AND {CUSTOMER + 2}",
        REFERENCE.customer.between(CUSTOMER, CUSTOMER + 2),
        "pruned",
    ),
    ("country = 'US/CA'", BY_COUNTRY, "pruned"),
    ("year = 2023 AND country <> 'DE'", (REFERENCE.year == 2023) & (REFERENCE.country != "DE"), 6),
    (
        f"country = 'US/CA' AND customer = {CUSTOMER}",
        BY_COUNTRY & BY_CUSTOMER,
        "pruned",
    ),
    # not translated to Arrow: DuckDB filters the rows itself, every file is read
    ("country LIKE 'U%'", REFERENCE.country.str.startswith("U"), ALL_FILES),
    (f"customer::VARCHAR = '{CUSTOMER}'", BY_CUSTOMER, ALL_FILES),
    # the per-file null counts in the metadata: no file holds a null
    ("customer IS NULL", REFERENCE.customer.isna(), "pruned"),
]


@pytest.mark.parametrize(("where", "mask", "files"), DUCK_QUERIES, ids=[q[0] for q in DUCK_QUERIES])
def test_duckdb_replacement_scan_gets_the_rows_and_prunes(
    sales: ka.KartothekDataset, where: str, mask: pd.Series, files: int | str
) -> None:
    got = duck_rows(duckdb.sql(f"SELECT {', '.join(COLUMNS)} FROM sales WHERE {where}"))
    assert_rows(got, mask)
    assert files_opened() == (files_holding(mask) if files == "pruned" else files)


def test_duckdb_in_list_gets_the_rows(sales: ka.KartothekDataset) -> None:
    in_list = ", ".join(str(c) for c in [CUSTOMER, *OTHERS])
    assert_rows(
        duck_rows(duckdb.sql(f"SELECT * FROM sales WHERE customer IN ({in_list})")), BY_CUSTOMERS
    )
    not_in = duck_rows(duckdb.sql(f"SELECT * FROM sales WHERE customer NOT IN ({in_list})"))
    assert_rows(not_in, ~BY_CUSTOMERS)


def test_duckdb_in_list_prunes_by_the_index(sales: ka.KartothekDataset) -> None:
    in_list = ", ".join(str(c) for c in [CUSTOMER, *OTHERS])
    duckdb.sql(f"SELECT * FROM sales WHERE customer IN ({in_list})").fetchall()
    assert files_opened() == files_holding(BY_CUSTOMERS)


def test_duckdb_passes_projection_and_filter_to_our_scanner(
    sales: ka.KartothekDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    scanner = ka.KartothekDataset.scanner

    def spy(self: ka.KartothekDataset, columns: Any = None, filter: Any = None, **kw: Any) -> Any:
        calls.append((columns, filter))
        return scanner(self, columns=columns, filter=filter, **kw)

    monkeypatch.setattr(ka.KartothekDataset, "scanner", spy)
    got = duckdb.sql(f"SELECT amount FROM sales WHERE customer = {CUSTOMER}").fetchall()
    assert got == [(REFERENCE.amount[BY_CUSTOMER].item(),)]
    [(columns, filter_)] = calls
    assert columns == ["amount"]
    assert filter_.equals(pc.field("customer") == pa.scalar(CUSTOMER, pa.int64()))
    assert files_opened() == 1


def test_duckdb_count_with_a_partition_filter(sales: ka.KartothekDataset) -> None:
    [(count,)] = duckdb.sql("SELECT count(*) FROM sales WHERE year = 2024").fetchall()
    assert count == (REFERENCE.year == 2024).sum()
    assert files_opened() == WRITES * len(COUNTRIES)


def test_duckdb_from_arrow(sales: ka.KartothekDataset) -> None:
    relation = duckdb.from_arrow(sales).filter(f"customer = {CUSTOMER}")
    assert_rows(duck_rows(relation), BY_CUSTOMER)
    assert files_opened() == 1


def test_duckdb_registered_view(sales: ka.KartothekDataset) -> None:
    con = duckdb.connect()
    try:
        con.register("t", sales)
        got = duck_rows(con.sql(f"SELECT * FROM t WHERE customer = {CUSTOMER}"))
        assert_rows(got, BY_CUSTOMER)
        assert files_opened() == 1
        # the view scans afresh each time, with each query's own filter
        CountingFileSystem.opened.clear()
        assert_rows(duck_rows(con.sql("SELECT * FROM t WHERE country = 'US/CA'")), BY_COUNTRY)
        assert files_opened() == files_holding(BY_COUNTRY)
    finally:
        con.close()


def test_duckdb_on_a_filtered_dataset_keeps_its_filter(sales: ka.KartothekDataset) -> None:
    narrowed = sales.filter(pc.field("country") == "US/CA")  # noqa: F841 (DuckDB reads it)
    pair = [CUSTOMER, OTHERS[1]]
    where = " OR ".join(f"customer = {c}" for c in pair)
    got = duck_rows(duckdb.sql(f"SELECT * FROM narrowed WHERE {where}"))
    mask = BY_COUNTRY & REFERENCE.customer.isin(pair)
    assert_rows(got, mask)
    assert files_opened() == files_holding(mask)
    CountingFileSystem.opened.clear()
    assert_rows(duck_rows(duckdb.sql("SELECT * FROM narrowed")), BY_COUNTRY)
    assert files_opened() == files_holding(BY_COUNTRY)


# -- Polars -------------------------------------------------------------------

POLARS_FILTERS = [
    (pl.col("customer") == CUSTOMER, BY_CUSTOMER),
    (pl.col("customer").is_in([CUSTOMER, *OTHERS]), BY_CUSTOMERS),
    ((pl.col("country") == "US/CA") & (pl.col("customer") == CUSTOMER), BY_COUNTRY & BY_CUSTOMER),
    (pl.col("country") == "US/CA", BY_COUNTRY),
]


@pytest.mark.parametrize(
    ("predicate", "mask"), POLARS_FILTERS, ids=["eq", "is_in", "and", "partition"]
)
def test_polars_scan_pyarrow_dataset_gets_the_rows_and_prunes(
    sales: ka.KartothekDataset, predicate: Any, mask: pd.Series
) -> None:
    got = pl.scan_pyarrow_dataset(sales).filter(predicate).collect()
    assert_rows(got, mask)
    assert files_opened() == files_holding(mask)


def test_polars_projection(sales: ka.KartothekDataset) -> None:
    got = (
        pl.scan_pyarrow_dataset(sales)
        .filter(pl.col("customer") == CUSTOMER)
        .select("amount")
        .collect()
    )
    assert got["amount"].to_list() == REFERENCE.amount[BY_CUSTOMER].tolist()
    assert files_opened() == 1


def test_polars_head_after_filter_gets_the_rows(sales: ka.KartothekDataset) -> None:
    # with a row limit Polars pushes no filter down and filters itself
    got = pl.scan_pyarrow_dataset(sales).filter(pl.col("country") == "US/CA").head(5).collect()
    assert len(got) == 5 and set(got["country"]) == {"US/CA"}


def test_polars_without_pyarrow_filter_gets_the_rows(sales: ka.KartothekDataset) -> None:
    lazy = pl.scan_pyarrow_dataset(sales, allow_pyarrow_filter=False)
    assert_rows(lazy.filter(pl.col("customer") == CUSTOMER).collect(), BY_CUSTOMER)


# -- pyarrow: our entry points -------------------------------------------------

BY_CUSTOMER_EXPR = pc.field("customer") == CUSTOMER
PYARROW_CALLS: dict[str, Callable[[ka.KartothekDataset, Any], Any]] = {
    "to_table": lambda d, f: d.to_table(filter=f),
    "scanner": lambda d, f: d.scanner(filter=f).to_table(),
    "to_batches": lambda d, f: pa.Table.from_batches(d.to_batches(filter=f), d.schema),
    "to_reader": lambda d, f: d.to_reader(filter=f).read_all(),
    "head": lambda d, f: d.head(10, filter=f),
    "take": lambda d, f: d.take([0], filter=f),
    "filter": lambda d, f: d.filter(f).to_table(),
    "ka.dataset(filter=)": lambda d, f: ka.dataset(d.store, UUID, filter=f).to_table(),
}


@pytest.mark.parametrize("call", sorted(PYARROW_CALLS))
@pytest.mark.parametrize(
    "filter_", [BY_CUSTOMER_EXPR, [[("customer", "==", CUSTOMER)]]], ids=["expression", "dnf"]
)
def test_pyarrow_methods_get_the_rows_and_prune(
    sales: ka.KartothekDataset, call: str, filter_: Any
) -> None:
    assert_rows(PYARROW_CALLS[call](sales, filter_), BY_CUSTOMER)
    assert files_opened() == 1


def test_count_rows(sales: ka.KartothekDataset) -> None:
    assert sales.count_rows() == len(REFERENCE)
    assert files_opened() == 0  # row counts come from the metadata
    assert sales.count_rows(filter=BY_CUSTOMER_EXPR) == 1
    assert files_opened() == 1
    assert sales.count_rows(filter=pc.field("country") == "US/CA") == BY_COUNTRY.sum()


def test_get_fragments_opens_nothing(sales: ka.KartothekDataset) -> None:
    fragments = list(sales.get_fragments(filter=BY_CUSTOMER_EXPR))
    by_country = list(sales.get_fragments(filter=pc.field("country") == "US/CA"))
    assert files_opened() == 0
    assert len(fragments) == 1
    assert len(by_country) == files_holding(BY_COUNTRY)
    assert {pds.get_partition_keys(f.partition_expression)["country"] for f in by_country} == {
        "US/CA"
    }
    assert_rows(fragments[0].to_table(filter=BY_CUSTOMER_EXPR, schema=sales.schema), BY_CUSTOMER)


def test_sort_by_and_join_on_a_filtered_dataset(sales: ka.KartothekDataset) -> None:
    narrowed = sales.filter(pc.field("customer").isin([CUSTOMER, *OTHERS]))
    assert_rows(narrowed.sort_by("customer").to_table(), BY_CUSTOMERS)
    assert files_opened() == files_holding(BY_CUSTOMERS)
    CountingFileSystem.opened.clear()
    names = pa.table({"customer": [CUSTOMER], "name": ["alice"]})
    joined = narrowed.join(names, "customer", join_type="inner").to_table()
    assert joined.column("name").to_pylist() == ["alice"]
    assert joined.column("amount").to_pylist() == REFERENCE.amount[BY_CUSTOMER].tolist()
    assert files_opened() == files_holding(BY_CUSTOMERS)


# -- pyarrow: the C++ dataset (no re-planning) -------------------------------------


def test_scanner_from_dataset_gets_the_rows_but_not_the_index(sales: ka.KartothekDataset) -> None:
    # a static method on the C++ dataset: Arrow prunes by partition values only
    got = pds.Scanner.from_dataset(sales, filter=BY_CUSTOMER_EXPR).to_table()
    assert_rows(got, BY_CUSTOMER)
    assert files_opened() == ALL_FILES


def test_scanner_from_dataset_prunes_by_partition_values(sales: ka.KartothekDataset) -> None:
    got = pds.Scanner.from_dataset(sales, filter=pc.field("country") == "US/CA").to_table()
    assert_rows(got, BY_COUNTRY)
    assert files_opened() == files_holding(BY_COUNTRY)


def test_scanner_from_a_filtered_dataset_prunes_by_the_index(sales: ka.KartothekDataset) -> None:
    got = pds.Scanner.from_dataset(sales.filter(BY_CUSTOMER_EXPR)).to_table()
    assert_rows(got, BY_CUSTOMER)
    assert files_opened() == 1


def acero_scan(dataset: pds.Dataset, filter_: pc.Expression) -> pa.Table:
    # the scan node's filter only prunes; a filter node drops the rows
    return acero.Declaration.from_sequence(
        [
            acero.Declaration("scan", acero.ScanNodeOptions(dataset, filter=filter_)),
            acero.Declaration("filter", acero.FilterNodeOptions(filter_)),
            acero.Declaration(
                "project", acero.ProjectNodeOptions([pc.field(c) for c in COLUMNS], COLUMNS)
            ),
        ]
    ).to_table()


def test_acero_scan_node_gets_the_rows_and_prunes_partitions_only(
    sales: ka.KartothekDataset,
) -> None:
    assert_rows(acero_scan(sales, BY_CUSTOMER_EXPR), BY_CUSTOMER)
    assert files_opened() == ALL_FILES
    CountingFileSystem.opened.clear()
    assert_rows(acero_scan(sales, pc.field("country") == "US/CA"), BY_COUNTRY)
    assert files_opened() == files_holding(BY_COUNTRY)


def test_acero_scan_node_over_a_filtered_dataset_prunes_by_the_index(
    sales: ka.KartothekDataset,
) -> None:
    assert_rows(acero_scan(sales.filter(BY_CUSTOMER_EXPR), BY_CUSTOMER_EXPR), BY_CUSTOMER)
    assert files_opened() == 1


# -- object stores ----------------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.s3
def test_scans_on_s3_send_no_head_request(s3_store: ka.Store, moto_request_counter: Any) -> None:
    # fragments carry the file size from the metadata: Arrow reads footers straight away
    for write, chunk in REFERENCE[REFERENCE.write < 2].groupby("write"):
        ka.write_dataset(
            chunk[COLUMNS],
            s3_store,
            UUID,
            partition_on=["country", "year"],
            secondary_indices=["customer"],
            mode="create" if write == 0 else "append",
        )
    in_s3 = REFERENCE.write < 2
    dataset = ka.dataset(s3_store, UUID)
    with moto_request_counter() as counted:
        got = duck_rows(duckdb.from_arrow(dataset).filter("country = 'US/CA'"))
    assert_rows(got, in_s3 & BY_COUNTRY)
    methods = collections.Counter(r.split(" ", 1)[0] for r in counted.requests)
    assert set(methods) == {"GET"}, counted.requests
    assert methods["GET"] >= files_holding(in_s3 & BY_COUNTRY)


def test_duckdb_on_a_python_filesystem_store_does_not_deadlock() -> None:
    """pyarrow's Scanner.to_reader() keeps the GIL; reads through a Python
    filesystem (memory://) need it on Arrow's I/O threads.  Repeated scans
    used to hang forever."""
    import uuid as uuidlib

    store = ka.resolve_store(f"memory://deadlock-{uuidlib.uuid4().hex}")
    frames = [
        pd.DataFrame({"p": [f"p{i % 4}"] * 50, "x": range(i * 50, (i + 1) * 50)}) for i in range(8)
    ]
    ka.write_dataset(frames, store, "ds", partition_on=["p"])
    data = ka.dataset(store, "ds")  # noqa: F841 - DuckDB finds it by name
    for _ in range(30):
        assert duckdb.sql("SELECT count(*), sum(x) FROM data").fetchall() == [
            (400, sum(range(400)))
        ]
        assert duckdb.sql("SELECT count(*) FROM data WHERE p = 'p1'").fetchall() == [(100,)]
