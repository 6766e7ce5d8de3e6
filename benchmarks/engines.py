"""Every engine on a ktk-arrow dataset vs the same engine on the same files, in one run.

One dataset of ``--rows`` rows (default 10M) written in 10 chunks, partitioned
on a 100-value ``category`` (so 1,000 files), with a secondary index on a
high-cardinality ``customer``; ids rise chunk by chunk, so a range filter on
``id`` is prunable by statistics.  Sections:

1. Dask (``LocalCluster``, 2 worker processes): ``amount.sum()``, the same with a
   1 % filter on ``id``, and ``len()`` — ``read_dataset_as_ddf`` vs
   ``dd.read_parquet`` on the dataset's ``table`` directory;
2. writing the rows (10 chunks, partitioned): ``ka.write_dataset`` vs
   ``deltalake.write_deltalake``;
3. DuckDB: ``count(*)``, a projected sum by category and an indexed point query —
   ``KartothekDataset.to_duckdb()`` vs DuckDB's ``read_parquet`` of the files;
4. Polars: a full scan, a projected sum and an indexed point query —
   ``KartothekDataset.to_polars()`` vs ``pl.scan_parquet`` of the files;
5. ten selective queries on one open dataset object vs on one reused raw
   ``pyarrow.dataset``.

Every result is checked against the peer's (same row count, same sum), and
each section prints a table (case, ktk-arrow, peer, ratio ours/peer, target).

    python benchmarks/engines.py --quick            # 1M rows, 200 files, ~1 min
    python benchmarks/engines.py --json engines.json
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

import ktk_arrow as ka
from scale import Bench, Measured, attempt, quiet, ratio_at_most, timing

UUID = "events"
SECTIONS = {
    1: "Dask: read_dataset_as_ddf vs dd.read_parquet (LocalCluster, 2 processes)",
    2: "Write the rows in 10 chunks, partitioned on category",
    3: "DuckDB: to_duckdb() vs read_parquet on the same files",
    4: "Polars: to_polars() vs scan_parquet on the same files",
    5: "Ten selective queries on one open dataset",
}


def chunks(rows: int, categories: int, seed: int = 0, n: int = 10) -> list[pa.Table]:
    """``n`` chunks; chunk i holds ids [i*rows/n, (i+1)*rows/n) in random order."""
    rng = np.random.default_rng(seed)
    per = rows // n
    names = np.array([f"cat{i:03d}" for i in range(categories)])
    out = []
    for i in range(n):
        ids = rng.permutation(np.arange(i * per, (i + 1) * per, dtype=np.int64))
        out.append(
            pa.table(
                {
                    "id": ids,
                    "category": names[rng.integers(0, categories, per)],
                    "customer": rng.integers(0, 1_000_000, per),
                    "amount": rng.random(per) * 100,
                    "ts": pd.Timestamp("2024-01-01")
                    + pd.to_timedelta(rng.integers(0, 10**7, per), "s"),
                    "note": np.array(["a", "bb", "ccc", "dddd"])[rng.integers(0, 4, per)],
                }
            )
        )
    return out


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / UUID / "table").rglob("*.parquet"))


def checked(fn: Callable[[], Any], expect: Any) -> Callable[[], Any]:
    """``fn`` that raises unless it returns ``expect`` (floats: to 1e-6 relative)."""

    def run() -> Any:
        got = fn()
        same = (
            math.isclose(float(got), float(expect), rel_tol=1e-6)
            if isinstance(expect, float)
            else got == expect
        )
        if not same:
            raise AssertionError(f"wrong result: expected {expect!r}, got {got!r}")
        return got

    return run


def measure(fn: Callable[[], Any], expect: Any, repeat: int) -> Measured:
    return timing(checked(fn, expect), repeat)


def dask_section(b: Bench, root: Path, truth: dict[str, Any], repeat: int) -> None:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from ktk_arrow.io.dask.dataframe import read_dataset_as_ddf

    cutoff = truth["cutoff"]
    table_dir = str(root / UUID / "table")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    with quiet(), cluster, Client(cluster):

        def ours(predicates: Any = None) -> Any:
            return read_dataset_as_ddf(UUID, str(root), predicates=predicates)

        def raw(filters: Any = None) -> Any:
            return dd.read_parquet(table_dir, filters=filters)

        b.add(
            1,
            "amount.sum()",
            measure(lambda: ours().amount.sum().compute(), truth["sum"], repeat),
            measure(lambda: raw().amount.sum().compute(), truth["sum"], repeat),
            peer="dd.read_parquet",
            target=ratio_at_most(1.0, "dd.read_parquet"),
        )
        flt = [("id", "<", cutoff)]
        b.add(
            1,
            "amount.sum() where id < 1 %",
            measure(lambda: ours([flt]).amount.sum().compute(), truth["filtered_sum"], repeat),
            measure(lambda: raw([flt]).amount.sum().compute(), truth["filtered_sum"], repeat),
            peer="dd.read_parquet",
            target=ratio_at_most(1.0, "dd.read_parquet"),
        )
        b.add(
            1,
            "len()",
            measure(lambda: len(ours()), truth["rows"], repeat),
            measure(lambda: len(raw()), truth["rows"], repeat),
            peer="dd.read_parquet",
            target=ratio_at_most(2.0, "dd.read_parquet"),
        )
        parts, err = attempt(lambda: (ours().npartitions, raw().npartitions))
        if parts:
            b.note(1, f"partitions: ours {parts[0]}, dd.read_parquet {parts[1]}")
        elif err:
            b.note(1, f"partitions: {err}")


def write_section(b: Bench, data: list[pa.Table], workdir: Path, repeat: int) -> None:
    def ours() -> None:
        target = workdir / f"w-ka-{time.perf_counter_ns()}"
        ka.write_dataset(data, str(target), "w", partition_on=["category"])
        shutil.rmtree(target)

    def delta() -> None:
        from deltalake import write_deltalake

        target = workdir / f"w-delta-{time.perf_counter_ns()}"
        write_deltalake(str(target), pa.concat_tables(data), partition_by=["category"])
        shutil.rmtree(target)

    b.add(
        2,
        "write (10 chunks)",
        timing(ours, repeat),
        timing(delta, repeat),
        peer="deltalake",
        target=ratio_at_most(1.0, "deltalake"),
        note="deltalake gets the chunks concatenated (one call); ours streams them",
    )


def duckdb_section(b: Bench, root: Path, truth: dict[str, Any], repeat: int) -> None:
    import duckdb

    files = files_of(root)
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    ds = ka.dataset(str(root), UUID)
    native = f"read_parquet({files!r}, hive_partitioning=false)"

    def ours_rel(filter: Any = None) -> Any:
        d = ds if filter is None else ka.dataset(str(root), UUID, filter=filter)
        if hasattr(d, "to_duckdb"):
            return d.to_duckdb(con)
        return con.from_arrow(d)

    customer = truth["customer"]
    cases = [
        (
            "count(*)",
            lambda: ours_rel().aggregate("count(*)").fetchall()[0][0],
            lambda: con.sql(f"select count(*) from {native}").fetchall()[0][0],
            truth["rows"],
        ),
        (
            "sum(amount)",
            lambda: ours_rel().aggregate("sum(amount)").fetchall()[0][0],
            lambda: con.sql(f"select sum(amount) from {native}").fetchall()[0][0],
            truth["sum"],
        ),
        (
            "point query customer == x (indexed)",
            lambda: (
                ours_rel([[("customer", "==", customer)]]).aggregate("count(*)").fetchall()[0][0]
            ),
            lambda: con.sql(
                f"select count(*) from {native} where customer = {customer}"
            ).fetchall()[0][0],
            truth["customer_rows"],
        ),
    ]
    for name, ours, peer, expect in cases:
        b.add(
            3,
            name,
            measure(ours, expect, repeat),
            measure(peer, expect, repeat),
            peer="duckdb read_parquet",
            target=ratio_at_most(1.0, "read_parquet"),
        )
    if not hasattr(ds, "to_duckdb"):
        b.note(3, "to_duckdb() missing: DuckDB scans the dataset as an Arrow dataset")


def polars_section(b: Bench, root: Path, truth: dict[str, Any], repeat: int) -> None:
    import polars as pl

    files = files_of(root)
    ds = ka.dataset(str(root), UUID)

    def ours_lf(filter: Any = None) -> Any:
        d = ds if filter is None else ka.dataset(str(root), UUID, filter=filter)
        if hasattr(d, "to_polars"):
            return d.to_polars()
        return pl.scan_pyarrow_dataset(d)

    def native() -> Any:
        return pl.scan_parquet(files, hive_partitioning=False)

    customer = truth["customer"]
    cases = [
        (
            "full scan (collect)",
            lambda: ours_lf().collect().height,
            lambda: native().collect().height,
            truth["rows"],
            ratio_at_most(1.0, "scan_parquet"),
        ),
        (
            "projected sum(amount)",
            lambda: ours_lf().select(pl.col("amount").sum()).collect().item(),
            lambda: native().select(pl.col("amount").sum()).collect().item(),
            truth["sum"],
            ratio_at_most(1.0, "scan_parquet"),
        ),
        (
            "point query customer == x (indexed)",
            lambda: (
                ours_lf([[("customer", "==", customer)]])
                .filter(pl.col("customer") == customer)
                .collect()
                .height
            ),
            lambda: native().filter(pl.col("customer") == customer).collect().height,
            truth["customer_rows"],
            ratio_at_most(1.0, "scan_parquet (target: faster)"),
        ),
    ]
    for name, ours, peer, expect, target in cases:
        b.add(
            4,
            name,
            measure(ours, expect, repeat),
            measure(peer, expect, repeat),
            peer="pl.scan_parquet",
            target=target,
        )
    if not hasattr(ds, "to_polars"):
        b.note(4, "to_polars() missing: Polars scans the dataset through scan_pyarrow_dataset")


def repeated_section(b: Bench, root: Path, truth: dict[str, Any], repeat: int) -> None:
    ds = ka.dataset(str(root), UUID)
    raw = pds.dataset(
        str(root / UUID / "table"), format="parquet", partitioning="hive", ignore_prefixes=["_"]
    )
    probes = truth["probes"]

    def ten(d: Any) -> int:
        return sum(
            d.to_table(columns=["amount"], filter=pc.field("id") == p).num_rows for p in probes
        )

    b.add(
        5,
        "10 x to_table(filter=id == x)",
        measure(lambda: ten(ds), len(probes), repeat),
        measure(lambda: ten(raw), len(probes), repeat),
        peer="reused pyarrow dataset",
        target=ratio_at_most(1.0, "a reused pyarrow dataset"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1M rows, 20 categories")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sections", type=int, nargs="*", default=sorted(SECTIONS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.categories = 1_000_000, 20

    meta = {"rows": args.rows, "categories": args.categories, "python": platform.python_version()}
    b = Bench(args.json, meta, SECTIONS)
    workdir = Path(tempfile.mkdtemp(prefix="ktk-engines-"))
    try:
        data = chunks(args.rows, args.categories)
        root = workdir / "read"
        start = time.perf_counter()
        ka.write_dataset(
            data, str(root), UUID, partition_on=["category"], secondary_indices=["customer"]
        )
        b.elapsed("build", start)
        whole = pa.concat_tables(data)
        cutoff = args.rows // 100
        customer = int(whole["customer"][12345].as_py())
        truth = {
            "rows": whole.num_rows,
            "sum": float(pc.sum(whole["amount"]).as_py()),
            "cutoff": cutoff,
            "filtered_sum": float(
                pc.sum(whole.filter(pc.less(whole["id"], cutoff))["amount"]).as_py()
            ),
            "customer": customer,
            "customer_rows": int(pc.sum(pc.equal(whole["customer"], customer)).as_py()),
            "probes": [int(i) for i in np.linspace(0, args.rows - 1, 10)],
        }
        del whole
        meta["files"] = len(files_of(root))
        print(f"{args.rows:,} rows in {meta['files']} files under {workdir}")
        runners = {
            1: lambda: dask_section(b, root, truth, args.repeat),
            2: lambda: write_section(b, data, workdir, args.repeat),
            3: lambda: duckdb_section(b, root, truth, args.repeat),
            4: lambda: polars_section(b, root, truth, args.repeat),
            5: lambda: repeated_section(b, root, truth, args.repeat),
        }
        for section in args.sections:
            start = time.perf_counter()
            _, err = attempt(runners[section])
            if err:
                b.note(section, f"section failed: {err}")
            b.elapsed(f"section {section}", start)
            b.print_section(section)
        b.summary()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
