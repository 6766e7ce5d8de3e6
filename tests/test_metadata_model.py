"""Random operation sequences against a pure-Python model of the dataset.

Each example appends, overwrites (whole or by ``delete_scope``), compacts and
drops/builds the index of a small dataset partitioned on ``p`` with a
secondary index on ``c``, and keeps the rows of every version in a model.
After every step, every version so far (time travel) must read exactly the
model's rows, also under predicates that prune by partition and by index.

Two modes: ``eager`` (the defaults: small datasets keep the old format) and
``lazy`` (every root goes through manifest segments and index tails, with
tiny ``INLINE_MAX``/``FANIN`` so that segments are written and merged).  In
lazy mode plateau must also read the refreshed kartothek view.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.spec import manifest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UUID = "model"
P_VALUES = range(5)
C_VALUES = range(6)

Row = tuple[int, int, int]  # (p, c, v); v is unique per written row

# -- operations ----------------------------------------------------------------

_rows = st.lists(
    st.tuples(st.sampled_from(P_VALUES), st.sampled_from(C_VALUES)), min_size=1, max_size=4
)
_append = st.tuples(st.just("append"), _rows)
_op = st.one_of(
    _append,
    st.tuples(st.just("overwrite_scope"), st.sampled_from(P_VALUES), _rows),
    st.tuples(st.just("overwrite"), _rows),
    st.tuples(st.just("compact")),
    st.tuples(st.just("drop_index")),
    st.tuples(st.just("build_index")),
)
#: the first operation creates the dataset
operations = st.builds(
    lambda first, rest: [first, *rest], _append, st.lists(_op, min_size=4, max_size=14)
)

#: (c == x, p == y, p in [a, b] and c >= z) values to query every version with
queries = st.lists(
    st.tuples(
        st.integers(-1, 6),
        st.integers(-1, 5),
        st.tuples(st.sampled_from(P_VALUES), st.sampled_from(P_VALUES)),
        st.integers(-1, 6),
    ),
    min_size=1,
    max_size=2,
)


@contextlib.contextmanager
def lazy_format() -> Iterator[None]:
    """Every root lazy, with tiny segments, restored afterwards."""
    saved = (commit.EAGER_MAX_FILES, commit.EAGER_MAX_PAIRS, manifest.INLINE_MAX, manifest.FANIN)
    commit.EAGER_MAX_FILES, commit.EAGER_MAX_PAIRS = -1, -1
    manifest.INLINE_MAX, manifest.FANIN = 2, 3
    try:
        yield
    finally:
        commit.EAGER_MAX_FILES, commit.EAGER_MAX_PAIRS, manifest.INLINE_MAX, manifest.FANIN = saved


# -- the model and the checks --------------------------------------------------


class Model:
    """The rows of every committed version, and whether ``c`` is indexed now."""

    def __init__(self) -> None:
        self.versions: dict[int, list[Row]] = {}
        self.indexed = True
        self.next_v = 0

    def frame(self, pairs: list[tuple[int, int]]) -> tuple[pd.DataFrame, list[Row]]:
        rows = [(p, c, self.next_v + i) for i, (p, c) in enumerate(pairs)]
        self.next_v += len(rows)
        df = pd.DataFrame(rows, columns=["p", "c", "v"]).astype("int64")
        return df, rows

    @property
    def latest(self) -> list[Row]:
        return self.versions[max(self.versions)] if self.versions else []

    def record(self, version: int, rows: list[Row]) -> None:
        assert version not in self.versions, f"version {version} committed twice"
        assert not self.versions or version > max(self.versions)
        self.versions[version] = sorted(rows)


def apply(store: str, model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    indices = ["c"] if model.indexed else None
    if kind == "append":
        df, rows = model.frame(op[1])
        snap = ka.write_dataset(
            df, store, UUID, partition_on=["p"], secondary_indices=indices, mode="append"
        )
        model.record(snap.version, model.latest + rows)
    elif kind == "overwrite_scope":
        scope = op[1]
        df, rows = model.frame(op[2])
        snap = ka.write_dataset(
            df,
            store,
            UUID,
            partition_on=["p"],
            secondary_indices=indices,
            mode="overwrite",
            delete_scope=[{"p": scope}],
        )
        model.record(snap.version, [r for r in model.latest if r[0] != scope] + rows)
    elif kind == "overwrite":
        df, rows = model.frame(op[1])
        snap = ka.write_dataset(
            df, store, UUID, partition_on=["p"], secondary_indices=["c"], mode="overwrite"
        )
        model.indexed = True
        model.record(snap.version, rows)
    elif kind == "compact":
        result = ka.compact(store, UUID)
        if result.committed:
            model.record(result.snapshot.version, model.latest)
    elif kind == "drop_index":
        result = ka.drop_index(store, UUID, "c")
        assert result.committed == model.indexed
        if result.committed:
            model.indexed = False
            model.record(result.snapshot.version, model.latest)
    elif kind == "build_index":
        result = ka.build_index(store, UUID, "c")
        assert result.committed
        model.indexed = True
        model.record(result.snapshot.version, model.latest)
    else:  # pragma: no cover
        raise AssertionError(kind)


def _read(store: str, version: int, filter: Any = None) -> tuple[list[Row], int]:
    ds = ka.dataset(store, UUID, version=version, filter=filter)
    table = ds.to_table(columns=["p", "c", "v"])
    rows = sorted(
        (int(p), int(c), int(v))
        for p, c, v in zip(*(table.column(n).to_pylist() for n in ("p", "c", "v")), strict=True)
    )
    return rows, ds.count_rows()


def check_version(store: str, model: Model, version: int, qs: list[tuple[Any, ...]]) -> None:
    expected = model.versions[version]
    rows, count = _read(store, version)
    assert rows == expected, f"version {version}: all rows"
    assert count == len(expected), f"version {version}: count_rows"
    for x, y, (a, b), z in qs:
        cases = [
            ([[("c", "==", x)]], [r for r in expected if r[1] == x]),
            ([[("p", "==", y)]], [r for r in expected if r[0] == y]),
            (
                [[("p", "in", [a, b]), ("c", ">=", z)]],
                [r for r in expected if r[0] in (a, b) and r[1] >= z],
            ),
        ]
        for flt, want in cases:
            got, n = _read(store, version, flt)
            assert got == want, f"version {version}, filter {flt}"
            assert n == len(want), f"version {version}, filter {flt}: count_rows"


def check_all(store: str, model: Model, qs: list[tuple[Any, ...]]) -> None:
    assert [s.version for s in ka.history(store, UUID)] == sorted(model.versions)
    for version in model.versions:
        check_version(store, model, version, qs)


def check_lazy_layout(store: str, model: Model) -> None:
    resolved = ka.resolve_store(store)
    meta = commit.load(resolved, UUID)
    assert meta.version == max(model.versions)
    if len(meta.files) > manifest.INLINE_MAX:
        assert meta.segments, f"{len(meta.files)} files but no manifest segments"


def check_plateau(store: str, model: Model) -> None:
    minimalkv = pytest.importorskip("minimalkv")
    pytest.importorskip("plateau")
    import plateau.io.eager as pl

    commit.refresh_view(ka.resolve_store(store), UUID)
    factory = functools.partial(minimalkv.get_store_from_url, f"hfs://{store}")
    df = pl.read_table(UUID, factory)
    got = sorted(
        (int(p), int(c), int(v))
        for p, c, v in zip(*(df[n].astype("int64").tolist() for n in ("p", "c", "v")), strict=True)
    )
    assert got == model.latest, "plateau reads the refreshed view"


def run(ops: list[tuple[Any, ...]], qs: list[tuple[Any, ...]], lazy: bool) -> None:
    with tempfile.TemporaryDirectory() as store:
        model = Model()
        for op in ops:
            apply(store, model, op)
            check_all(store, model, qs)
        if lazy:
            check_lazy_layout(store, model)
            check_plateau(store, model)


# -- the tests -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "lazy"])
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, qs=queries)
def test_random_sequences_match_the_model(mode: str, ops, qs) -> None:
    if mode == "lazy":
        with lazy_format():
            run(ops, qs, lazy=True)
    else:
        run(ops, qs, lazy=False)


#: appends past INLINE_MAX, a segment merge, a scoped overwrite, compaction and
#: an index dropped and rebuilt: every kind of root change at least once
KNOWN_SEQUENCE = [
    ("append", [(0, 1), (1, 2)]),
    ("append", [(2, 1)]),
    ("append", [(3, 3), (4, 4)]),
    ("append", [(0, 0)]),
    ("overwrite_scope", 1, [(1, 5), (2, 2)]),
    ("append", [(4, 1)]),
    ("compact",),
    ("append", [(0, 5)]),
    ("drop_index",),
    ("append", [(1, 1)]),
    ("build_index",),
    ("append", [(2, 3)]),
    ("overwrite", [(3, 0), (4, 5)]),
]


@pytest.mark.parametrize("mode", ["eager", "lazy"])
def test_known_sequence_matches_the_model(mode: str) -> None:
    qs = [(1, 2, (0, 1), 2), (5, 4, (2, 4), 0)]
    if mode == "lazy":
        with lazy_format():
            run(KNOWN_SEQUENCE, qs, lazy=True)
    else:
        run(KNOWN_SEQUENCE, qs, lazy=False)


def test_lazy_format_writes_segments_and_index_tails() -> None:
    with lazy_format(), tempfile.TemporaryDirectory() as store:
        model = Model()
        levels = []
        for op in KNOWN_SEQUENCE[:6]:
            apply(store, model, op)
            meta = commit.load(ka.resolve_store(store), UUID)
            levels.append(sorted(s.level for s in meta.segments))
        assert meta.index_tail.get("c"), "appends add index tails"
        assert [1] in levels, "FANIN level-0 segments are merged into one of level 1"
        check_all(store, model, [(1, 1, (0, 4), 1)])
