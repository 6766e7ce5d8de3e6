"""The kartothek read facades plan once, with their predicates, and read only what they planned.

Counted, not timed: ``planning.plan`` is wrapped to record every planning
(with its filter and the files it returned), and the process-wide fsspec
memory filesystem behind ``memory://`` stores records every object read.
A facade call with predicates must plan exactly once, with those predicates
(never the unfiltered dataset first), read the dataset metadata once, open
only planned data files and hand Arrow the requested columns.  Results must
equal the unfiltered read filtered afterwards (hypothesis, random DNF over a
small dataset partitioned and indexed on int and str columns).
"""

from __future__ import annotations

import contextlib
import datetime
import operator
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import arrow, commit, planning
from ktk_arrow.io import eager
from ktk_arrow.io import iter as kiter
from ktk_arrow.spec import keys

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UUID = "ds"
P_INT = [0, 1, 2, 3]
P_STR = ["a", "b", "c"]
I_INT = list(range(6))
I_STR = ["x", "y", "z", "w"]
V = list(range(-3, 20))
DAY = datetime.date(2024, 1, 1)


def frame(n: int, offset: int) -> pd.DataFrame:
    ids = range(offset, offset + n)
    return pd.DataFrame(
        {
            "id": list(ids),
            "p_int": [P_INT[i % len(P_INT)] for i in ids],
            "p_str": [P_STR[(i // 2) % len(P_STR)] for i in ids],
            "i_int": [I_INT[(i * 7) % len(I_INT)] for i in ids],
            "i_str": [I_STR[(i * 5) % len(I_STR)] for i in ids],
            "v": [V[(i * 3) % len(V)] for i in ids],
            "day": [DAY + datetime.timedelta(days=i % 5) for i in ids],
        }
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A dataset of 3 appends (so partitions hold several files), partitioned and indexed."""
    root = f"/facade-planning-{uuid.uuid4().hex}"
    target = f"memory://{root}"
    ka.write_dataset(
        [frame(40, 0), frame(30, 40)],
        target,
        UUID,
        partition_on=["p_int", "p_str"],
        secondary_indices=["i_int", "i_str"],
    )
    ka.write_dataset(frame(25, 70), target, UUID, mode="append")
    yield target
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(root, recursive=True)


# -- recording --------------------------------------------------------------


@dataclass
class Recording:
    """What the facade calls inside ``recording()`` planned, read and scanned."""

    #: (filter, files returned) per ``planning.plan`` call
    plans: list[tuple[planning.ScanFilter, list[planning.FileTask]]] = field(default_factory=list)
    #: paths of every object opened or fetched, in order
    reads: list[str] = field(default_factory=list)
    #: the ``columns`` each Arrow scan of the facades was given
    scan_columns: list[Any] = field(default_factory=list)
    #: index columns read whole (``commit.read_index``)
    index_reads: list[str] = field(default_factory=list)

    @property
    def planned_keys(self) -> set[str]:
        return {t.key for _, tasks in self.plans for t in tasks}

    def data_files_read(self) -> set[str]:
        marker = f"/{UUID}/{keys.TABLE}/"
        return {p.split(marker, 1)[1] for p in self.reads if marker in p}

    def metadata_reads(self) -> list[str]:
        return [p for p in self.reads if p.endswith(f"{UUID}.by-dataset-metadata.json")]


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    rec = Recording()
    patcher = pytest.MonkeyPatch()
    real_plan = planning.plan

    def plan(meta: Any, scan_filter: Any = planning.NO_FILTER, load_index: Any = None) -> Any:
        tasks = real_plan(meta, scan_filter, load_index)
        rec.plans.append((scan_filter, list(tasks)))
        return tasks

    patcher.setattr(planning, "plan", plan)

    def reading(name: str) -> None:
        real = getattr(MemoryFileSystem, name)

        def wrapper(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
            rec.reads.append(str(path))
            return real(self, path, *args, **kwargs)

        patcher.setattr(MemoryFileSystem, name, wrapper)

    for name in ("_open", "cat_file"):
        reading(name)

    real_read_planned = arrow.read_planned

    def read_planned(dataset_: Any, columns: Any = None, filter: Any = None) -> Any:
        rec.scan_columns.append(columns)
        return real_read_planned(dataset_, columns=columns, filter=filter)

    patcher.setattr(arrow, "read_planned", read_planned)
    real_scanner = arrow.KartothekDataset.scanner

    def scanner(self: Any, columns: Any = None, filter: Any = None, **kwargs: Any) -> Any:
        rec.scan_columns.append(columns)
        return real_scanner(self, columns=columns, filter=filter, **kwargs)

    patcher.setattr(arrow.KartothekDataset, "scanner", scanner)
    real_read_index = commit.read_index

    def read_index(store: Any, meta: Any, column: str, *args: Any, **kwargs: Any) -> Any:
        rec.index_reads.append(column)
        return real_read_index(store, meta, column, *args, **kwargs)

    patcher.setattr(commit, "read_index", read_index)
    try:
        yield rec
    finally:
        patcher.undo()


# -- the facades --------------------------------------------------------------


def _read_table(url: str, **kw: Any) -> pd.DataFrame:
    return eager.read_table(UUID, url, **kw)


def _read_frames(url: str, **kw: Any) -> list[pd.DataFrame]:
    return eager.read_dataset_as_dataframes(UUID, url, **kw)


def _read_iter(url: str, **kw: Any) -> list[pd.DataFrame]:
    return list(kiter.read_dataset_as_dataframes__iterator(UUID, url, **kw))


FRAME_FACADES: dict[str, Callable[..., list[pd.DataFrame]]] = {
    "read_dataset_as_dataframes": _read_frames,
    "read_dataset_as_dataframes__iterator": _read_iter,
}
FACADES: dict[str, Callable[..., Any]] = {"read_table": _read_table, **FRAME_FACADES}

PREDICATES = [
    [[("p_int", "==", 1)]],
    [[("p_str", "in", ["a", "c"]), ("p_int", ">=", 2)]],
    [[("i_int", "==", 3)]],
    [[("i_str", "==", "y"), ("p_str", "==", "a")], [("p_int", "<", 1)]],
    [[("v", ">", 10), ("p_str", "!=", "b")]],
    [[("p_int", "==", 99)]],
]


def _all_files(url: str) -> set[str]:
    return {t.key.split(f"{keys.TABLE}/", 1)[1] for t in ka.dataset(url, UUID).tasks}


@pytest.mark.parametrize("name", list(FACADES))
@pytest.mark.parametrize("predicates", PREDICATES, ids=lambda p: repr(p))
def test_one_planning_with_the_predicates(url: str, name: str, predicates: Any) -> None:
    with recording() as rec:
        FACADES[name](url, predicates=predicates)
    assert len(rec.plans) == 1, [f for f, _ in rec.plans]
    scan_filter, tasks = rec.plans[0]
    # the unfiltered path (plan everything, then narrow) is not taken
    assert scan_filter.predicate is not None
    assert scan_filter.expression is not None
    assert len(rec.metadata_reads()) == 1, rec.metadata_reads()
    read = rec.data_files_read()
    planned = {t.key.split(f"{keys.TABLE}/", 1)[1] for t in tasks}
    assert read <= planned
    assert len(planned) < len(_all_files(url))


@pytest.mark.parametrize("name", list(FACADES))
def test_one_planning_without_predicates(url: str, name: str) -> None:
    with recording() as rec:
        FACADES[name](url)
    assert [f.is_empty for f, _ in rec.plans] == [True]
    assert len(rec.metadata_reads()) == 1
    assert rec.data_files_read() == _all_files(url)


@pytest.mark.parametrize("name", list(FACADES))
def test_only_the_matching_partition_is_read(url: str, name: str) -> None:
    predicates = [[("p_int", "==", 2), ("p_str", "==", "b")]]
    expected = {f for f in _all_files(url) if f.startswith("p_int=2/p_str=b/")}
    assert len(expected) >= 2  # several appends: several files in the partition
    with recording() as rec:
        FACADES[name](url, predicates=predicates)
    assert rec.data_files_read() == expected
    assert {k.split(f"{keys.TABLE}/", 1)[1] for k in rec.planned_keys} == expected


@pytest.mark.parametrize("name", list(FACADES))
def test_the_scan_reads_only_the_requested_columns(url: str, name: str) -> None:
    """The projection reaches Arrow: columns the predicates use are not read into the result."""
    columns = ["id", "p_str"]
    with recording() as rec:
        out = FACADES[name](url, columns=columns, predicates=[[("v", ">", 3), ("i_int", "==", 2)]])
    assert rec.scan_columns and all(c == columns for c in rec.scan_columns)
    frames = out if isinstance(out, list) else [out]
    assert all(list(f.columns) == columns for f in frames)


@pytest.mark.parametrize("name", list(FRAME_FACADES))
def test_dispatch_by_an_indexed_column_reads_its_index_once(url: str, name: str) -> None:
    with recording() as rec:
        frames = FRAME_FACADES[name](url, dispatch_by=["i_str"], predicates=[[("p_int", "==", 1)]])
    assert rec.index_reads == ["i_str"]
    assert len(rec.plans) == 1
    assert {v for f in frames for v in f["i_str"].unique()} <= set(I_STR)


# -- results equal the unfiltered read, filtered afterwards ----------------------

_OPS: dict[str, Callable[[pd.Series, Any], pd.Series]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda s, v: s.isin(v),
}
_DOMAINS: dict[str, list[Any]] = {
    # a value outside the data too, so comparisons hit edges and empty results
    "p_int": [*P_INT, 7],
    "p_str": [*P_STR, "q"],
    "i_int": [*I_INT, -1],
    "i_str": [*I_STR, "aa"],
    "v": [*V, 100],
}


@st.composite
def terms(draw: st.DrawFn) -> tuple[str, str, Any]:
    column = draw(st.sampled_from(sorted(_DOMAINS)))
    op = draw(st.sampled_from(sorted(_OPS)))
    values = st.sampled_from(_DOMAINS[column])
    if op == "in":
        return column, op, draw(st.lists(values, min_size=1, max_size=3, unique=True))
    return column, op, draw(values)


dnf = st.lists(st.lists(terms(), min_size=1, max_size=3), min_size=1, max_size=3)
column_subsets = st.one_of(
    st.none(), st.lists(st.sampled_from(list(frame(1, 0).columns)), min_size=1, unique=True)
)


def mask(df: pd.DataFrame, predicates: list[list[tuple[str, str, Any]]]) -> pd.Series:
    out = pd.Series(False, index=df.index)
    for clause in predicates:
        rows = pd.Series(True, index=df.index)
        for column, op, value in clause:
            rows &= _OPS[op](df[column], value)
        out |= rows
    return out


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order, categoricals as their values (categories differ after filtering)."""
    df = df.copy()
    for name in df.columns:
        if isinstance(df[name].dtype, pd.CategoricalDtype):
            df[name] = df[name].astype(df[name].dtype.categories.dtype)
    return df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)


def expected_rows(url: str, predicates: Any, **kw: Any) -> pd.DataFrame:
    """The unfiltered read (same options), filtered in pandas."""
    full = eager.read_table(UUID, url)
    rows = mask(full, predicates)
    return eager.read_table(UUID, url, **kw)[rows.to_numpy()]


_PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPERTY
@given(
    predicates=dnf,
    columns=column_subsets,
    categorical=st.booleans(),
    dates_as_object=st.booleans(),
)
def test_read_table_equals_filtering_the_whole_read(
    url: str, predicates: Any, columns: Any, categorical: bool, dates_as_object: bool
) -> None:
    kw: dict[str, Any] = {"columns": columns, "dates_as_object": dates_as_object}
    if categorical:
        kw["categoricals"] = [c for c in (columns or ["p_str", "i_str"]) if c.endswith("str")]
    with recording() as rec:
        got = eager.read_table(UUID, url, predicates=predicates, **kw)
    assert len(rec.plans) == 1 and rec.plans[0][0].predicate is not None
    assert rec.data_files_read() <= {k.split(f"{keys.TABLE}/", 1)[1] for k in rec.planned_keys}
    want = expected_rows(url, predicates, **kw)
    assert list(got.columns) == list(want.columns)
    for name in kw.get("categoricals", []):
        assert isinstance(got[name].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(_plain(got), _plain(want))


@_PROPERTY
@given(
    name=st.sampled_from(sorted(FRAME_FACADES)),
    predicates=dnf,
    columns=column_subsets,
    dates_as_object=st.booleans(),
    dispatch_by=st.sampled_from([None, [], ["p_int"], ["i_str"], ["p_str", "i_int"]]),
)
def test_frames_equal_filtering_the_whole_read(
    url: str,
    name: str,
    predicates: Any,
    columns: Any,
    dates_as_object: bool,
    dispatch_by: Any,
) -> None:
    if columns is not None and dispatch_by:
        columns = [*columns, *(c for c in dispatch_by if c not in columns)]
    kw: dict[str, Any] = {"columns": columns, "dates_as_object": dates_as_object}
    with recording() as rec:
        frames = FRAME_FACADES[name](url, predicates=predicates, dispatch_by=dispatch_by, **kw)
    assert len(rec.plans) == 1 and rec.plans[0][0].predicate is not None
    want = expected_rows(url, predicates, **kw)
    if not frames:
        assert want.empty
        return
    got = pd.concat(frames, ignore_index=True)
    assert all(list(f.columns) == list(want.columns) for f in frames)
    pd.testing.assert_frame_equal(_plain(got), _plain(want))
