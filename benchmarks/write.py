"""Partitioned writes side by side: ktk-arrow vs deltalake vs plain pyarrow, same data, one run.

The data is ``--chunks`` chunks (Arrow tables, or DataFrames with
``--input pandas``) of an int64 id, a float amount, a string category of
``--partitions`` values (the partition column), a timestamp and a small
string column.  Each writer runs in a fresh child process of its own, which
builds the same data from the same seed, so its peak RSS is its own:
``peak`` is the child's maximum RSS (building the data included), ``over
data`` the highest RSS sampled (every 5 ms) during the write minus the RSS it
had with the data built, before writing.  ``pyarrow`` is
``pyarrow.dataset.write_dataset`` over the whole stream, ``pyarrow-chunks``
``pyarrow.parquet.write_to_dataset`` called per chunk (a file per partition
per chunk, as ktk-arrow writes).

    python benchmarks/write.py                # 10M rows in 10 chunks, 100 partitions
    python benchmarks/write.py --quick        # 1M rows
    python benchmarks/write.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa

WRITERS = ("ktk-arrow", "deltalake", "pyarrow", "pyarrow-chunks")


def make_chunks(rows: int, chunks: int, partitions: int, seed: int = 0) -> list[pa.Table]:
    """``chunks`` tables of ``rows`` rows in all; the category is the partition column."""
    rng = np.random.default_rng(seed)
    categories = np.array([f"cat{i:03d}" for i in range(partitions)])
    notes = np.array(["a", "bb", "ccc", "dddd"])
    start = np.datetime64("2024-01-01T00:00:00", "us")
    out = []
    for bounds in np.array_split(np.arange(rows), chunks):
        n = len(bounds)
        out.append(
            pa.table(
                {
                    "id": pa.array(bounds.astype(np.int64)),
                    "amount": pa.array(rng.random(n) * 100),
                    "category": pa.array(categories[rng.integers(0, partitions, n)]),
                    "ts": pa.array(start + rng.integers(0, 10**12, n).astype("timedelta64[us]")),
                    "note": pa.array(notes[rng.integers(0, len(notes), n)]),
                }
            )
        )
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _write(writer: str, chunks: list[Any], root: str) -> None:
    if writer == "ktk-arrow":
        import ktk_arrow as ka

        ka.write_dataset(iter(chunks), root, "ds", partition_on=["category"])
    elif writer == "deltalake":
        from deltalake import write_deltalake

        tables = [c if isinstance(c, pa.Table) else pa.Table.from_pandas(c) for c in chunks]
        reader = pa.RecordBatchReader.from_batches(
            tables[0].schema, (b for t in tables for b in t.to_batches())
        )
        write_deltalake(f"{root}/ds", reader, partition_by=["category"])
    elif writer == "pyarrow":
        import pyarrow.dataset as pds

        tables = [c if isinstance(c, pa.Table) else pa.Table.from_pandas(c) for c in chunks]
        reader = pa.RecordBatchReader.from_batches(
            tables[0].schema, (b for t in tables for b in t.to_batches())
        )
        pds.write_dataset(
            reader,
            f"{root}/ds",
            format="parquet",
            partitioning=["category"],
            partitioning_flavor="hive",
            existing_data_behavior="overwrite_or_ignore",
        )
    elif writer == "pyarrow-chunks":  # pyarrow's per-chunk writer: a file per partition per chunk
        import pyarrow.parquet as pq

        for chunk in chunks:
            table = chunk if isinstance(chunk, pa.Table) else pa.Table.from_pandas(chunk)
            pq.write_to_dataset(table, f"{root}/ds", partition_cols=["category"])
    else:
        raise ValueError(writer)


class _PeakSampler:
    """The highest RSS seen while it runs (``ru_maxrss`` also counts building the data)."""

    def __init__(self, every: float = 0.005) -> None:
        self.peak = _rss_bytes()
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _child(writer: str, args: dict[str, Any], root: str, queue: Any) -> None:
    chunks: list[Any] = make_chunks(args["rows"], args["chunks"], args["partitions"])
    if args["input"] == "pandas":
        chunks = [c.to_pandas() for c in chunks]
    before = _rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with _PeakSampler() as sampler:
        _write(writer, chunks, root)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    queue.put(
        {
            "seconds": seconds,
            "cpu": cpu,
            "peak_rss": after.ru_maxrss * 1024,
            "rss_before": before,
            "write_peak_rss": sampler.peak,
        }
    )


def _files(root: str) -> tuple[int, int]:
    count = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet") and "_delta_log" not in dirpath:
                count += 1
                size += os.path.getsize(os.path.join(dirpath, name))
    return count, size


def run(writer: str, args: dict[str, Any]) -> dict[str, Any]:
    """One write by ``writer`` in a child process of its own."""
    ctx = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp(prefix=f"ktk-write-{writer}-")
    try:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(writer, args, root, queue))
        proc.start()
        result = queue.get()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{writer} child failed with exit code {proc.exitcode}")
        files, size = _files(root)
        return {**result, "files": files, "bytes": size}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M rows")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--input", choices=("arrow", "pandas"), default="arrow")
    parser.add_argument("--repeat", type=int, default=3, help="runs per writer (median)")
    parser.add_argument("--writers", nargs="*", default=list(WRITERS), choices=WRITERS)
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write results as JSON ('-': stdout)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rows = 1_000_000
    config = {k: getattr(args, k) for k in ("rows", "chunks", "partitions", "input")}

    # writers take turns, so a load that changes during the run hits them alike
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in args.writers}
    for _ in range(args.repeat):
        for writer in args.writers:
            runs[writer].append(run(writer, config))
    results: dict[str, dict[str, Any]] = {}
    for writer, done in runs.items():
        results[writer] = {
            "seconds": statistics.median(r["seconds"] for r in done),
            "all_seconds": [r["seconds"] for r in done],
            "cpu_seconds": statistics.median(r["cpu"] for r in done),
            "files": done[0]["files"],
            "bytes": done[0]["bytes"],
            "peak_rss": max(r["peak_rss"] for r in done),
            "rss_over_data": max(r["write_peak_rss"] - r["rss_before"] for r in done),
        }

    print(
        f"write {args.rows:,} rows in {args.chunks} {args.input} chunks, partition_on category "
        f"({args.partitions} values), median of {args.repeat}; cpu = user + system seconds"
    )
    print(
        f"{'writer':<14} {'time':>8} {'cpu':>8} {'files':>6} {'MiB':>8} {'peak RSS':>10} "
        f"{'over data':>10}"
    )
    for writer, r in results.items():
        print(
            f"{writer:<14} {r['seconds']:>7.2f}s {r['cpu_seconds']:>7.2f}s {r['files']:>6} "
            f"{r['bytes'] / 2**20:>8.1f} {r['peak_rss'] / 2**20:>8.0f}Mi "
            f"{r['rss_over_data'] / 2**20:>8.0f}Mi"
        )
    ratios: dict[str, float] = {}
    ours = results.get("ktk-arrow")
    for peer in ("deltalake", "pyarrow", "pyarrow-chunks"):
        if ours and peer in results:
            theirs = results[peer]
            ratios[f"time/{peer}"] = ours["seconds"] / theirs["seconds"]
            ratios[f"cpu/{peer}"] = ours["cpu_seconds"] / theirs["cpu_seconds"]
            ratios[f"bytes/{peer}"] = ours["bytes"] / theirs["bytes"]
            ratios[f"rss_over_data/{peer}"] = ours["rss_over_data"] / theirs["rss_over_data"]
            print(
                f"ktk-arrow/{peer}: time {ratios[f'time/{peer}']:.2f}x, cpu "
                f"{ratios[f'cpu/{peer}']:.2f}x, bytes "
                f"{ratios[f'bytes/{peer}']:.2f}x, memory over data "
                f"{ratios[f'rss_over_data/{peer}']:.2f}x"
            )
    if args.json:
        text = json.dumps({"config": config, "results": results, "ratios": ratios}, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)


if __name__ == "__main__":
    sys.exit(main())
