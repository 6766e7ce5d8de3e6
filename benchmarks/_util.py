"""Shared helpers for the side-by-side benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def sales_frame(rows: int, seed: int = 0, countries: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "country": np.array([f"C{i:02d}" for i in range(countries)])[
                rng.integers(0, countries, rows)
            ],
            "customer": rng.integers(0, 100_000, rows),
            "amount": rng.random(rows) * 100,
            "quantity": rng.integers(1, 10, rows),
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, rows), "s"),
        }
    )


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(rows: list[tuple[str, float, float]], ours: str, peer: str) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {ours:>12}  {peer:>12}  ratio (ours/peer)")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a * 1000:>10.1f}ms  {b * 1000:>10.1f}ms  {a / b:>8.2f}x")
