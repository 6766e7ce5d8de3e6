"""A randomized soak of the commit protocol: writers, compaction, expiry and gc running at
once, killed at random instants, through a network that loses answers; then every
retained version is checked against the writers' journals.

Used by ``tests/test_soak.py`` (bounded, in CI) and by hand for longer runs::

    python tests/soak.py run /tmp/soak-store --seconds 600 --workers 4

Each worker process appends lines to its own journal before and after every
operation (``start``; ``ok`` with the version, or ``failed`` with the error and
whether the commit may have happened).  A killed operation has only ``start``.
The check replays the retained history: version ``v`` must be version ``v-1``
plus exactly what the journal says the operation that made ``v`` did.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UUID = "soak"
PARTS = ("p0", "p1", "p2", "p3")
KEEP_LAST = 12
#: the protocol's assumption: a commit publishes within this (see docs/format.md)
EXPIRE_GRACE = dt.timedelta(seconds=15)
GC_GRACE = dt.timedelta(seconds=20)
WEIGHTS = {"append": 55, "overwrite": 15, "compact": 10, "expire": 8, "gc": 4, "read": 8}
#: errors after which the commit provably did not happen are fine; these never are
BUGS = ("CorruptMetadataError",)

Row = tuple[str, str, int]  # (op, part, i)


def rows_of(op: str, kind: str, part: str | None, n: int) -> list[Row]:
    """The rows an operation writes: derived from its id, so the check can recompute them."""
    rng = random.Random(op)
    return [(op, part if kind == "overwrite" else rng.choice(PARTS), i) for i in range(n)]


def _frame(rows: list[Row]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        {"part": [r[1] for r in rows], "op": [r[0] for r in rows], "i": [r[2] for r in rows]}
    )


# -- worker ---------------------------------------------------------------------------------


class Journal:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **entry: Any) -> None:
        os.write(self.fd, (json.dumps(entry) + "\n").encode())  # one write: whole lines


def worker(url: str, options: dict[str, Any], journal_path: str, seed: int, wid: str) -> None:
    import ktk_arrow as ka
    from ktk_arrow import commit
    from ktk_arrow.compact import compact

    store = ka.resolve_store(url, options)
    journal = Journal(journal_path)
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    for seq in range(10**9):
        kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        op = f"{wid}-{seq}"
        part = rng.choice(PARTS) if kind == "overwrite" else None
        n = rng.randint(1, 6)
        journal.write(op=op, phase="start", kind=kind, part=part, n=n)
        try:
            version, committed = _run(ka, commit, compact, store, kind, op, part, n)
        except Exception as exc:
            doubt = not commit.may_discard(exc)
            journal.write(
                op=op, phase="failed", error=type(exc).__name__, doubt=doubt, text=str(exc)[:300]
            )
            continue
        journal.write(op=op, phase="ok", version=version, committed=committed)


def _run(
    ka: Any,
    commit: Any,
    compact: Callable[..., Any],
    store: Any,
    kind: str,
    op: str,
    part: str | None,
    n: int,
) -> tuple[int | None, bool]:
    """Run one operation: the version it made (or saw) and whether it committed one."""
    if kind in ("append", "overwrite"):
        data = _frame(rows_of(op, kind, part, n))
        extra = {"mode": "append"}
        if kind == "overwrite":
            extra = {"mode": "overwrite", "delete_scope": [{"part": part}]}
        snap = ka.write_dataset(
            data, store, UUID, partition_on=["part"], metadata={"op": op}, **extra
        )
        return snap.version, True
    if kind == "compact":
        before = commit.load(store, UUID).version
        snap = compact(store, UUID, target_rows_per_file=10_000)
        return snap.version, snap.version != before and snap.operation == "compact"
    if kind == "expire":
        commit.expire_snapshots(store, UUID, keep_last=KEEP_LAST, grace_period=EXPIRE_GRACE)
    elif kind == "gc":
        commit.garbage_collect(store, UUID, grace_period=GC_GRACE, force=True)
    else:
        ka.dataset(store, UUID).to_table()
    return None, False


# -- harness ---------------------------------------------------------------------------------


@dataclass
class SoakRun:
    """Worker processes over one store, killed and restarted at random."""

    url: str
    options: dict[str, Any]
    journal_dir: Path
    seed: int
    workers: int = 3
    kills: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _next: int = 0

    def spawn(self) -> None:
        wid = f"w{self._next}"
        self._next += 1
        argv = [
            sys.executable,
            __file__,
            "worker",
            self.url,
            json.dumps(self.options),
            str(self.journal_dir / f"{wid}.jsonl"),
            str(self.seed * 1000 + self._next),
            wid,
        ]
        self.procs[wid] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def run(self, seconds: float) -> None:
        rng = random.Random(self.seed)
        for _ in range(self.workers):
            self.spawn()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(1.0, 3.0))
                for wid, proc in list(self.procs.items()):
                    if proc.poll() is not None:  # a worker must only ever die by our hand
                        raise AssertionError(f"worker {wid} exited with {proc.returncode}")
                victim = rng.choice(sorted(self.procs))
                self.procs.pop(victim).send_signal(signal.SIGKILL)
                self.kills += 1
                self.spawn()
        finally:
            for proc in self.procs.values():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)


# -- check -----------------------------------------------------------------------------------


@dataclass
class Op:
    kind: str
    part: str | None
    n: int
    outcome: str = "unknown"  # ok | failed | unknown (killed, or in doubt)
    version: int | None = None
    committed: bool = False
    error: str | None = None
    text: str = ""


def read_journals(journal_dir: Path) -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for path in sorted(journal_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.endswith("}"):
                continue  # a line cut short by SIGKILL
            entry = json.loads(line)
            if entry["phase"] == "start":
                ops[entry["op"]] = Op(entry["kind"], entry["part"], entry["n"])
            elif entry["phase"] == "ok":
                op = ops[entry["op"]]
                op.outcome, op.version, op.committed = "ok", entry["version"], entry["committed"]
            else:
                op = ops[entry["op"]]
                op.error, op.text = entry["error"], entry.get("text", "")
                op.outcome = "unknown" if entry["doubt"] else "failed"
    return ops


@dataclass
class Report:
    versions: list[int]
    ops: int
    committed_ok: int
    unknown: int
    failed: collections.Counter[str]
    rows: int
    examples: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.ops} operations, {self.committed_ok} acknowledged commits, versions "
            f"{self.versions[0]}..{self.versions[-1]} retained, {self.unknown} killed or in "
            f"doubt, failed: {dict(self.failed)}, {self.rows} rows; e.g. {self.examples}"
        )


def check(store: Any, journal_dir: Path) -> Report:
    """Replay the retained history against the journals; raise AssertionError on any loss."""
    import ktk_arrow as ka
    from ktk_arrow import commit

    ops = read_journals(journal_dir)
    bugs = [(name, op.error) for name, op in ops.items() if op.error in BUGS]
    assert not bugs, f"operations met errors that must never happen: {bugs[:5]}"
    by_version: dict[int, str] = {}
    for name, op in ops.items():
        if op.outcome == "ok" and op.committed:
            assert op.version not in by_version, (
                f"{name} and {by_version[op.version]} both committed version {op.version}"
            )
            by_version[op.version] = name
    history = ka.history(store, UUID)
    versions = [s.version for s in history]
    assert versions == list(range(versions[0], versions[-1] + 1)), versions
    assert max(by_version, default=-1) <= versions[-1], "an acknowledged version is gone"
    previous: collections.Counter[Row] | None = None
    seen_ops: set[str] = set()
    for snap in history:
        meta = commit.load(store, UUID, version=snap.version)
        table = ka.dataset(store, UUID, version=snap.version).to_table()  # every file readable
        rows = collections.Counter(
            zip(
                table.column("op").to_pylist(),
                table.column("part").to_pylist(),
                table.column("i").to_pylist(),
                strict=True,
            )
        )
        assert max(rows.values(), default=1) == 1, f"duplicate rows at version {snap.version}"
        for name, _, _ in rows:
            assert ops[name].outcome != "failed", f"rows of failed {name} at {snap.version}"
        made_by = None if snap.operation == "compact" else meta.user_metadata.get("op")
        acked = by_version.get(snap.version)
        if acked is not None:
            expected = None if ops[acked].kind == "compact" else acked
            assert made_by == expected, (
                f"version {snap.version} was acknowledged to {acked} but holds {made_by}"
            )
        if made_by is not None:
            assert made_by not in seen_ops, f"{made_by} committed twice"
            assert ops[made_by].outcome != "failed", f"failed {made_by} made {snap.version}"
            seen_ops.add(made_by)
        if previous is not None:
            assert rows == _apply(previous, ops, made_by, snap.operation), (
                f"version {snap.version} ({snap.operation} by {made_by}) is not version "
                f"{snap.version - 1} plus that change"
            )
        previous = rows
    assert previous is not None
    latest = ka.dataset(store, UUID)
    assert latest.version == versions[-1] and latest.count_rows() == sum(previous.values())
    failed = collections.Counter(op.error for op in ops.values() if op.outcome == "failed")
    examples = {
        op.error: f"{name} ({op.kind}): {op.text}"
        for name, op in ops.items()
        if op.outcome == "failed" and op.error
    }
    return Report(
        versions=versions,
        ops=len(ops),
        committed_ok=len(by_version),
        unknown=sum(op.outcome == "unknown" for op in ops.values()),
        failed=failed,
        rows=sum(previous.values()),
        examples=examples,
    )


def _apply(
    before: collections.Counter[Row], ops: dict[str, Op], name: str | None, operation: str
) -> collections.Counter[Row]:
    if name is None:  # compaction rewrites files, never rows
        return before
    op = ops[name]
    new = collections.Counter(rows_of(name, op.kind, op.part, op.n))
    if op.kind == "overwrite":
        kept = collections.Counter({r: c for r, c in before.items() if r[1] != op.part})
        return kept + new
    return before + new


def iter_keys(store: Any) -> Iterator[str]:
    return (info.key for info in store.list(f"{UUID}/"))


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    for name in ("url", "options", "journal", "seed", "wid"):
        w.add_argument(name)
    r = sub.add_parser("run")
    r.add_argument("url")
    r.add_argument("--seconds", type=float, default=60)
    r.add_argument("--workers", type=int, default=3)
    r.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.url, json.loads(args.options), args.journal, int(args.seed), args.wid)
        return
    import tempfile

    import ktk_arrow as ka

    journals = Path(tempfile.mkdtemp(prefix="soak-journal-"))
    run = SoakRun(args.url, {}, journals, args.seed, workers=args.workers)
    run.run(args.seconds)
    report = check(ka.resolve_store(args.url), journals)
    print(f"{run.kills} kills; {report}")


if __name__ == "__main__":
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    main(sys.argv[1:])
