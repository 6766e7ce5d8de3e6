"""Auto-compaction: a full read after many small appends, with and without it, vs one write.

The datasets hold the same rows: one written at once, one fed by
``--appends`` appends of ``--rows`` rows without auto-compaction, and one
per ``--min-files`` value with ``auto_compact`` on.  Prints the time of a
full read (open + to_table) of each and its ratio to the one written at
once, plus what the appends cost.  Reads are timed in interleaved rounds, so
a busy machine slows every case alike, in
shuffled order.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from typing import Any

import pandas as pd

import ktk_arrow as ka
from _util import sales_frame


def _appends(root: str, frames: list[pd.DataFrame], partition_on: list[str], **kw: Any) -> float:
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        extra = {"partition_on": partition_on, **kw} if i == 0 else {}
        ka.write_dataset(frame, root, "sales", mode="append", **extra)
    return time.perf_counter() - start


def _read(root: str) -> float:
    start = time.perf_counter()
    ka.dataset(root, "sales").to_table()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--countries", type=int, default=2, help="partitions")
    parser.add_argument("--min-files", type=int, nargs="*", default=[8, 4, 2, 1])
    parser.add_argument("--repeat", type=int, default=41)
    args = parser.parse_args()

    frames = [sales_frame(args.rows, seed=i, countries=args.countries) for i in range(args.appends)]
    partition_on = ["country"] if args.countries > 1 else []
    cases = ["fresh", "off", *(f"on{k}" for k in args.min_files)]
    roots = {name: tempfile.mkdtemp(prefix=f"ktk-ac-{name}-") for name in cases}
    try:
        ka.write_dataset(pd.concat(frames), roots["fresh"], "sales", partition_on=partition_on)
        cost = {"off": _appends(roots["off"], frames, partition_on)}
        for k in args.min_files:
            policy = ka.AutoCompact(min_files=k)
            cost[f"on{k}"] = _appends(roots[f"on{k}"], frames, partition_on, auto_compact=policy)
        rows = {name: ka.dataset(root, "sales").count_rows() for name, root in roots.items()}
        assert len(set(rows.values())) == 1, rows

        times: dict[str, list[float]] = {name: [] for name in cases}
        order = list(cases)
        for _ in range(args.repeat + 1):  # the first round warms caches and is dropped
            random.shuffle(order)  # no case always follows the slow 200-file read
            for name in order:
                times[name].append(_read(roots[name]))
        median = {name: statistics.median(t[1:]) for name, t in times.items()}
        files = {name: len(ka.dataset(root, "sales").tasks) for name, root in roots.items()}

        print(
            f"full read after {args.appends} appends of {args.rows} rows "
            f"({args.countries} partitions), median of {args.repeat}"
        )
        for name in cases:
            if name == "fresh":
                label, extra = "written at once", ""
            elif name == "off":
                label, extra = "appends, auto-compaction off", f"  appends {cost[name]:.2f} s"
            else:
                compactions = sum(
                    s.operation == "compact" for s in ka.history(roots[name], "sales")
                )
                label = f"appends, auto_compact min_files={name[2:]}"
                extra = (
                    f"  appends {cost[name]:.2f} s ({cost[name] / cost['off']:.2f}x off, "
                    f"{compactions} compactions)"
                )
            print(
                f"  {label:<36} {median[name] * 1000:6.2f} ms  {files[name]:4d} files  "
                f"{median[name] / median['fresh']:5.2f}x fresh{extra}"
            )
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
