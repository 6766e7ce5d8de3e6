"""Metadata scaling, side by side: ktk-arrow vs plateau vs deltalake, in one run.

All on local disk in a temporary directory (section 8 also on S3, a moto
server on loopback, with ``--s3``):

1. build a dataset of N single-file partitions (column ``p``), a
   high-cardinality ``customer`` (secondary index in ktk-arrow and plateau) and
   a ``value``: one write call per system (plateau in a subprocess, skipped at a
   scale where it needs longer than ``--plateau-budget``);
2. metadata bytes on storage (everything but the data files);
3. plan + read one partition, cold (a new dataset object each time);
4. an index point query ``customer == x`` (deltalake prunes by file statistics);
5. opening without a filter, then listing fragments and counting rows;
6. a one-file append: time, and the metadata bytes it writes and adds;
7. appends to a dataset with a high-cardinality index vs without one, in one
   process and as 6 processes x 8 appends at once;
8. the CPU of a cold index point lookup, in a fresh process;
9. planning a read of one partition of 1M files (synthetic metadata; only the
   partition read exists), in a fresh process: wall time and peak RSS;
10. a full read after 100 appends of 100 rows vs the same rows written at
    once, without and with auto-compaction.

Every section prints a table (case, ktk-arrow, peer, ratio ours/peer) with the
targets marked PASS/FAIL; ``--json PATH`` writes every result.  A step that
raises is reported as an error for its case and the run goes on.

    python benchmarks/scale.py --quick            # 1k and 10k partitions, ~3 min on 2 cores
    python benchmarks/scale.py --json scale.json  # 10k and 100k partitions, 1M files
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import inspect
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import ktk_arrow as ka
from _util import timed
from commit import Moto, print_table

UUID = "ds"
TABLE = "table"
KIB, MIB, GIB = 1024, 1024**2, 1024**3
#: a measurement whose first (warm-up) run takes longer than this is run only once more,
#: one ten times longer not again
SLOW_S = 1.0

SECTIONS = {
    1: "Build: N single-file partitions, one write call per system",
    2: "Metadata on storage (all but the data files)",
    3: "Plan + read one partition (a new dataset object each time)",
    4: "Index point query: customer == x",
    5: "Open without a filter",
    6: "One-file append (median)",
    7: "Appends with a high-cardinality index vs without",
    8: "Cold index point lookup in a fresh process",
    9: "Planning one partition of 1M files (synthetic metadata), fresh process",
    10: "Full read after 100 appends of 100 rows vs the same rows written at once",
}


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    text: str
    check: Callable[[Result], bool | None]


def ratio_at_most(limit: float, what: str) -> Target:
    return Target(f"<= {limit:g}x {what}", lambda r: None if r.ratio is None else r.ratio <= limit)


def ours_at_most(limit: float, text: str) -> Target:
    return Target(text, lambda r: None if r.ours is None else r.ours <= limit)


@dataclass
class Result:
    section: int
    case: str
    peer: str = ""
    unit: str = "s"  # s, bytes or count
    ours: float | None = None
    theirs: float | None = None
    target: str = ""
    verdict: str = ""  # PASS, FAIL, ERROR, n/a or "" (no target)
    error: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.theirs is None or self.theirs <= 0:
            return None
        return self.ours / self.theirs


Measured = tuple[Any, str]  # (value or None, error text or "")


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def attempt(fn: Callable[[], Any]) -> Measured:
    """``(fn(), "")``, or ``(None, error)`` if it raises: one failing case never ends the run."""
    try:
        return fn(), ""
    except Exception as exc:
        if os.environ.get("KTK_SCALE_TRACEBACKS"):
            traceback.print_exc()
        return None, describe(exc)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        for limit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
            if abs(value) >= limit:
                return f"{value / limit:.1f} {name}"
        return f"{value:.0f} B"
    return f"{value:,.0f}"


class Bench:
    """Collects results, prints one table per section, keeps the JSON up to date."""

    def __init__(
        self, json_path: str | None, meta: dict[str, Any], titles: dict[int, str] | None = None
    ) -> None:
        self.titles = SECTIONS if titles is None else titles
        self.results: list[Result] = []
        self.notes: dict[int, list[str]] = {}
        self.json_path = json_path
        self.meta = meta

    def add(
        self,
        section: int,
        case: str,
        ours: Measured = (None, ""),
        theirs: Measured = (None, ""),
        *,
        peer: str = "",
        unit: str = "s",
        target: Target | None = None,
        note: str = "",
        **extra: Any,
    ) -> Result:
        errors = [f"{who}: {e}" for who, e in (("ktk-arrow", ours[1]), (peer, theirs[1])) if e]
        r = Result(
            section,
            case,
            peer,
            unit,
            ours[0],
            theirs[0],
            error="; ".join(errors),
            note=note,
            extra=extra,
        )
        if target is not None:
            r.target = target.text
            ok = target.check(r)
            r.verdict = ("ERROR" if r.error else "n/a") if ok is None else "PASS" if ok else "FAIL"
        self.results.append(r)
        shown = (
            f"{fmt(r.ours, unit)} vs {peer} {fmt(r.theirs, unit)}" if peer else fmt(r.ours, unit)
        )
        print(f"  [{section}] {case}: {shown} {r.verdict}{'  ' + r.error if r.error else ''}")
        sys.stdout.flush()
        return r

    def note(self, section: int, text: str) -> None:
        print(f"  [{section}] note: {text}")
        self.notes.setdefault(section, []).append(text)

    def print_section(self, section: int) -> None:
        rows = [r for r in self.results if r.section == section]
        if not rows and not self.notes.get(section):
            return
        print(f"\n{section}. {self.titles[section]}")
        table = []
        for r in rows:
            ratio = r.ratio
            table.append(
                [
                    r.case,
                    "ERROR" if r.ours is None and r.error else fmt(r.ours, r.unit),
                    f"{r.peer} {fmt(r.theirs, r.unit)}" if r.peer else "",
                    f"{ratio:.2f}x" if ratio is not None else "",
                    r.target,
                    r.verdict,
                ]
            )
        if table:
            print_table(["case", "ktk-arrow", "peer", "ratio (ours/peer)", "target", ""], table)
        for r in rows:
            if r.error:
                print(f"  error in {r.case!r}: {r.error}")
            if r.note:
                print(f"  {r.case}: {r.note}")
        for text in self.notes.get(section, []):
            print(f"  note: {text}")
        sys.stdout.flush()
        self.save()

    def summary(self) -> None:
        judged = sorted((r for r in self.results if r.target), key=lambda r: r.section)
        if not judged:
            return
        print("\nTargets")
        print_table(
            ["case", "section", "ktk-arrow", "ratio", "target", ""],
            [
                [
                    r.case,
                    str(r.section),
                    fmt(r.ours, r.unit),
                    f"{r.ratio:.2f}x" if r.ratio is not None else "",
                    r.target,
                    r.verdict,
                ]
                for r in judged
            ],
        )
        counts = {v: sum(r.verdict == v for r in judged) for v in ("PASS", "FAIL", "ERROR", "n/a")}
        print(", ".join(f"{n} {v}" for v, n in counts.items() if n))

    def elapsed(self, what: str, since: float) -> None:
        seconds = time.perf_counter() - since
        self.meta.setdefault("elapsed_s", {})[what] = round(seconds, 1)
        print(f"  ({what}: {seconds:.0f} s)")
        self.save()

    def save(self) -> None:
        if not self.json_path:
            return
        payload = {
            "meta": self.meta,
            "results": [
                {**dataclasses.asdict(r), "ratio": r.ratio, "section_title": self.titles[r.section]}
                for r in self.results
            ],
            "notes": {str(k): v for k, v in self.notes.items()},
        }
        tmp = f"{self.json_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        os.replace(tmp, self.json_path)


# -- measuring --------------------------------------------------------------------------


def num_rows(out: Any) -> int:
    if isinstance(out, (pa.Table, pd.DataFrame)):
        return len(out)
    return int(out)


def timing(fn: Callable[[], Any], repeat: int, rows: int | None = None) -> Measured:
    """Median wall time of ``fn`` (after a first run that checks its row count)."""

    def run() -> float:
        start = time.perf_counter()
        out = fn()
        first = time.perf_counter() - start
        if rows is not None and num_rows(out) != rows:
            raise AssertionError(f"wrong result: expected {rows:,} rows, got {num_rows(out):,}")
        if first > 10 * SLOW_S or repeat <= 1:
            return first
        if first > SLOW_S:  # the first run was the warm-up: one more
            return _timed_once(fn)
        # fast cases get more runs (up to ~0.3 s of them): a steadier median
        return timed(fn, max(repeat, min(15, int(0.3 / max(first, 1e-3)))))

    return attempt(run)


def timing_on(
    setup: Callable[[], Any], op: Callable[[Any], Any], repeat: int, expect: int | None = None
) -> Measured:
    """Median time of ``op(setup())`` without the time of ``setup``."""

    def run() -> float:
        times = []
        for _ in range(repeat):
            obj = setup()
            start = time.perf_counter()
            out = op(obj)
            times.append(time.perf_counter() - start)
            if expect is not None and num_rows(out) != expect:
                raise AssertionError(f"wrong result: expected {expect:,}, got {num_rows(out):,}")
            if times[-1] > SLOW_S:
                break
        return statistics.median(times)

    return attempt(run)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def run_child(code: str, args: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"child exited with {proc.returncode}: {tail}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_children(code: str, args: dict[str, Any], repeat: int, timeout: float = 900) -> dict:
    """``run_child`` ``repeat`` times: the median of every number, ``runs`` the raw results."""
    runs = [run_child(code, args, timeout) for _ in range(max(repeat, 1))]
    out: dict[str, Any] = {"runs": runs}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def _auto_compact_kwargs() -> dict[str, Any] | None:
    """The ``write_dataset`` kwargs that turn auto-compaction on; None if it has none."""
    params = inspect.signature(ka.write_dataset).parameters
    for name in ("auto_compact", "auto_compaction", "compact"):
        if name in params:
            return {name: True}
    return None


# -- data -------------------------------------------------------------------------------


def scale_frame(n: int, rows_per_part: int, seed: int = 0) -> pd.DataFrame:
    """``n`` partitions of ``rows_per_part`` rows; ``customer`` is unique (positive)."""
    rng = np.random.default_rng(seed)
    rows = n * rows_per_part
    return pd.DataFrame(
        {
            "p": np.arange(rows, dtype="int64") % n,
            "customer": rng.permutation(rows).astype("int64") * 3 + 1,
            "value": rng.random(rows),
        }
    )


def append_frame(partition: int, rows: int, seed: int) -> pd.DataFrame:
    """One file's worth for partition ``partition``; negative customers never collide."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "p": np.full(rows, partition, dtype="int64"),
            "customer": -(np.arange(rows, dtype="int64") + 1 + seed * rows),
            "value": rng.random(rows),
        }
    )


def index_table(rows: int, distinct: int, seed: int) -> pa.Table:
    """Unpartitioned rows with ``customer`` drawn from ``distinct`` values."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "customer": rng.integers(0, distinct, rows, dtype="int64"),
            "value": rng.random(rows),
        }
    )


def plateau_store(root: str) -> Callable[[], Any]:
    """plateau's store factory on a directory (as tests/test_plateau_compat.py builds it)."""
    from minimalkv import get_store_from_url

    return functools.partial(get_store_from_url, f"hfs://{root}")


# -- storage walks ----------------------------------------------------------------------

Listing = dict[str, tuple[int, int, int]]  # relative path -> (size, mtime_ns, inode)


def walk(root: str, prune_partitions: bool = False) -> Listing:
    """Every file under ``root``; ``prune_partitions`` skips ``col=value`` directories."""
    out: Listing = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not (prune_partitions and "=" in entry.name):
                        stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def is_metadata(system: str, rel: str) -> bool:
    """Whether a file is metadata: all but the data files."""
    if system == "deltalake":
        return rel.startswith("_delta_log/")
    parts = rel.split("/")
    is_data = (
        len(parts) >= 3
        and parts[0] == UUID
        and parts[1] == TABLE
        and rel.endswith(".parquet")
        and not any(p.startswith("_") for p in parts[2:])
    )
    return not is_data


def metadata_group(rel: str) -> str:
    """Where a ktk-arrow/plateau metadata file belongs, for the breakdown."""
    parts = rel.split("/")
    if len(parts) == 1:
        return "view" if rel.startswith(f"{UUID}.") else rel
    if parts[1] == "_ktk" and len(parts) > 3:
        return "/".join(parts[1:3])
    if parts[1] == TABLE:
        return f"{TABLE}/{'/'.join(parts[2:]) if len(parts) == 3 else '...'}"
    return parts[1]


def metadata_bytes(system: str, listing: Listing) -> int:
    return sum(size for rel, (size, _, _) in listing.items() if is_metadata(system, rel))


def written_bytes(system: str, before: Listing, after: Listing) -> int:
    """Bytes of the metadata files created or rewritten between two listings."""
    return sum(
        stat[0]
        for rel, stat in after.items()
        if is_metadata(system, rel) and before.get(rel) != stat
    )


# -- sections 1-6: per scale -------------------------------------------------------------


def _plateau_build(root: str, n: int, rows_per_part: int, out: Any) -> None:
    """Subprocess: plateau's one write call (so it can be stopped at the budget)."""
    warnings.simplefilter("ignore")
    try:
        from plateau.io.eager import store_dataframes_as_dataset

        df = scale_frame(n, rows_per_part)
        start = time.perf_counter()
        store_dataframes_as_dataset(
            store=plateau_store(root),
            dataset_uuid=UUID,
            dfs=[df],
            partition_on=["p"],
            secondary_indices=["customer"],
        )
        out.put(("ok", time.perf_counter() - start))
    except Exception as exc:
        out.put(("error", describe(exc)))


def build_plateau(root: str, n: int, rows_per_part: int, budget: float) -> tuple[Measured, bool]:
    """``((seconds, error), timed_out)``."""
    os.makedirs(root, exist_ok=True)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_plateau_build, args=(root, n, rows_per_part, out))
    proc.start()
    try:
        status, value = out.get(timeout=budget)
    except queue_module.Empty:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        proc.join()
        return (None, f"over the {budget:.0f} s budget"), True
    proc.join()
    return ((value, "") if status == "ok" else (None, value)), False


@dataclass
class Scale:
    n: int
    rows_per_part: int
    roots: dict[str, str]
    ok: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.n * self.rows_per_part


def scale_sections(b: Bench, args: argparse.Namespace, workdir: Path, n: int, state: dict) -> None:
    label = f"{n:,} parts"
    rpp = args.rows_per_partition
    s = Scale(n, rpp, {k: str(workdir / f"{k}-{n}") for k in ("ktk", "plateau", "deltalake")})
    df = scale_frame(n, rpp)

    # 1. build
    print(f"\n== {n:,} partitions: building ({s.rows:,} rows)")
    ktk_build = attempt(
        lambda: _timed_once(
            lambda: ka.write_dataset(
                df, s.roots["ktk"], UUID, partition_on=["p"], secondary_indices=["customer"]
            )
        )
    )
    s.ok["ktk"] = not ktk_build[1]
    limit = state.get("plateau_limit")
    if limit is not None and n >= limit:
        plateau_build: Measured = (None, "")
        s.skipped["plateau"] = f"skipped: plateau's build went over budget at {limit:,}"
    else:
        plateau_build, timed_out = build_plateau(s.roots["plateau"], n, rpp, args.plateau_budget)
        if timed_out:
            state["plateau_limit"] = n
            s.skipped["plateau"] = f"skipped: build over the {args.plateau_budget:.0f} s budget"
            plateau_build = (None, "")
    s.ok["plateau"] = "plateau" not in s.skipped and not plateau_build[1]
    table = pa.Table.from_pandas(df, preserve_index=False)
    delta_build = attempt(lambda: _timed_once(lambda: _delta_write(s.roots["deltalake"], table)))
    s.ok["deltalake"] = not delta_build[1]
    if "plateau" in s.skipped:
        b.note(1, f"{label}: plateau {s.skipped['plateau']}")
    b.add(1, f"{label}: build", ktk_build, plateau_build, peer="plateau")
    b.add(1, f"{label}: build", ktk_build, delta_build, peer="deltalake")

    def when(system: str, fn: Callable[[], Any]) -> Callable[[], Any] | None:
        return fn if s.ok.get(system) else None

    # 2. metadata on storage
    listings = {k: walk(r) for k, r in s.roots.items() if s.ok.get(k)}
    sizes = {k: metadata_bytes(k, v) for k, v in listings.items()}
    for system, listing in listings.items():
        data = [r for r in listing if not is_metadata(system, r)]
        if len(data) != n:
            b.note(2, f"{label}: {system} has {len(data):,} data files, expected {n:,}")
        if system != "deltalake":
            groups: dict[str, int] = {}
            for rel, (size, _, _) in listing.items():
                if is_metadata(system, rel):
                    groups[metadata_group(rel)] = groups.get(metadata_group(rel), 0) + size
            parts = ", ".join(f"{g} {fmt(v, 'bytes')}" for g, v in sorted(groups.items()))
            b.note(2, f"{label}: {system} metadata: {parts}")
    ours = _have(sizes, "ktk", s)
    b.add(
        2,
        f"{label}: metadata bytes",
        ours,
        _have(sizes, "plateau", s),
        peer="plateau",
        unit="bytes",
        target=ratio_at_most(1, "plateau"),
    )
    b.add(
        2,
        f"{label}: metadata bytes",
        ours,
        _have(sizes, "deltalake", s),
        peer="deltalake",
        unit="bytes",
    )

    # 3. plan + read one partition
    v = n // 2
    part_pred = [[("p", "==", v)]]
    repeat = args.repeat
    ktk_root, pl_root, dl_root = s.roots["ktk"], s.roots["plateau"], s.roots["deltalake"]
    from ktk_arrow.io import eager

    ours = _run(
        when("ktk", lambda: ka.dataset(ktk_root, UUID, filter=part_pred).to_table()), repeat, rpp
    )
    facade = _run(
        when("ktk", lambda: eager.read_table(UUID, ktk_root, predicates=part_pred)), repeat, rpp
    )
    pl = _run(when("plateau", lambda: _plateau_read(pl_root, part_pred)), repeat, rpp)
    dl = _run(when("deltalake", lambda: _delta_partition(dl_root, v)), repeat, rpp)
    target = ratio_at_most(0.1, "plateau")
    pl = _skip(pl, s, "plateau")
    b.add(3, f"{label}: ka.dataset(filter).to_table()", ours, pl, peer="plateau", target=target)
    b.add(3, f"{label}: io.eager.read_table", facade, pl, peer="plateau", target=target)
    b.add(3, f"{label}: ka.dataset(filter).to_table()", ours, dl, peer="deltalake")

    # 4. index point query
    x = int(df.customer.iloc[(n * rpp) // 3])
    idx_pred = [[("customer", "==", x)]]
    ours = _run(
        when("ktk", lambda: ka.dataset(ktk_root, UUID, filter=idx_pred).to_table()), repeat, 1
    )
    facade = _run(
        when("ktk", lambda: eager.read_table(UUID, ktk_root, predicates=idx_pred)), repeat, 1
    )
    pl = _skip(
        _run(when("plateau", lambda: _plateau_read(pl_root, idx_pred)), repeat, 1), s, "plateau"
    )
    dl = _run(when("deltalake", lambda: _delta_filter(dl_root, "customer", x)), repeat, 1)
    b.add(4, f"{label}: ka.dataset(filter).to_table()", ours, pl, peer="plateau", target=target)
    b.add(4, f"{label}: io.eager.read_table", facade, pl, peer="plateau", target=target)
    b.add(4, f"{label}: ka.dataset(filter).to_table()", ours, dl, peer="deltalake")

    # 5. open without a filter
    def open_ktk() -> Any:
        return ka.dataset(ktk_root, UUID)

    def open_delta() -> Any:
        from deltalake import DeltaTable

        return DeltaTable(dl_root).to_pyarrow_dataset()

    ours = _run(when("ktk", open_ktk), repeat)
    pl = _skip(_run(when("plateau", lambda: _plateau_dispatch(pl_root)), repeat), s, "plateau")
    dl = _run(when("deltalake", open_delta), repeat)
    b.add(
        5,
        f"{label}: open (ktk: ka.dataset, plateau: dispatch_metapartitions)",
        ours,
        pl,
        peer="plateau",
        target=ours_at_most(0.5, "<= 0.5 s"),
    )
    b.add(5, f"{label}: open (delta: to_pyarrow_dataset)", ours, dl, peer="deltalake")

    def fragments(d: Any) -> int:
        return len(list(d.get_fragments()))

    b.add(
        5,
        f"{label}: len(list(get_fragments())) of an open dataset",
        _run_on(when("ktk", open_ktk), fragments, repeat, n),
        _run_on(when("deltalake", open_delta), fragments, repeat, n),
        peer="deltalake",
    )
    b.add(
        5,
        f"{label}: count_rows() of an open dataset",
        _run_on(when("ktk", open_ktk), lambda d: d.count_rows(), repeat, s.rows),
        _run_on(when("deltalake", open_delta), lambda d: d.count_rows(), repeat, s.rows),
        peer="deltalake",
    )

    # 6. one-file append
    appenders: dict[str, Callable[[pd.DataFrame], Any]] = {
        "ktk": lambda f: ka.write_dataset(
            f, ktk_root, UUID, mode="append", partition_on=["p"], secondary_indices=["customer"]
        ),
        "plateau": lambda f: _plateau_update(pl_root, f),
        "deltalake": lambda f: _delta_write(
            dl_root, pa.Table.from_pandas(f, preserve_index=False), mode="append"
        ),
    }
    stats: dict[str, dict[str, Measured]] = {}
    for system, append in appenders.items():
        if not s.ok.get(system):
            continue
        stats[system] = _appends(system, s.roots[system], append, n // 3, args.appends)
    for key in ("time", "written", "growth"):
        for peer in ("deltalake", "plateau"):
            theirs = _skip(stats.get(peer, {}).get(key, (None, "")), s, peer)
            tgt = None
            if peer == "deltalake" and key == "time":
                tgt = ratio_at_most(0.5, "deltalake")
            elif peer == "deltalake" and key == "written":
                tgt = ours_at_most(64 * KIB, "<= 64 KiB written")
            b.add(
                6,
                f"{label}: append 100 rows, "
                + {
                    "time": "time",
                    "written": "metadata bytes written",
                    "growth": "metadata growth on storage",
                }[key],
                stats.get("ktk", {}).get(key, (None, "")),
                theirs,
                peer=peer,
                unit="s" if key == "time" else "bytes",
                target=tgt,
            )
    for root in s.roots.values():
        shutil.rmtree(root, ignore_errors=True)


def _timed_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _have(values: dict[str, int], system: str, s: Scale) -> Measured:
    if system in values:
        return values[system], ""
    return None, "" if system in s.skipped else "not built"


def _skip(m: Measured, s: Scale, system: str) -> Measured:
    """A skipped system shows no error (the note says why)."""
    return (None, "") if system in s.skipped else m


def _run(fn: Callable[[], Any] | None, repeat: int, rows: int | None = None) -> Measured:
    if fn is None:
        return None, "dataset not built"
    return timing(fn, repeat, rows)


def _run_on(
    setup: Callable[[], Any] | None, op: Callable[[Any], Any], repeat: int, expect: int
) -> Measured:
    if setup is None:
        return None, "dataset not built"
    return timing_on(setup, op, repeat, expect)


def _appends(
    system: str, root: str, append: Callable[[pd.DataFrame], Any], partition: int, count: int
) -> dict[str, Measured]:
    times, written, growth = [], [], []
    try:
        for i in range(count):
            frame = append_frame(partition, 100, seed=1000 + i)
            before = walk(root, prune_partitions=True)
            start = time.perf_counter()
            with quiet():
                append(frame)
            times.append(time.perf_counter() - start)
            after = walk(root, prune_partitions=True)
            written.append(written_bytes(system, before, after))
            growth.append(metadata_bytes(system, after) - metadata_bytes(system, before))
    except Exception as exc:
        err = describe(exc)
        return {"time": (None, err), "written": (None, err), "growth": (None, err)}
    return {
        "time": (statistics.median(times), ""),
        "written": (statistics.median(written), ""),
        "growth": (statistics.median(growth), ""),
    }


def _delta_write(path: str, table: pa.Table, mode: str = "error") -> None:
    from deltalake import write_deltalake

    write_deltalake(path, table, partition_by=["p"], mode=mode)  # type: ignore[arg-type]


def _delta_partition(path: str, value: Any) -> pa.Table:
    from deltalake import DeltaTable

    with quiet():  # `partitions=` is deprecated for `filters=`; it still prunes the file list
        return DeltaTable(path).to_pyarrow_table(partitions=[("p", "=", str(value))])


def _delta_filter(path: str, column: str, value: Any) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(path).to_pyarrow_table(filters=[(column, "=", value)])


def _plateau_read(root: str, predicates: Any) -> pd.DataFrame:
    from plateau.io.eager import read_table

    with quiet():
        return read_table(UUID, plateau_store(root), predicates=predicates)


def _plateau_dispatch(root: str) -> int:
    from plateau.io_components.read import dispatch_metapartitions

    with quiet():
        return len(list(dispatch_metapartitions(UUID, plateau_store(root))))


def _plateau_update(root: str, frame: pd.DataFrame) -> None:
    from plateau.io.eager import update_dataset_from_dataframes

    update_dataset_from_dataframes(
        [frame],
        store=plateau_store(root),
        dataset_uuid=UUID,
        partition_on=["p"],
        secondary_indices=["customer"],
    )


# -- 7. indexed vs unindexed appends ----------------------------------------------------


def _append_worker(
    root: str,
    indexed: bool,
    appends: int,
    rows: int,
    distinct: int,
    seed: int,
    barrier: Any,
    out: Any,
) -> None:
    """Subprocess: ``appends`` appends of ``rows`` rows, started together with the others."""
    tables = [index_table(rows, distinct, seed * 1000 + i) for i in range(appends)]
    kwargs: dict[str, Any] = {"secondary_indices": ["customer"]} if indexed else {}
    errors = []
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        out.put({"seed": seed, "errors": ["barrier broken"], "elapsed": None})
        return
    start = time.perf_counter()
    for t in tables:
        try:
            ka.write_dataset(t, root, UUID, mode="append", **kwargs)
        except Exception as exc:
            errors.append(describe(exc))
    out.put({"seed": seed, "errors": errors, "elapsed": time.perf_counter() - start})


def concurrent_appends(
    root: str, indexed: bool, procs: int, appends: int, rows: int, distinct: int
) -> tuple[float, list[str]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    workers = [
        ctx.Process(
            target=_append_worker,
            args=(root, indexed, appends, rows, distinct, 100 + i, barrier, out),
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    errors: list[str] = []
    try:
        barrier.wait(timeout=300)
        start = time.perf_counter()
        reports: list[dict[str, Any]] = []
        while len(reports) < procs:
            try:
                reports.append(out.get(timeout=1))
            except queue_module.Empty:
                dead = [w for w in workers if w.exitcode is not None]
                if len(dead) > len(reports) and out.empty():
                    codes = sorted({w.exitcode for w in dead})
                    raise RuntimeError(
                        f"{len(dead) - len(reports)} writer process(es) died (exit {codes})"
                    ) from None
                if time.perf_counter() - start > 3600:
                    raise TimeoutError("concurrent appends took over an hour") from None
        wall = time.perf_counter() - start
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.terminate()
                w.join()
    for r in reports:
        errors += r["errors"]
    return wall, errors


def index_sections(b: Bench, args: argparse.Namespace, workdir: Path) -> None:
    rows, distinct, add = args.index_rows, args.index_distinct, args.index_append_rows
    label = f"{rows:,} rows, {distinct:,} distinct"
    roots = {True: str(workdir / "idx-on"), False: str(workdir / "idx-off")}
    chunks = 20
    # the same rows in both: every value once, then random ones, in ``chunks`` files
    rng = np.random.default_rng(7)
    customers = np.concatenate(
        [np.arange(distinct, dtype="int64"), rng.integers(0, distinct, max(rows - distinct, 0))]
    )[:rows]
    rng.shuffle(customers)
    table = pa.table({"customer": customers, "value": rng.random(rows)})
    step = -(-rows // chunks)
    parts = [table.slice(i, step) for i in range(0, rows, step)]
    built: dict[bool, str] = {}
    for indexed, root in roots.items():
        kwargs: dict[str, Any] = {"secondary_indices": ["customer"]} if indexed else {}
        built[indexed] = attempt(
            lambda root=root, kwargs=kwargs: ka.write_dataset(parts, root, UUID, **kwargs)
        )[1]
    for indexed, err in built.items():
        if err:
            b.note(7, f"building the {'indexed' if indexed else 'unindexed'} dataset: {err}")
    times: dict[bool, list[float]] = {True: [], False: []}
    errs: dict[bool, str] = {True: built[True], False: built[False]}
    for i in range(args.appends):  # interleaved, so drift hits both alike
        for indexed in (True, False):
            if errs[indexed]:
                continue
            t = index_table(add, distinct, seed=50 + i)
            kwargs = {"secondary_indices": ["customer"]} if indexed else {}
            m = attempt(
                lambda t=t, indexed=indexed, kwargs=kwargs: _timed_once(
                    lambda: ka.write_dataset(t, roots[indexed], UUID, mode="append", **kwargs)
                )
            )
            if m[1]:
                errs[indexed] = m[1]
            else:
                times[indexed].append(m[0])

    def med(indexed: bool) -> Measured:
        if errs[indexed]:
            return None, errs[indexed]
        return statistics.median(times[indexed]), ""

    b.add(
        7,
        f"{label}: append {add:,} rows, indexed vs not",
        med(True),
        med(False),
        peer="no index",
        target=ratio_at_most(1.5, "unindexed"),
    )

    procs, per = args.procs, args.proc_appends
    walls: dict[bool, Measured] = {}
    for indexed in (True, False):
        if built[indexed]:
            walls[indexed] = (None, built[indexed])
            continue
        root = roots[indexed]
        before = attempt(lambda root=root: ka.dataset(root, UUID).count_rows())
        res = attempt(
            lambda root=root, indexed=indexed: concurrent_appends(
                root, indexed, procs, per, add, distinct
            )
        )
        if res[1]:
            walls[indexed] = (None, res[1])
            continue
        wall, errors = res[0]
        walls[indexed] = (wall, "")
        kind = "indexed" if indexed else "unindexed"
        if errors:
            b.note(7, f"{kind}: {len(errors)} of {procs * per} appends failed: {errors[0]}")
        after = attempt(lambda root=root: ka.dataset(root, UUID).count_rows())
        expected = (procs * per - len(errors)) * add
        if before[0] is not None and after[0] is not None and after[0] - before[0] != expected:
            b.note(
                7,
                f"{kind}: WRONG ROW COUNT after concurrent appends: +{after[0] - before[0]:,}, "
                f"expected +{expected:,}",
            )
    b.add(
        7,
        f"{procs} processes x {per} appends of {add:,} rows, wall, indexed vs not",
        walls[True],
        walls[False],
        peer="no index",
        target=ratio_at_most(2, "unindexed"),
    )
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


# -- 8. cold index lookup ---------------------------------------------------------------

#: what both fresh-process children start with: their arguments, peak RSS, the filter
_CHILD_PRELUDE = r"""
import json, resource, sys, time
a = json.loads(sys.argv[1])
def peak():
    # VmHWM: ru_maxrss would carry over the forking parent's peak across exec
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

pred = [[tuple(t) for t in conj] for conj in a["filter"]]
"""

COLD_KTK = (
    _CHILD_PRELUDE
    + r"""w0, c0 = time.perf_counter(), time.process_time()
import ktk_arrow as ka
for name in a["preload"]:
    __import__(name)
w1, c1 = time.perf_counter(), time.process_time()
opts = a["options"]
rows = ka.dataset(a["url"], a["uuid"], filter=pred, storage_options=opts).to_table().num_rows
w2, c2 = time.perf_counter(), time.process_time()
again = ka.dataset(a["url"], a["uuid"], filter=pred, storage_options=opts).to_table()
w3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"import_wall": w1 - w0, "import_cpu": c1 - c0, "wall": w2 - w1, "cpu": c2 - c1,
                  "warm_wall": w3 - w2, "warm_cpu": c3 - c2, "rows": rows,
                  "rss": peak()}))
"""
)

COLD_PLATEAU = r"""
import functools, json, resource, sys, time, warnings
warnings.simplefilter("ignore")
a = json.loads(sys.argv[1])
pred = [[tuple(t) for t in conj] for conj in a["filter"]]
w0, c0 = time.perf_counter(), time.process_time()
import minimalkv, pandas, pyarrow, pyarrow.parquet
from plateau.io.eager import read_table
w1, c1 = time.perf_counter(), time.process_time()
store = functools.partial(minimalkv.get_store_from_url, a["url"])
rows = len(read_table(a["uuid"], store, predicates=pred))
w2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_wall": w1 - w0, "import_cpu": c1 - c0, "wall": w2 - w1, "cpu": c2 - c1,
                  "rows": rows}))
"""

#: what ``ktk_arrow`` loads on first use; preloaded, the lookup's CPU is its own
PRELOAD = [
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "pandas",
    "ktk_arrow.arrow",
    "ktk_arrow.planning",
    "ktk_arrow.commit",
]


def cold_sections(b: Bench, args: argparse.Namespace, workdir: Path) -> None:
    distinct = args.cold_distinct
    label = f"{distinct:,} distinct values, 64 files"
    rng = np.random.default_rng(11)
    table = pa.table(
        {
            "p": np.arange(distinct, dtype="int64") % 64,
            "customer": rng.permutation(distinct).astype("int64"),
            "value": rng.random(distinct),
        }
    )
    x = int(table.column("customer")[distinct // 2].as_py())
    root = str(workdir / "cold")
    built = attempt(
        lambda: ka.write_dataset(
            table, root, UUID, partition_on=["p"], secondary_indices=["customer"]
        )
    )
    spec = {"url": root, "uuid": UUID, "filter": [[["customer", "==", x]]], "options": None}

    def ktk(preload: list[str], **over: Any) -> dict[str, Any]:
        if built[1]:
            raise RuntimeError(f"dataset not built: {built[1]}")
        res = run_children(COLD_KTK, {**spec, **over, "preload": preload}, args.repeat)
        if res["rows"] != 1:
            raise AssertionError(f"wrong result: expected 1 row, got {res['rows']}")
        return res

    def plateau() -> dict[str, Any]:
        # plateau reads the kartothek view ktk-arrow keeps
        res = run_children(COLD_PLATEAU, {**spec, "url": f"hfs://{root}"}, args.repeat)
        if res["rows"] != 1:
            raise AssertionError(f"wrong result: expected 1 row, got {res['rows']}")
        return res

    warm, cold_raw, theirs = (
        attempt(lambda: ktk(PRELOAD)),
        attempt(lambda: ktk([])),
        attempt(plateau),
    )

    def pick(m: Measured, key: str) -> Measured:
        return (m[0][key], "") if m[0] is not None else (None, m[1])

    target = ours_at_most(0.05, "<= 50 ms CPU")
    b.add(
        8,
        f"local, {label}: first query CPU (deps preloaded)",
        pick(warm, "cpu"),
        pick(theirs, "cpu"),
        peer="plateau",
        target=target,
        child=warm[0],
        peer_child=theirs[0],
    )
    b.add(
        8,
        f"local, {label}: first query wall (deps preloaded)",
        pick(warm, "wall"),
        pick(theirs, "wall"),
        peer="plateau",
    )
    b.add(8, f"local, {label}: first query CPU incl. lazy imports", pick(cold_raw, "cpu"))
    b.add(8, f"local, {label}: second query CPU, same process", pick(warm, "warm_cpu"))
    b.add(
        8,
        f"local, {label}: import + preload CPU",
        pick(warm, "import_cpu"),
        pick(theirs, "import_cpu"),
        peer="plateau",
    )
    if args.s3:
        moto = None
        try:
            moto = Moto(workdir)
            url, options = "s3://bench/cold", moto.ktk_options()
            put = attempt(
                lambda: ka.write_dataset(
                    table,
                    url,
                    UUID,
                    partition_on=["p"],
                    secondary_indices=["customer"],
                    storage_options=options,
                )
            )
            res = (
                attempt(
                    lambda: ktk(
                        [*PRELOAD, "s3fs", "botocore", "aiobotocore"], url=url, options=options
                    )
                )
                if not put[1]
                else (None, put[1])
            )
            b.add(
                8,
                f"S3 (moto), {label}: first query CPU (deps preloaded)",
                pick(res, "cpu"),
                target=target,
                child=res[0],
            )
            b.add(8, f"S3 (moto), {label}: first query wall (deps preloaded)", pick(res, "wall"))
        except Exception as exc:
            b.add(8, f"S3 (moto), {label}: first query CPU", (None, describe(exc)), target=target)
        finally:
            if moto is not None:
                moto.stop()
    shutil.rmtree(root, ignore_errors=True)


# -- 9. 1M files ------------------------------------------------------------------------

MILLION_CHILD = (
    _CHILD_PRELUDE
    + r"""w0 = time.perf_counter()
import ktk_arrow as ka
for name in a["preload"]:
    __import__(name)
w1 = time.perf_counter()
rss0 = peak()
d = ka.dataset(a["url"], a["uuid"], filter=pred)
w2 = time.perf_counter()
rss1 = peak()
rows = d.to_table().num_rows
w3 = time.perf_counter()
rss2 = peak()
print(json.dumps({"import": w1 - w0, "plan": w2 - w1, "read": w3 - w2, "rows": rows,
                  "rss_imports": rss0, "rss_plan": rss1, "rss": rss2,
                  "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
)


def synthesize(root: str, files: int, v: int, rows_per_file: int) -> dict[str, float]:
    """A dataset of ``files`` one-file partitions where only partition ``v`` exists on disk."""
    from ktk_arrow import commit as committer
    from ktk_arrow.commit import Change
    from ktk_arrow.spec import keys

    start = time.perf_counter()
    real = pa.table(
        {
            "p": np.full(rows_per_file, v, dtype="int64"),
            "customer": np.arange(rows_per_file, dtype="int64"),
            "value": np.linspace(0, 1, rows_per_file),
        }
    )
    # the real file, written by the library itself: the right key, size and statistics
    ka.write_dataset(real, root, UUID, partition_on=["p"])
    store = ka.resolve_store(root)
    meta = committer.load_latest(store, UUID)
    assert meta is not None
    entry = next(iter(meta.files.values()))
    table = getattr(meta, "table", TABLE)
    fakes = []
    for i in range(files):
        if i == v:
            continue
        label = f"p={i}/{i:016x}"
        fakes.append(dataclasses.replace(entry, label=label, key=keys.data_key(UUID, label, table)))
    made = time.perf_counter()
    committer.commit(
        store,
        UUID,
        Change(
            operation="append",
            add=fakes,
            schema=meta.schema,
            partition_keys=meta.partition_keys,
        ),
    )
    return {"entries": made - start, "commit": time.perf_counter() - made}


def million_section(b: Bench, args: argparse.Namespace, workdir: Path) -> None:
    files = args.million_files
    label = f"{files:,} files"
    root = str(workdir / "million")
    v = files // 2
    print(f"\n== {label}: synthesising metadata")
    built = attempt(lambda: synthesize(root, files, v, args.rows_per_partition))
    if built[1]:
        b.add(9, f"{label}: plan one partition", (None, f"synthesis: {built[1]}"))
        return
    b.note(
        9,
        f"synthesis: {built[0]['entries']:.1f} s building entries, "
        f"{built[0]['commit']:.1f} s committing them",
    )
    meta_size = attempt(lambda: metadata_bytes("ktk", walk(root)))
    spec = {"url": root, "uuid": UUID, "filter": [[["p", "==", v]]], "preload": PRELOAD}
    res = attempt(lambda: run_children(MILLION_CHILD, spec, args.repeat, timeout=1800))
    if res[0] is not None and res[0]["rows"] != args.rows_per_partition:
        res = (None, f"wrong result: expected {args.rows_per_partition} rows, got {res[0]['rows']}")

    def pick(key: str) -> Measured:
        return (res[0][key], "") if res[0] is not None else (None, res[1])

    b.add(
        9,
        f"{label}: ka.dataset(filter p == v), wall",
        pick("plan"),
        target=ours_at_most(1, "<= 1 s"),
        child=res[0],
    )
    b.add(9, f"{label}: peak RSS", pick("rss"), unit="bytes", target=ours_at_most(GIB, "<= 1 GiB"))
    b.add(9, f"{label}: RSS after imports (of the peak)", pick("rss_imports"), unit="bytes")
    b.add(9, f"{label}: then .to_table() of the partition", pick("read"))
    b.add(9, f"{label}: metadata bytes on storage", meta_size, unit="bytes")
    shutil.rmtree(root, ignore_errors=True)


# -- 10. read after many appends --------------------------------------------------------


def appends_section(b: Bench, args: argparse.Namespace, workdir: Path) -> None:
    count, rows = 100, 100
    chunks = [index_table(rows, 10**6, seed=300 + i) for i in range(count)]
    whole = pa.concat_tables(chunks)
    total = whole.num_rows

    def build(root: str, extra: dict[str, Any]) -> None:
        ka.write_dataset(chunks[0], root, UUID, **extra)
        for t in chunks[1:]:
            ka.write_dataset(t, root, UUID, mode="append", **extra)

    def read(root: str) -> Measured:
        return timing(lambda: ka.dataset(root, UUID).to_table(), args.repeat, total)

    fresh_root, appended_root, compact_root = (
        str(workdir / f"reads-{k}") for k in ("fresh", "appended", "compacted")
    )
    delta_root = str(workdir / "reads-delta")
    fresh_built = attempt(lambda: ka.write_dataset(whole, fresh_root, UUID))
    fresh = read(fresh_root) if not fresh_built[1] else (None, fresh_built[1])
    app_built = attempt(lambda: build(appended_root, {}))
    appended = read(appended_root) if not app_built[1] else (None, app_built[1])
    label = f"{count} appends of {rows} rows"
    b.add(10, f"{label}: open + to_table()", appended, fresh, peer="written at once")

    kwargs = _auto_compact_kwargs()
    if kwargs is None:
        print("  auto-compaction: n/a")
        b.note(10, "auto-compaction: n/a (write_dataset takes no auto-compaction option)")
        b.add(
            10,
            f"{label}, auto-compaction: open + to_table()",
            (None, "auto-compaction: n/a"),
            fresh,
            peer="written at once",
            target=ratio_at_most(1.2, "written at once"),
        )
    else:
        b.note(10, f"auto-compaction via write_dataset(..., {kwargs})")
        comp_built = attempt(lambda: build(compact_root, kwargs))
        compacted = read(compact_root) if not comp_built[1] else (None, comp_built[1])
        files = attempt(lambda: len(list(ka.dataset(compact_root, UUID).get_fragments())))
        b.add(
            10,
            f"{label}, auto-compaction: open + to_table()",
            compacted,
            fresh,
            peer="written at once",
            target=ratio_at_most(1.2, "written at once"),
            note=f"{files[0]} files after the appends" if files[0] is not None else "",
        )

    def delta_build() -> None:
        from deltalake import write_deltalake

        write_deltalake(delta_root, chunks[0])
        for t in chunks[1:]:
            write_deltalake(delta_root, t, mode="append")

    def delta_read() -> pa.Table:
        from deltalake import DeltaTable

        return DeltaTable(delta_root).to_pyarrow_table()

    dl_built = attempt(delta_build)
    dl = timing(delta_read, args.repeat, total) if not dl_built[1] else (None, dl_built[1])
    b.add(10, f"{label}: open + to_table()", appended, dl, peer="deltalake after 100 appends")
    for root in (fresh_root, appended_root, compact_root, delta_root):
        shutil.rmtree(root, ignore_errors=True)


# -- main -------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def _sections(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _preload() -> None:
    """Import what the measured calls use, so that no first run pays for an import."""
    for name in (
        "minimalkv",
        "plateau.io.eager",
        "plateau.io_components.read",
        "deltalake",
        "ktk_arrow.arrow",
        "ktk_arrow.io.eager",
    ):
        importlib.import_module(name)


def _git_state() -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return {"commit": head, "src_modified": bool(dirty)}
    except OSError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scales, < 2 min")
    parser.add_argument("--partitions", type=_ints, default=None, help="default 10000,100000")
    parser.add_argument("--rows-per-partition", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    parser.add_argument(
        "--appends", type=int, default=None, help="appends per append median (default 5, quick 3)"
    )
    parser.add_argument("--plateau-budget", type=float, default=600, help="seconds per build")
    parser.add_argument("--index-rows", type=int, default=None, help="default 2M (quick 100k)")
    parser.add_argument("--index-distinct", type=int, default=None, help="default: half the rows")
    parser.add_argument("--index-append-rows", type=int, default=5_000)
    parser.add_argument("--procs", type=int, default=6)
    parser.add_argument("--proc-appends", type=int, default=8)
    parser.add_argument("--cold-distinct", type=int, default=None, help="default 2M (quick 200k)")
    parser.add_argument(
        "--million", action=argparse.BooleanOptionalAction, default=None, help="default: not quick"
    )
    parser.add_argument("--million-files", type=int, default=1_000_000)
    parser.add_argument(
        "--s3",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="section 8 on moto S3 too (default: not quick)",
    )
    parser.add_argument("--sections", type=_sections, default=set(SECTIONS), help="e.g. 1-6,9")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--workdir", default=None, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    quick = args.quick
    if args.partitions is None:
        args.partitions = [1_000, 10_000] if quick else [10_000, 100_000]
    if args.appends is None:
        args.appends = 3 if quick else 5
    if args.index_rows is None:
        args.index_rows = 100_000 if quick else 2_000_000
    if args.index_distinct is None:
        args.index_distinct = args.index_rows // 2
    if args.cold_distinct is None:
        args.cold_distinct = 200_000 if quick else 2_000_000
    if args.million is None:
        args.million = not quick
    if args.s3 is None:
        args.s3 = not quick
    if args.s3 and not (Path(sys.executable).parent / "moto_server").exists():
        print("no moto_server next to the interpreter: section 8 runs on local disk only")
        args.s3 = False

    import deltalake
    import plateau

    _preload()

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    versions = {
        "ktk_arrow": ka.__version__,
        "plateau": plateau.__version__,
        "deltalake": deltalake.__version__,
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "git": _git_state(),
        "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
    }
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + f", {os.cpu_count()} cores")
    if meta["git"].get("src_modified"):
        print("note: src/ has uncommitted changes; the numbers are of the working tree")
    b = Bench(args.json, meta)
    workdir = Path(tempfile.mkdtemp(prefix="ktk-scale-", dir=args.workdir))
    started = time.perf_counter()
    try:
        if args.sections & set(range(1, 7)):
            state: dict[str, Any] = {}
            for n in args.partitions:
                t0 = time.perf_counter()
                try:
                    scale_sections(b, args, workdir, n, state)
                except Exception as exc:  # a bug of the harness: report it, go on
                    b.add(1, f"{n:,} parts", (None, f"harness: {describe(exc)}"))
                    traceback.print_exc()
                b.elapsed(f"{n:,} partitions (sections 1-6)", t0)
            for section in range(1, 7):
                b.print_section(section)
        for section, run, enabled in (
            (7, index_sections, True),
            (8, cold_sections, True),
            (9, million_section, args.million),
            (10, appends_section, True),
        ):
            if section not in args.sections or not enabled:
                continue
            print(f"\n== section {section}: {SECTIONS[section]}")
            t0 = time.perf_counter()
            try:
                run(b, args, workdir)
            except Exception as exc:
                b.add(section, "section", (None, f"harness: {describe(exc)}"))
                traceback.print_exc()
            b.elapsed(f"section {section}", t0)
            b.print_section(section)
        b.summary()
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        if args.json:
            b.meta["seconds"] = time.perf_counter() - started
            b.save()
            print(f"results in {args.json}")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
