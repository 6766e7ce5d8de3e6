"""Reads side by side on the same files: ktk-arrow vs raw pyarrow and vs plateau."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from functools import partial

import pyarrow.dataset as pds

import ktk_arrow as ka
from _util import report, sales_frame, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--partitions", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args()

    from minimalkv import get_store_from_url
    from plateau.io.eager import read_table, store_dataframes_as_dataset
    from plateau.io_components.read import dispatch_metapartitions

    root = tempfile.mkdtemp(prefix="ktk-read-")
    df = sales_frame(args.rows)
    # many files per partition, as appends produce: 8 chunks
    chunks = [df.iloc[i::8] for i in range(8)]
    ka.write_dataset(
        chunks, root, "sales", partition_on=["country"], secondary_indices=["customer"]
    )
    plateau_store = partial(get_store_from_url, f"hfs://{root}")
    probe = int(df.customer.iloc[12345])

    rows = []
    ds = ka.dataset(root, "sales")

    def open_raw() -> pds.Dataset:
        return pds.dataset(
            f"{root}/sales/table",
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=True,
            ignore_prefixes=["_", "."],
        )

    raw = open_raw()
    rows.append(
        (
            "open + full read",
            timed(lambda: ka.dataset(root, "sales").to_table(), args.repeat),
            timed(lambda: open_raw().to_table(), args.repeat),
        )
    )
    rows.append(
        (
            "full read of an open dataset",
            timed(lambda: ds.to_table(), args.repeat),
            timed(lambda: raw.to_table(), args.repeat),
        )
    )
    print(f"{args.rows:,} rows, {len(ds.tasks)} files")
    report(rows, "ktk-arrow", "raw pyarrow")
    print()

    rows = []
    pred = [[("customer", "==", probe)]]
    rows.append(
        (
            "indexed point query",
            timed(lambda: ka.dataset(root, "sales", filter=pred).to_table(), args.repeat),
            timed(lambda: read_table("sales", plateau_store, predicates=pred), args.repeat),
        )
    )
    rows.append(
        (
            "partition + index query",
            timed(
                lambda: ka.dataset(
                    root, "sales", filter=[[("country", "==", "C03"), ("customer", "==", probe)]]
                ).to_table(),
                args.repeat,
            ),
            timed(
                lambda: read_table(
                    "sales",
                    plateau_store,
                    predicates=[[("country", "==", "C03"), ("customer", "==", probe)]],
                ),
                args.repeat,
            ),
        )
    )
    rows.append(
        (
            "full read to pandas",
            timed(lambda: ka.dataset(root, "sales").to_table().to_pandas(), args.repeat),
            timed(lambda: read_table("sales", plateau_store), args.repeat),
        )
    )
    report(rows, "ktk-arrow", "plateau")
    print()

    rows = []
    for n in args.partitions:
        small = sales_frame(n * 2, countries=1).assign(part=range(n * 2))
        small["part"] = small["part"] % n
        ka.write_dataset(small, root, f"p{n}", partition_on=["part"])
        store_dataframes_as_dataset(
            store=plateau_store, dataset_uuid=f"q{n}", dfs=[small], partition_on=["part"]
        )
        ours = timed(lambda n=n: ka.dataset(root, f"p{n}"), args.repeat)
        # plateau's planning: load metadata and dispatch one MetaPartition per file
        theirs = timed(
            lambda n=n: list(dispatch_metapartitions(f"q{n}", plateau_store)), args.repeat
        )
        rows.append((f"plan {n:,} partitions", ours, theirs))
    report(rows, "ktk-arrow", "plateau")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
