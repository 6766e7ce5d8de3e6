"""The change feed (``ktk_arrow.changes``): rows inserted and deleted by a range of commits."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import tempfile
import uuid as uuidlib
from collections import Counter
from contextlib import contextmanager
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.changes import changes, multiset_difference
from ktk_arrow.commit import Change
from ktk_arrow.spec import keys, manifest
from ktk_arrow.spec.metadata import FileEntry
from ktk_arrow.storage import LocalStore

# the module, even once ``ka.changes`` names the function (as ``ka.compact`` does)
changes_module = importlib.import_module("ktk_arrow.changes")
ZERO = dt.timedelta(0)
CHANGE = ["_change_type", "_commit_version", "_commit_timestamp"]


@contextmanager
def lazy_layout():
    """Every dataset as a large one (as KTK_ARROW_TEST_LAZY does), and segments even
    for a few files: roots list one file inline, two segments of a level merge."""
    with (
        mock.patch.object(commit, "EAGER_MAX_FILES", -1),
        mock.patch.object(commit, "EAGER_MAX_PAIRS", -1),
        mock.patch.object(manifest, "INLINE_MAX", 1),
        mock.patch.object(manifest, "FANIN", 2),
    ):
        yield


@pytest.fixture(params=["eager", "lazy"])
def layout(request):
    if request.param == "lazy":
        with lazy_layout():
            yield request.param
    else:
        yield request.param


def df(rows, columns=("p", "x")):
    return pd.DataFrame(rows, columns=list(columns)).astype("int64")


def segmented(root, version):
    """Whether snapshot ``version`` points at manifest segments."""
    return bool(commit.load_version(LocalStore(root), "ds", version).segments)


def rows_of(table, columns=("p", "x")):
    """The table's rows as a multiset of tuples."""
    data = table.select(list(columns)).to_pylist()
    return Counter(tuple(r[c] for c in columns) for r in data)


def state(root, version, columns=("p", "x")):
    if version < 0:
        return Counter()
    return rows_of(ka.dataset(root, "ds", version=version).to_table(), columns)


def of_version(feed, version, change_type):
    mask = [
        v == version and t == change_type
        for v, t in zip(
            feed.column("_commit_version").to_pylist(), feed["_change_type"].to_pylist()
        )
    ]
    return feed.filter(pa.array(mask))


def replay(start, feed, columns=("p", "x")):
    """``start`` with each commit's deletes removed (each must be present), then its inserts."""
    current = Counter(start)
    for version in sorted(set(feed.column("_commit_version").to_pylist())):
        for row, n in rows_of(of_version(feed, version, "delete"), columns).items():
            assert current[row] >= n, f"version {version} deletes {row} {n}x, not present"
            current[row] -= n
        current.update(rows_of(of_version(feed, version, "insert"), columns))
    return +current


# -- what each operation yields ---------------------------------------------------


def test_appends_are_inserts_tagged_with_their_commit(tmp_path, layout):
    root = str(tmp_path)
    first = ka.write_dataset(df([(1, 1), (1, 2), (2, 3)]), root, "ds", partition_on=["p"])
    second = ka.write_dataset(df([(1, 4), (3, 5)]), root, "ds", mode="append")
    feed = changes(root, "ds", 0)
    assert feed.column_names == ["p", "x", *CHANGE]
    assert feed.schema.field("_commit_version").type == pa.int64()
    assert feed.schema.field("_commit_timestamp").type == pa.timestamp("us", tz="UTC")
    assert feed.schema.field("p").type == pa.int64()  # the partition column, typed
    assert feed["_change_type"].to_pylist() == ["insert"] * 5
    assert rows_of(of_version(feed, 0, "insert")) == Counter({(1, 1): 1, (1, 2): 1, (2, 3): 1})
    assert rows_of(of_version(feed, 1, "insert")) == Counter({(1, 4): 1, (3, 5): 1})
    stamps = dict(zip(feed["_commit_version"].to_pylist(), feed["_commit_timestamp"].to_pylist()))
    assert stamps == {0: first.timestamp, 1: second.timestamp}
    only_second = changes(root, "ds", 1, 1)
    assert rows_of(only_second) == Counter({(1, 4): 1, (3, 5): 1})
    assert segmented(root, 1) or layout == "eager"  # the segment path was taken


def test_an_append_reads_only_its_own_files(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(p, p) for p in range(8)]), root, "ds", partition_on=["p"])
    ka.write_dataset(df([(1, 10), (9, 11)]), root, "ds", mode="append")
    store = LocalStore(root)
    before = commit.load_version(store, "ds", 0)
    assert before.segments or layout == "eager"
    for entry in before.files.values():  # the files the append did not touch are gone
        os.remove(os.path.join(root, entry.key))
    commit._SEGMENTS.clear()
    read = []
    real = commit.read_segment
    with mock.patch.object(
        commit, "read_segment", lambda s, seg: read.append(seg.key) or real(s, seg)
    ):
        feed = changes(root, "ds", 1)
    assert rows_of(feed) == Counter({(1, 10): 1, (9, 11): 1})
    after = commit.load_version(store, "ds", 1)
    differing = {s.key for s in before.segments} ^ {s.key for s in after.segments}
    assert set(read) <= differing  # segments both snapshots share were not read


def test_overwrite_of_a_partition_reports_only_the_rows_that_changed(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (1, 2), (2, 3)]), root, "ds", partition_on=["p"])
    ka.write_dataset(df([(1, 4)]), root, "ds", mode="append")
    snap = ka.write_dataset(
        df([(1, 1), (1, 9)]), root, "ds", mode="overwrite", delete_scope=[{"p": 1}]
    )
    feed = changes(root, "ds", snap.version)
    # (1, 1) was written again: carried over, so neither deleted nor inserted
    assert rows_of(of_version(feed, 2, "delete")) == Counter({(1, 2): 1, (1, 4): 1})
    assert rows_of(of_version(feed, 2, "insert")) == Counter({(1, 9): 1})
    assert feed.num_rows == 3
    assert segmented(root, 2) or layout == "eager"


def test_delete_scope_without_data_deletes_the_partition_rows(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (1, 1), (2, 3)]), root, "ds", partition_on=["p"])
    snap = ka.write_dataset(df([]), root, "ds", mode="overwrite", delete_scope=[{"p": 1}])
    feed = changes(root, "ds", snap.version)
    assert feed["_change_type"].to_pylist() == ["delete", "delete"]
    assert rows_of(feed) == Counter({(1, 1): 2})


@pytest.mark.parametrize("batch_bytes", [changes_module.DIFF_BATCH_BYTES, 1])
def test_full_overwrite_deletes_every_old_row_and_inserts_the_new(
    tmp_path, layout, monkeypatch, batch_bytes
):
    monkeypatch.setattr(changes_module, "DIFF_BATCH_BYTES", batch_bytes)  # 1: a batch per dir
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (2, 2), (3, 3), (3, 3)]), root, "ds", partition_on=["p"])
    snap = ka.write_dataset(df([(2, 2), (3, 3), (4, 4)]), root, "ds", mode="overwrite")
    feed = changes(root, "ds", snap.version)
    assert rows_of(of_version(feed, 1, "delete")) == Counter({(1, 1): 1, (3, 3): 1})
    assert rows_of(of_version(feed, 1, "insert")) == Counter({(4, 4): 1})
    assert replay(state(root, 0), feed) == state(root, 1)


def test_full_overwrite_with_other_partition_keys(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (2, 2)]), root, "ds", partition_on=["p"])
    snap = ka.write_dataset(df([(1, 1), (5, 5)]), root, "ds", mode="overwrite", partition_on=["x"])
    feed = changes(root, "ds", snap.version)
    assert replay(state(root, 0), feed) == state(root, 1) == Counter({(1, 1): 1, (5, 5): 1})


def test_compaction_yields_nothing_and_reads_no_file(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (1, 1)]), root, "ds", partition_on=["p"])
    for x in range(3):
        ka.write_dataset(df([(1, x)]), root, "ds", mode="append")
    result = ka.compact(root, "ds")
    assert result.committed
    version = result.snapshot.version
    store = LocalStore(root)
    for entry in commit.load_version(store, "ds", version).files.values():
        os.remove(os.path.join(root, entry.key))  # the merged files: not read
    assert changes(root, "ds", version).num_rows == 0
    assert changes(root, "ds", 0, version - 1).num_rows == 5


def test_index_builds_and_settings_yield_nothing(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (2, 2)]), root, "ds", partition_on=["p"])
    built = ka.build_index(root, "ds", "x").snapshot
    configured = commit.configure(LocalStore(root), "ds", auto_compact=None, view="auto")
    dropped = ka.drop_index(root, "ds", "x").snapshot
    assert built.version == 1 and dropped.version > built.version
    assert configured.version >= built.version
    feed = changes(root, "ds", 1)
    assert feed.num_rows == 0
    assert feed.column_names == ["p", "x", *CHANGE]


def test_duplicate_identical_rows_are_counted(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 7), (1, 7), (1, 7), (2, 1)]), root, "ds", partition_on=["p"])
    snap = ka.write_dataset(
        df([(1, 7), (1, 7), (1, 7), (1, 7), (1, 8)]),
        root,
        "ds",
        mode="overwrite",
        delete_scope=[{"p": 1}],
    )
    feed = changes(root, "ds", snap.version)
    assert rows_of(of_version(feed, 1, "insert")) == Counter({(1, 7): 1, (1, 8): 1})
    assert of_version(feed, 1, "delete").num_rows == 0
    snap = ka.write_dataset(df([(1, 7)]), root, "ds", mode="overwrite", delete_scope=[{"p": 1}])
    feed = changes(root, "ds", snap.version)
    assert rows_of(feed) == Counter({(1, 7): 3, (1, 8): 1})
    assert set(feed["_change_type"].to_pylist()) == {"delete"}


def _rewrite(root, label, frame):
    """Commit a copy-on-write rewrite: file ``label`` replaced by one holding ``frame``."""
    store = LocalStore(root)
    meta = commit.load(store, "ds")
    directory = meta.files[label].partition_dir
    new_label = f"{directory}/{uuidlib.uuid4().hex}"
    key = f"{keys.table_prefix('ds')}/{new_label}.parquet"
    path = os.path.join(root, key)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    entry = FileEntry(new_label, key, os.path.getsize(path), len(frame))
    return commit.commit(
        store,
        "ds",
        Change(
            operation="rewrite",
            add=[entry],
            remove=lambda state: [label],
            read_version=meta.version,
            depends_on=lambda state: [label] if label in state.files else [],
        ),
    )


def test_a_rewrite_reports_only_the_rows_it_changed(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(
        pd.DataFrame({"p": [1, 1, 1, 2], "x": [1, 2, 2, 3], "y": ["a", "b", "b", "c"]}),
        root,
        "ds",
        partition_on=["p"],
    )
    ka.write_dataset(pd.DataFrame({"p": [1], "x": [9], "y": ["z"]}), root, "ds", mode="append")
    meta = ka.dataset(root, "ds", version=0).metadata
    (label,) = [name for name in meta.files if name.startswith("p=1/")]
    # rows (1, a) and one (2, b) carried over, the other (2, b) changed to (2, B), (5, e) added
    snap = _rewrite(root, label, pd.DataFrame({"x": [1, 2, 2, 5], "y": ["a", "b", "B", "e"]}))
    feed = changes(root, "ds", snap.version)
    cols = ("p", "x", "y")
    assert rows_of(of_version(feed, snap.version, "delete"), cols) == Counter({(1, 2, "b"): 1})
    assert rows_of(of_version(feed, snap.version, "insert"), cols) == Counter(
        {(1, 2, "B"): 1, (1, 5, "e"): 1}
    )
    # projected: still compared on every column, so the changed row shows on both sides
    projected = changes(root, "ds", snap.version, columns=["x"])
    assert projected.column_names == ["x", *CHANGE]
    assert sorted(zip(projected["x"].to_pylist(), projected["_change_type"].to_pylist())) == [
        (2, "delete"),
        (2, "insert"),
        (5, "insert"),
    ]
    assert replay(state(root, 0, cols), changes(root, "ds", 1), cols) == state(root, 2, cols)


def test_delete_rows_reports_exactly_the_deleted_rows(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(1, 1), (1, 2), (1, 2), (2, 2), (2, 3)]), root, "ds", partition_on=["p"])
    snap = ka.delete_rows(root, "ds", [[("x", "==", 2)]])
    feed = changes(root, "ds", snap.version)
    assert feed["_change_type"].to_pylist() == ["delete"] * 3
    assert rows_of(feed) == Counter({(1, 2): 2, (2, 2): 1})
    snap = ka.delete_rows(root, "ds", [[("p", "==", 2)]])  # whole files, unread
    assert rows_of(changes(root, "ds", snap.version)) == Counter({(2, 3): 1})
    assert replay(state(root, 0), changes(root, "ds", 1)) == state(root, snap.version)


def test_upsert_reports_replaced_rows_and_new_rows(tmp_path, layout):
    root = str(tmp_path)
    frame = pd.DataFrame({"p": [1, 1, 2], "k": [1, 2, 3], "v": ["a", "b", "c"]})
    ka.write_dataset(frame, root, "ds", partition_on=["p"])
    # k=1 unchanged, k=2 gets a new value, k=3 moves to partition 1, k=4 is new
    update = pd.DataFrame({"p": [1, 1, 1, 2], "k": [1, 2, 3, 4], "v": ["a", "B", "c", "d"]})
    snap = ka.upsert(update, root, "ds", on="k")
    feed = changes(root, "ds", snap.version)
    cols = ("p", "k", "v")
    assert rows_of(of_version(feed, snap.version, "delete"), cols) == Counter(
        {(1, 2, "b"): 1, (2, 3, "c"): 1}
    )
    assert rows_of(of_version(feed, snap.version, "insert"), cols) == Counter(
        {(1, 2, "B"): 1, (1, 3, "c"): 1, (2, 4, "d"): 1}
    )
    assert replay(state(root, 0, cols), feed, cols) == state(root, snap.version, cols)


def test_typed_partition_columns_and_projection(tmp_path, layout):
    root = str(tmp_path)
    frame = pd.DataFrame(
        {
            "day": [dt.date(2020, 1, 1), dt.date(2020, 1, 2)],
            "country": ["DE", "US/CA"],
            "v": [1.5, 2.5],
        }
    )
    ka.write_dataset(frame, root, "ds", partition_on=["day", "country"])
    feed = changes(root, "ds", 0)
    expected = ka.dataset(root, "ds").to_table()
    for name in ("day", "country", "v"):
        assert feed.schema.field(name).type == expected.schema.field(name).type
    assert sorted(feed["country"].to_pylist()) == ["DE", "US/CA"]
    assert changes(root, "ds", 0, columns=["country", "_change_type"]).column_names == [
        "country",
        *CHANGE,
    ]
    with pytest.raises(ka.InvalidArgumentError, match="nope"):
        changes(root, "ds", 0, columns=["nope"])


# -- versions and errors ----------------------------------------------------------


def test_version_range_is_inclusive_of_both_ends(tmp_path, layout, monkeypatch):
    monkeypatch.setattr(changes_module, "READ_AHEAD", 2)  # entries read in several windows
    root = str(tmp_path)
    ka.write_dataset(df([(0, 0)]), root, "ds", partition_on=["p"])
    for x in range(1, 5):
        ka.write_dataset(df([(x, x)]), root, "ds", mode="append")
    assert changes(root, "ds", 1, 3)["_commit_version"].to_pylist() == [1, 2, 3]
    assert changes(root, "ds", 2)["_commit_version"].to_pylist() == [2, 3, 4]
    assert changes(root, "ds", 4, 4)["x"].to_pylist() == [4]
    assert changes(root, "ds", 0)["x"].to_pylist() == [0, 1, 2, 3, 4]
    assert changes(root, "ds", 0, 2)["x"].to_pylist() == [0, 1, 2]


def test_bad_versions_are_errors_that_name_the_range(tmp_path):
    root = str(tmp_path)
    ka.write_dataset(df([(0, 0)]), root, "ds", partition_on=["p"])
    ka.write_dataset(df([(1, 1)]), root, "ds", mode="append")
    with pytest.raises(ka.InvalidArgumentError, match=r"after the latest version 1.*0\.\.1"):
        changes(root, "ds", 2)
    with pytest.raises(ka.InvalidArgumentError, match=r"after the latest version 1.*0\.\.1"):
        changes(root, "ds", 0, 5)
    with pytest.raises(ka.InvalidArgumentError, match="start_version 1 is after end_version 0"):
        changes(root, "ds", 1, 0)
    for bad in (-1, True, "1", None, 1.0):
        with pytest.raises(ka.InvalidArgumentError, match="start_version"):
            changes(root, "ds", bad)
    with pytest.raises(ka.InvalidArgumentError, match="end_version"):
        changes(root, "ds", 0, -2)
    with pytest.raises(ka.DatasetNotFoundError):
        changes(root, "missing", 0)
    with pytest.raises(ka.InvalidArgumentError):
        changes(root, "../x", 0)


def test_expired_versions_are_an_error_naming_what_is_left(tmp_path, layout):
    root = str(tmp_path)
    ka.write_dataset(df([(0, 0)]), root, "ds", partition_on=["p"])
    for x in range(1, 5):
        ka.write_dataset(df([(x, x)]), root, "ds", mode="append")
    result = ka.expire_snapshots(root, "ds", keep_last=3, grace_period=ZERO)
    assert result.expired == (0, 1)
    # version 2 is retained, but its changes need version 1
    with pytest.raises(ka.InvalidArgumentError, match=r"version 1 is needed.*3\.\.4") as info:
        changes(root, "ds", 2)
    assert "expire" in str(info.value)
    with pytest.raises(ka.InvalidArgumentError, match=r"3\.\.4"):
        changes(root, "ds", 0, 4)
    feed = changes(root, "ds", 3)
    assert replay(state(root, 2), feed) == state(root, 4)


def test_a_dataset_created_anew_starts_its_feed_at_its_first_version(tmp_path):
    root = str(tmp_path)
    ka.write_dataset(df([(0, 0)]), root, "ds", partition_on=["p"])
    ka.write_dataset(df([(1, 1)]), root, "ds", mode="append")
    # a deletion killed before it removed its tombstone (log entry 2)
    with (
        mock.patch.object(LocalStore, "delete", side_effect=RuntimeError("killed")),
        pytest.raises(RuntimeError, match="killed"),
    ):
        ka.delete_dataset(root, "ds")
    first = ka.write_dataset(df([(7, 7)]), root, "ds", partition_on=["p"])
    assert first.version == 3
    feed = changes(root, "ds", first.version)
    assert rows_of(feed) == Counter({(7, 7): 1})
    with pytest.raises(ka.InvalidArgumentError, match=rf"{first.version}\.\.{first.version}"):
        changes(root, "ds", 0)


def test_a_dataset_plateau_wrote_is_inserted_at_version_0(tmp_path):
    import functools

    import minimalkv
    from plateau.io.eager import store_dataframes_as_dataset

    root = str(tmp_path)
    factory = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    store_dataframes_as_dataset(factory, "ds", [df([(1, 1), (2, 2), (2, 2)])], partition_on=["p"])
    feed = changes(root, "ds", 0)
    assert rows_of(feed) == Counter({(1, 1): 1, (2, 2): 2})
    assert set(feed["_commit_version"].to_pylist()) == {0}


# -- the multiset difference --------------------------------------------------------


def test_multiset_difference_counts_duplicates_nulls_nan_and_nested_values():
    schema = pa.schema(
        [
            ("i", pa.int64()),
            ("f", pa.float64()),
            ("s", pa.dictionary(pa.int32(), pa.string())),
            ("l", pa.list_(pa.int64())),
            ("st", pa.struct([("a", pa.int64()), ("b", pa.list_(pa.string()))])),
            ("m", pa.map_(pa.string(), pa.int64())),
        ]
    )

    def table(rows):
        return pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema)

    a = (1, float("nan"), "x", [1, 2], {"a": 1, "b": ["u"]}, [("k", 1)])
    b = (1, float("nan"), "x", [1, 2], {"a": 1, "b": ["u", "v"]}, [("k", 1)])
    c = (None, None, None, None, None, None)
    d = (None, None, None, [], {"a": None, "b": None}, [])
    e = (2, 0.5, "y", [None], {"a": 2, "b": []}, [("k", 2)])
    old = table([a, a, a, b, c, d, e])
    new = table([a, b, b, c, c, d, (2, 0.5, "y", [None], {"a": 2, "b": []}, [("k", 3)])])
    gone, came = multiset_difference(old, new)

    def counted(t):
        return Counter(repr(r) for r in t.to_pylist())

    def rows(*items):
        return counted(table(list(items)))

    assert counted(gone) == rows(a, a, e)
    assert counted(came) == rows(b, c, (2, 0.5, "y", [None], {"a": 2, "b": []}, [("k", 3)]))
    # a list is not its flattened elements: [1, 2] + [] differs from [1] + [2]
    lists = pa.table({"l": pa.array([[1, 2], []])})
    split = pa.table({"l": pa.array([[1], [2]])})
    gone, came = multiset_difference(lists, split)
    assert gone.num_rows == 2 and came.num_rows == 2
    # fixed-size and large lists, lists of lists
    nested = pa.table(
        {
            "fl": pa.array([[1, 2], [1, 2], None], pa.list_(pa.int64(), 2)),
            "ll": pa.array([["a"], ["a"], ["b"]], pa.large_list(pa.string())),
            "lol": pa.array([[[1], []], [[1], []], [[1, None]]]),
        }
    )
    gone, came = multiset_difference(nested, nested.take([1, 2, 2]))
    assert gone.to_pylist() == [nested.to_pylist()[0]]
    assert came.to_pylist() == [nested.to_pylist()[2]]
    # chunked inputs and different dictionaries per side
    left = pa.table({"s": pa.chunked_array([pa.array(["a", "b"]).dictionary_encode()])})
    right = pa.table({"s": pa.array(["b", "a", "a"]).dictionary_encode()})
    gone, came = multiset_difference(left, right)
    assert gone.num_rows == 0 and came.column("s").to_pylist() == ["a"]


# -- replay property ----------------------------------------------------------------

ROW = st.tuples(st.integers(0, 2), st.integers(0, 3))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(ROW, min_size=1, max_size=4)),
        st.tuples(st.just("scope"), st.integers(0, 2), st.lists(st.integers(0, 3), max_size=4)),
        st.tuples(st.just("overwrite"), st.lists(ROW, max_size=4)),
        st.tuples(st.just("compact")),
        st.tuples(st.just("delete_rows"), st.integers(0, 3)),
        st.tuples(st.just("upsert"), st.lists(ROW, max_size=3, unique_by=lambda r: r[1])),
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    first=st.lists(ROW, min_size=1, max_size=5),
    ops=OPS,
    lazy=st.booleans(),
    data=st.data(),
)
def test_changes_replayed_on_the_start_version_give_the_end_version(first, ops, lazy, data):
    with tempfile.TemporaryDirectory() as root, lazy_layout() if lazy else _nothing():
        ka.write_dataset(df(first), root, "ds", partition_on=["p"])
        for op in ops:
            if op[0] == "append":
                ka.write_dataset(df(op[1]), root, "ds", mode="append")
            elif op[0] == "scope":
                rows = df([(op[1], x) for x in op[2]])
                ka.write_dataset(rows, root, "ds", mode="overwrite", delete_scope=[{"p": op[1]}])
            elif op[0] == "overwrite":
                ka.write_dataset(df(op[1]), root, "ds", mode="overwrite", partition_on=["p"])
            elif op[0] == "delete_rows":
                ka.delete_rows(root, "ds", [[("x", "==", op[1])]])
            elif op[0] == "upsert":
                ka.upsert(df(op[1]), root, "ds", on="x")  # a row may move to another partition
            else:
                ka.compact(root, "ds")
        latest = ka.dataset(root, "ds").version
        full = changes(root, "ds", 0)
        states = {v: state(root, v) for v in range(-1, latest + 1)}
        for version in range(latest + 1):  # every commit, replayed in turn
            upto = full.filter(pa.compute.less_equal(full["_commit_version"], version))
            assert replay(Counter(), upto) == states[version]
        start = data.draw(st.integers(0, latest), label="start")
        end = data.draw(st.integers(start, latest), label="end")
        feed = changes(root, "ds", start, end)
        assert replay(states[start - 1], feed) == states[end]
        window = full.filter(
            pa.compute.and_(
                pa.compute.greater_equal(full["_commit_version"], start),
                pa.compute.less_equal(full["_commit_version"], end),
            )
        )
        assert Counter(map(repr, feed.to_pylist())) == Counter(map(repr, window.to_pylist()))


@contextmanager
def _nothing():
    yield


def test_the_feed_reads_any_store(memory_url_and_options):
    url, options = memory_url_and_options
    ka.write_dataset(df([(1, 1), (2, 2)]), url, "ds", partition_on=["p"], storage_options=options)
    ka.write_dataset(
        df([(1, 1), (1, 5)]),
        url,
        "ds",
        mode="overwrite",
        delete_scope=[{"p": 1}],
        storage_options=options,
    )
    feed = changes(url, "ds", 1, storage_options=options)
    assert sorted(zip(feed["x"].to_pylist(), feed["_change_type"].to_pylist())) == [(5, "insert")]
    store = ka.resolve_store(url, options)
    assert changes(store, "ds", 0, 0).num_rows == 2
