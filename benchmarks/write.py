"""Write 1M rows, partitioned and indexed: ktk-arrow vs plateau, same data, same run."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from functools import partial

import ktk_arrow as ka
from _util import report, sales_frame, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from minimalkv import get_store_from_url
    from plateau.io.eager import store_dataframes_as_dataset

    df = sales_frame(args.rows)
    root = tempfile.mkdtemp(prefix="ktk-bench-")
    counter = iter(range(10**6))

    def ours(**kw):
        ka.write_dataset(df, root, f"k{next(counter)}", **kw)

    def theirs(**kw):
        store = partial(get_store_from_url, f"hfs://{root}")
        store_dataframes_as_dataset(store=store, dataset_uuid=f"p{next(counter)}", dfs=[df], **kw)

    rows = []
    for name, kw in [
        ("no partitions", {}),
        ("partition_on=country", {"partition_on": ["country"]}),
        ("partitioned + index", {"partition_on": ["country"], "secondary_indices": ["customer"]}),
    ]:
        rows.append(
            (
                name,
                timed(partial(ours, **kw), args.repeat),
                timed(partial(theirs, **kw), args.repeat),
            )
        )
    print(f"write {args.rows:,} rows (median of {args.repeat})")
    report(rows, "ktk-arrow", "plateau")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
