"""Commit latency and planning cost, side by side: ktk-arrow vs deltalake (delta-rs).

One run measures, in one process on the same machine:

1. the latency of a small one-file append (median over ``--commits``) on
   local disk, and on S3 (a moto server on loopback, started and stopped here);
2. what planning a read costs after 1, 20 and 100 commits on S3: requests
   (counted by moto's own request recorder) and bytes fetched;
3. ktk-arrow's append latency and planning time at 1k / 10k / 100k partitions;
4. a cProfile of local appends, to show where a commit's time goes.

Both libraries commit with a conditional put (deltalake >= 0.23 uses S3's
``If-None-Match`` by default; we use it too), so neither runs in unsafe mode.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import ktk_arrow as ka
from _util import timed
from ktk_arrow import commit as committer

BUCKET = "bench"
KEY, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"


def small_table(seed: int, rows: int = 100) -> pa.Table:
    """The appended unit: 100 rows, one file."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype="int64") + seed * rows,
            "name": [f"n{i % 17}" for i in range(rows)],
            "amount": rng.random(rows),
        }
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    print()


# -- commit latency ---------------------------------------------------------------------


@dataclass
class CommitTimes:
    """Wall time of each append, and of the metadata commit inside it (ktk-arrow only)."""

    total: list[float] = field(default_factory=list)
    commit: list[float] = field(default_factory=list)


@contextlib.contextmanager
def timing_commits(into: CommitTimes) -> Iterator[None]:
    """Time ``commit.commit`` (log entry + view) separately from writing the data file."""
    real = committer.commit

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into.commit.append(time.perf_counter() - start)

    committer.commit = timed  # type: ignore[assignment]
    try:
        yield
    finally:
        committer.commit = real  # type: ignore[assignment]


def ktk_appends(url: str, options: dict[str, Any], n: int, first_seed: int = 1) -> CommitTimes:
    times = CommitTimes()
    tables = [small_table(first_seed + i) for i in range(n)]
    with timing_commits(times):
        for data in tables:
            start = time.perf_counter()
            ka.write_dataset(data, url, "ds", mode="append", storage_options=options or None)
            times.total.append(time.perf_counter() - start)
    return times


def delta_appends(uri: str, options: dict[str, str], n: int, first_seed: int = 1) -> list[float]:
    from deltalake import write_deltalake

    out = []
    for data in [small_table(first_seed + i) for i in range(n)]:
        start = time.perf_counter()
        write_deltalake(uri, data, mode="append", storage_options=options or None)
        out.append(time.perf_counter() - start)
    return out


def create_both(
    ktk_url: str, ktk_options: dict[str, Any], delta_uri: str, delta_options: dict[str, str]
) -> None:
    from deltalake import write_deltalake

    ka.write_dataset(small_table(0), ktk_url, "ds", storage_options=ktk_options or None)
    write_deltalake(delta_uri, small_table(0), storage_options=delta_options or None)


def latency_rows(label: str, ours: CommitTimes, peer: list[float]) -> list[list[str]]:
    a, b = statistics.median(ours.total), statistics.median(peer)
    p90a, p90b = np.percentile(ours.total, 90), np.percentile(peer, 90)
    return [
        [f"{label}: append, median", ms(a), ms(b), f"{a / b:.2f}x"],
        [f"{label}: append, p90", ms(p90a), ms(p90b), f"{p90a / p90b:.2f}x"],
        [f"{label}: of which metadata commit (ours)", ms(statistics.median(ours.commit)), "", ""],
    ]


# -- moto -------------------------------------------------------------------------------


class Moto:
    """A moto S3 server on a free loopback port, with its request recorder."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto_server = Path(sys.executable).parent / "moto_server"
        self.log = open(workdir / "moto.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(workdir / "recording.jsonl")},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        self.client().create_bucket(Bucket=BUCKET)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        )

    def ktk_options(self) -> dict[str, Any]:
        return {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def delta_options(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": REGION,
        }

    def stop(self) -> None:
        """Stop the server we started, by its PID."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()

    def _recorder(self, action: str) -> str:
        method = "GET" if action == "download-recording" else "POST"
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/recorder/{action}", method=method
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return str(r.read().decode())

    @contextlib.contextmanager
    def recording(self, into: list[dict[str, Any]]) -> Iterator[None]:
        """Every S3 request the server handled inside the block."""
        self._recorder("reset-recording")
        self._recorder("start-recording")
        try:
            yield
        finally:
            self._recorder("stop-recording")
            into.extend(
                json.loads(x)
                for x in self._recorder("download-recording").splitlines()
                if x.strip()
            )
            self._recorder("reset-recording")


@dataclass
class Requests:
    """Requests by kind, and the object bytes the GETs fetched."""

    get: int = 0
    get_missing: int = 0
    list: int = 0
    head: int = 0
    other: int = 0
    bytes: int = 0

    @property
    def total(self) -> int:
        return self.get + self.list + self.head + self.other

    def describe(self, missing: bool = True) -> str:
        parts = [f"{self.get} GET"]
        if self.get_missing and missing:
            parts[0] += f" ({self.get_missing} missing)"
        if self.list:
            parts.append(f"{self.list} LIST")
        if self.head:
            parts.append(f"{self.head} HEAD")
        if self.other:
            parts.append(f"{self.other} PUT/POST")
        return ", ".join(parts)


def classify(moto: Moto, recorded: list[dict[str, Any]]) -> Requests:
    out = Requests()
    client = moto.client()
    sizes: dict[str, int | None] = {}
    for entry in recorded:
        url = urllib.parse.urlsplit(entry["url"])
        path = urllib.parse.unquote(url.path).lstrip("/")
        method = entry["method"]
        bucket, _, key = path.partition("/")
        if method == "GET" and (not key or "list-type" in url.query or "prefix=" in url.query):
            out.list += 1
        elif method == "GET":
            out.get += 1
            if key not in sizes:
                try:
                    sizes[key] = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
                except Exception:  # a GET of a missing key: a probe
                    sizes[key] = None
            size = sizes[key]
            if size is None:
                out.get_missing += 1
                continue
            headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
            rng = headers.get("range", "")
            if rng.startswith("bytes="):
                start_s, _, end_s = rng[6:].partition("-")
                start = int(start_s) if start_s else max(size - int(end_s), 0)
                end = min(int(end_s), size - 1) if end_s and start_s else size - 1
                out.bytes += max(end - start + 1, 0)
            else:
                out.bytes += size
        elif method == "HEAD":
            out.head += 1
        else:
            out.other += 1
    return out


def plan_ktk(url: str, options: dict[str, Any]) -> object:
    return ka.dataset(url, "ds", storage_options=options or None)


def plan_delta(uri: str, options: dict[str, str]) -> object:
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=options or None).to_pyarrow_dataset()


# -- sections ---------------------------------------------------------------------------


def local_latency(workdir: Path, commits: int) -> list[list[str]]:
    ktk_root, delta_root = str(workdir / "ktk-local"), str(workdir / "delta-local")
    create_both(ktk_root, {}, delta_root, {})
    ours = ktk_appends(ktk_root, {}, commits)
    peer = delta_appends(delta_root, {}, commits)
    return latency_rows("local disk", ours, peer)


def s3_sections(
    workdir: Path, commits: int, checkpoints: list[int]
) -> tuple[list[list[str]], list[list[str]]]:
    moto = Moto(workdir)
    try:
        ktk_url, delta_uri = f"s3://{BUCKET}/ktk", f"s3://{BUCKET}/delta"
        kopt, dopt = moto.ktk_options(), moto.delta_options()
        # latency on datasets of their own, not recorded (recording slows moto down)
        create_both(f"{ktk_url}-lat", kopt, f"{delta_uri}-lat", dopt)
        ours = ktk_appends(f"{ktk_url}-lat", kopt, commits)
        peer = delta_appends(f"{delta_uri}-lat", dopt, commits)
        latency = latency_rows("S3 (moto)", ours, peer)
        # then the requests of a few more appends
        rec_ours: list[dict[str, Any]] = []
        rec_peer: list[dict[str, Any]] = []
        with moto.recording(rec_ours):
            ktk_appends(f"{ktk_url}-lat", kopt, 1, first_seed=commits + 1)
        with moto.recording(rec_peer):
            delta_appends(f"{delta_uri}-lat", dopt, 1, first_seed=commits + 1)
        a, b = classify(moto, rec_ours), classify(moto, rec_peer)
        latency.append(
            [
                "S3 (moto): requests per append",
                # probes of then-missing keys may exist by now: no "missing" count here
                f"{a.total} ({a.describe(missing=False)})",
                f"{b.total} ({b.describe(missing=False)})",
                f"{a.total / b.total:.2f}x",
            ]
        )

        # planning after 1, 20, 100 commits
        planning = []
        create_both(ktk_url, kopt, delta_uri, dopt)
        done = 1
        for target in checkpoints:
            if target > done:
                ktk_appends(ktk_url, kopt, target - done, first_seed=done)
                delta_appends(delta_uri, dopt, target - done, first_seed=done)
                done = target
            seen: dict[str, Requests] = {}
            for name, plan in (
                ("ktk", lambda: plan_ktk(ktk_url, kopt)),
                ("delta", lambda: plan_delta(delta_uri, dopt)),
            ):
                plan()  # warm clients and caches of the process, not of the data
                recorded: list[dict[str, Any]] = []
                with moto.recording(recorded):
                    plan()
                seen[name] = classify(moto, recorded)
            t_ours = timed(lambda: plan_ktk(ktk_url, kopt), 5)
            t_peer = timed(lambda: plan_delta(delta_uri, dopt), 5)
            o, p = seen["ktk"], seen["delta"]
            planning += [
                [
                    f"{target} commits: requests",
                    f"{o.total} ({o.describe()})",
                    f"{p.total} ({p.describe()})",
                    f"{o.total / p.total:.2f}x",
                ],
                [
                    f"{target} commits: bytes read",
                    f"{o.bytes:,}",
                    f"{p.bytes:,}",
                    f"{o.bytes / p.bytes:.2f}x",
                ],
                [
                    f"{target} commits: planning time",
                    ms(t_ours),
                    ms(t_peer),
                    f"{t_ours / t_peer:.2f}x",
                ],
            ]
        return latency, planning
    finally:
        moto.stop()


def partition_scaling(workdir: Path, sizes: list[int], budget_s: float) -> list[list[str]]:
    rows = []
    for n in sizes:
        root = str(workdir / f"ktk-{n}")
        start = time.perf_counter()
        table = pa.table({"part": [f"p{i:06d}" for i in range(n)], "x": np.arange(n)})
        ka.write_dataset(table, root, "ds", partition_on=["part"])
        created = time.perf_counter() - start
        view = os.path.getsize(os.path.join(root, "ds.by-dataset-metadata.json"))
        plan = timed(lambda root=root: ka.dataset(root, "ds"), 3)
        times = CommitTimes()
        repeat = 20 if n <= 1_000 else 10 if n <= 10_000 else 5
        with timing_commits(times):
            for i in range(repeat):
                data = pa.table({"part": [f"p{i:06d}"], "x": [i]})
                t0 = time.perf_counter()
                ka.write_dataset(data, root, "ds", mode="append")
                times.total.append(time.perf_counter() - t0)
        rows.append(
            [
                f"{n:,}",
                f"{view / 1e6:.1f} MB",
                ms(statistics.median(times.total)),
                ms(statistics.median(times.commit)),
                ms(plan),
                f"{created:.1f} s",
            ]
        )
        shutil.rmtree(root, ignore_errors=True)
        if time.perf_counter() - start > budget_s:
            print(f"(stopping partition scaling after {n:,}: over the {budget_s:.0f} s budget)")
            break
    return rows


def profile_appends(root: str, appends: list[pa.Table], top: int) -> str:
    """Top functions by own time and by cumulative time over ``appends``."""
    profiler = cProfile.Profile()
    profiler.enable()
    for data in appends:
        ka.write_dataset(data, root, "ds", mode="append")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    stats.sort_stats("cumulative").print_stats(top + 10)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


def profile_sections(workdir: Path, commits: int, partitions: int) -> None:
    root = str(workdir / "ktk-profile")
    ka.write_dataset(small_table(0), root, "ds")
    ktk_appends(root, {}, 50)  # the state of the latency benchmark
    print(f"cProfile of {commits} local appends (ktk-arrow, 51 files in the dataset)")
    print(profile_appends(root, [small_table(100 + i) for i in range(commits)], 15))
    print()
    if partitions:
        root = str(workdir / "ktk-profile-large")
        table = pa.table(
            {"part": [f"p{i:06d}" for i in range(partitions)], "x": np.arange(partitions)}
        )
        ka.write_dataset(table, root, "ds", partition_on=["part"])
        appends = [pa.table({"part": [f"p{i:06d}"], "x": [i]}) for i in range(3)]
        print(f"cProfile of 3 local appends to {partitions:,} partitions (ktk-arrow)")
        print(profile_appends(root, appends, 15))
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=50, help="appends per latency median")
    parser.add_argument("--planning-at", type=int, nargs="*", default=[1, 20, 100])
    parser.add_argument("--partitions", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--budget", type=float, default=300, help="seconds per partition size")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto server sections")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of local appends")
    parser.add_argument(
        "--profile-partitions", type=int, default=10_000, help="also profile at this size (0: no)"
    )
    args = parser.parse_args()

    import deltalake

    versions = f"deltalake {deltalake.__version__}, pyarrow {pa.__version__}"
    print(f"ktk-arrow {ka.__version__}, {versions}, {os.cpu_count()} cores")
    workdir = Path(tempfile.mkdtemp(prefix="ktk-commit-bench-"))
    try:
        header = ["case", "ktk-arrow", "deltalake", "ratio (ours/peer)"]
        rows = local_latency(workdir, args.commits)
        planning: list[list[str]] = []
        if not args.no_s3:
            latency, planning = s3_sections(workdir, args.commits, args.planning_at)
            rows += latency
        size = small_table(0).num_rows
        print(f"Small append ({size} rows, one file, unpartitioned), {args.commits} commits")
        print_table(header, rows)
        if planning:
            print("Planning a read on S3 (moto): ka.dataset() vs DeltaTable().to_pyarrow_dataset()")
            print_table(header, planning)
        if args.partitions:
            print("ktk-arrow at many partitions (one file each), local disk")
            print_table(
                ["partitions", "view", "append median", "of which commit", "planning", "create"],
                partition_scaling(workdir, args.partitions, args.budget),
            )
        if args.profile:
            profile_sections(workdir, args.commits, args.profile_partitions)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
