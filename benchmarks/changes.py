"""Row-level changes side by side: ka.delete_rows / ka.upsert vs deltalake delete / merge.

The same data goes to both: ``--rows`` rows (int64 ``key``, unique; a float,
a string and a timestamp column) written in ``--appends`` appends, each
partitioned on ``part`` (``--partitions`` values, random), so each tool holds
``appends x partitions`` files.  ktk-arrow has a secondary index on ``key``;
deltalake has its per-file min/max statistics.  Then, each on a fresh copy of
the written data and in a child process of its own (time and peak RSS are
the child's; ``over base`` is the peak minus the RSS right before the call):

- delete 0.1 % of the rows by key (``key in (...)``),
- upsert ``--upsert-rows`` rows, half with existing keys, half new
  (deltalake: ``merge(...).when_matched_update_all().when_not_matched_insert_all()``).

Two key choices: ``scattered`` (keys drawn from the whole dataset: nearly
every file holds one) and ``recent`` (keys drawn from the last append, as
when recent records are corrected).  ``files rewritten`` is what the tool
replaced; ``holding keys`` counts the files that hold one of the keys.

    python benchmarks/changes.py            # 10M rows, 100 partitions, 10 appends
    python benchmarks/changes.py --quick    # 1M rows
    python benchmarks/changes.py --quick --repeat 3 --scenarios recent --operations upsert
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TOOLS = ("ktk-arrow", "deltalake")
OPERATIONS = ("delete", "upsert")
SCENARIOS = ("scattered", "recent")


def make_batch(first: int, rows: int, partitions: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    notes = np.array(["a", "bb", "ccc", "dddd"])
    start = np.datetime64("2024-01-01T00:00:00", "us")
    return pa.table(
        {
            "key": pa.array(np.arange(first, first + rows, dtype=np.int64)),
            "part": pa.array(rng.integers(0, partitions, rows).astype(np.int64)),
            "amount": pa.array(rng.random(rows) * 100),
            "note": pa.array(notes[rng.integers(0, len(notes), rows)]),
            "ts": pa.array(start + rng.integers(0, 10**12, rows).astype("timedelta64[us]")),
        }
    )


def batches(config: dict[str, Any]) -> list[tuple[int, int]]:
    bounds = np.array_split(np.arange(config["rows"]), config["appends"])
    return [(int(b[0]), len(b)) for b in bounds]


def write_both(config: dict[str, Any], root: str) -> None:
    """The pristine datasets: ``root/ktk`` (store) and ``root/delta`` (table)."""
    from deltalake import write_deltalake

    import ktk_arrow as ka

    for i, (first, rows) in enumerate(batches(config)):
        batch = make_batch(first, rows, config["partitions"], seed=i)
        if i == 0:
            ka.write_dataset(
                batch, f"{root}/ktk", "ds", partition_on=["part"], secondary_indices=["key"]
            )
        else:
            ka.write_dataset(batch, f"{root}/ktk", "ds", mode="append")
        write_deltalake(f"{root}/delta", batch, partition_by=["part"], mode="append")


def keys_for(config: dict[str, Any], scenario: str, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if scenario == "scattered":
        low, high = 0, config["rows"]
    else:
        low, high = batches(config)[-1][0], config["rows"]
    return np.sort(rng.choice(np.arange(low, high), size=count, replace=False))


def upsert_data(config: dict[str, Any], scenario: str) -> pa.Table:
    half = config["upsert_rows"] // 2
    existing = keys_for(config, scenario, half, seed=2)
    new = np.arange(config["rows"], config["rows"] + config["upsert_rows"] - half)
    keys = np.concatenate([existing, new])
    data = make_batch(0, len(keys), config["partitions"], seed=3)
    return data.set_column(0, "key", pa.array(keys.astype(np.int64)))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _operate(tool: str, operation: str, root: str, keys: np.ndarray, data: pa.Table | None) -> dict:
    if tool == "ktk-arrow":
        import ktk_arrow as ka

        if operation == "delete":
            snap = ka.delete_rows(f"{root}/ktk", "ds", [[("key", "in", keys.tolist())]])
        else:
            snap = ka.upsert(data, f"{root}/ktk", "ds", on="key")
        return {"files_removed": snap.files_removed, "files_added": snap.files_added}
    from deltalake import DeltaTable

    dt = DeltaTable(f"{root}/delta")
    if operation == "delete":
        metrics = dt.delete(f"key in ({', '.join(str(k) for k in keys.tolist())})")
        return {
            "files_removed": metrics["num_removed_files"],
            "files_added": metrics["num_added_files"],
        }
    metrics = (
        dt.merge(data, "t.key = s.key", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return {
        "files_removed": metrics["num_target_files_removed"],
        "files_added": metrics["num_target_files_added"],
    }


def _child(tool: str, operation: str, root: str, keys: Any, data: Any, queue: Any) -> None:
    import deltalake  # noqa: F401  (both imported before the baseline)

    import ktk_arrow
    import ktk_arrow.rows  # noqa: F401

    before = _rss_bytes()
    start = time.perf_counter()
    counts = _operate(tool, operation, root, keys, data)
    seconds = time.perf_counter() - start
    peak = _peak_rss_bytes()
    queue.put({"seconds": seconds, "peak_rss": peak, "rss_before": before, **counts})


def holding(directory: str, keys: np.ndarray) -> int:
    """Data files under ``directory`` that hold one of ``keys``."""
    wanted = pa.array(keys)
    count = 0
    for dirpath, _, names in os.walk(directory):
        if "_delta_log" in dirpath or "indices" in dirpath:
            continue
        for name in names:
            if name.endswith(".parquet") and not name.startswith("_"):
                column = pq.read_table(os.path.join(dirpath, name), columns=["key"]).column(0)
                count += bool(pc.any(pc.is_in(column, value_set=wanted)).as_py())
    return count


def run(tool: str, operation: str, pristine: str, keys: np.ndarray, data: Any) -> dict:
    """One operation on a fresh copy of the pristine data, in a child process."""
    work = tempfile.mkdtemp(prefix=f"ktk-changes-{tool}-")
    try:
        sub = "ktk" if tool == "ktk-arrow" else "delta"
        shutil.copytree(f"{pristine}/{sub}", f"{work}/{sub}")
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(tool, operation, work, keys, data, queue))
        proc.start()
        result = queue.get()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{tool} {operation} failed with exit code {proc.exitcode}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M rows")
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--appends", type=int, default=10)
    parser.add_argument("--delete-fraction", type=float, default=0.001)
    parser.add_argument("--upsert-rows", type=int, default=10_000)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--operations", nargs="*", default=list(OPERATIONS), choices=OPERATIONS)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool and operation (median time, max RSS)"
    )
    parser.add_argument("--dir", help="where to write the data (default: a temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.rows = 1_000_000
    config = {
        "rows": args.rows,
        "partitions": args.partitions,
        "appends": args.appends,
        "upsert_rows": args.upsert_rows,
    }
    pristine = tempfile.mkdtemp(prefix="ktk-changes-", dir=args.dir)
    try:
        start = time.perf_counter()
        # in a child: the parent stays small, and so do the children it spawns
        ctx = multiprocessing.get_context("spawn")
        writer = ctx.Process(target=write_both, args=(config, pristine))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise RuntimeError(f"writing the data failed with exit code {writer.exitcode}")
        print(
            f"{args.rows:,} rows in {args.appends} appends x {args.partitions} partitions "
            f"(written in {time.perf_counter() - start:.1f}s); one child process per operation"
        )
        results = []
        for scenario in args.scenarios:
            delete_keys = keys_for(config, scenario, int(args.rows * args.delete_fraction), 1)
            data = upsert_data(config, scenario)
            for operation in args.operations:
                keys = delete_keys if operation == "delete" else data.column("key").to_numpy()
                held = {
                    "ktk-arrow": holding(f"{pristine}/ktk/ds/table", keys),
                    "deltalake": holding(f"{pristine}/delta", keys),
                }
                for tool in TOOLS:
                    runs = [run(tool, operation, pristine, keys, data) for _ in range(args.repeat)]
                    r = dict(max(runs, key=lambda x: x["peak_rss"]))
                    r["seconds"] = statistics.median(x["seconds"] for x in runs)
                    r["all_seconds"] = [x["seconds"] for x in runs]
                    results.append(
                        {
                            "scenario": scenario,
                            "operation": operation,
                            "tool": tool,
                            "holding_keys": held[tool],
                            **r,
                        }
                    )
        print(
            f"{'scenario':<10} {'operation':<16} {'tool':<10} {'time':>8} {'peak RSS':>9} "
            f"{'over base':>9} {'rewritten':>9} {'holding':>8} {'added':>6}"
        )
        for r in results:
            what = (
                f"delete {int(args.rows * args.delete_fraction):,}"
                if r["operation"] == "delete"
                else f"upsert {args.upsert_rows:,}"
            )
            print(
                f"{r['scenario']:<10} {what:<16} {r['tool']:<10} {r['seconds']:>7.2f}s "
                f"{r['peak_rss'] / 2**20:>7.0f}Mi "
                f"{(r['peak_rss'] - r['rss_before']) / 2**20:>7.0f}Mi "
                f"{r['files_removed']:>9} {r['holding_keys']:>8} {r['files_added']:>6}"
            )
        print("ratios ktk-arrow / deltalake (targets: time <= 0.5, peak RSS <= 0.5)")
        ratios = {}
        for scenario in args.scenarios:
            for operation in args.operations:
                ours, theirs = (
                    next(
                        r
                        for r in results
                        if (r["scenario"], r["operation"], r["tool"]) == (scenario, operation, t)
                    )
                    for t in TOOLS
                )
                over = (ours["peak_rss"] - ours["rss_before"]) / max(
                    1, theirs["peak_rss"] - theirs["rss_before"]
                )
                ratio = {
                    "time": ours["seconds"] / theirs["seconds"],
                    "peak_rss": ours["peak_rss"] / theirs["peak_rss"],
                    "rss_over_base": over,
                }
                ratios[f"{scenario}/{operation}"] = ratio
                print(
                    f"  {scenario:<10} {operation:<7} time {ratio['time']:.2f}x  peak RSS "
                    f"{ratio['peak_rss']:.2f}x  RSS over base {over:.2f}x"
                )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": config, "results": results, "ratios": ratios}, f, indent=2)
    finally:
        shutil.rmtree(pristine, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
