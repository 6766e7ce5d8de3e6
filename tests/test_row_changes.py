"""Row-level changes: ka.delete_rows and ka.upsert (copy-on-write, one commit each)."""

from __future__ import annotations

import functools
import multiprocessing as mp
import shutil
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import commit as commit_module
from ktk_arrow.storage import resolve_store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UUID = "ds"


def frame(keys, part_count: int = 4, v: Any = None) -> pd.DataFrame:
    keys = np.asarray(list(keys), dtype="int64")
    return pd.DataFrame(
        {
            "p": keys % part_count,
            "key": keys,
            "v": keys * 10 if v is None else np.full(len(keys), v, dtype="int64"),
            "name": [f"n{k}" for k in keys],
        }
    )


def rows_of(store, version=None, filter=None) -> pd.DataFrame:
    df = ka.dataset(store, UUID, version=version, filter=filter).to_table().to_pandas()
    return df[["p", "key", "v", "name"]].sort_values(["key", "v"]).reset_index(drop=True)


def model_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[["p", "key", "v", "name"]].sort_values(["key", "v"]).reset_index(drop=True)


def labels(store) -> set[str]:
    return set(ka.dataset(store, UUID).metadata.files)


def stored_data_keys(store) -> set[str]:
    """Every parquet file under the table directory (orphans included)."""
    return {i.key for i in store.list(f"{UUID}/table/") if i.key.endswith(".parquet")}


def assert_index_exact(store, column: str = "key") -> None:
    """The stored index equals one rebuilt from the files' content."""
    meta = commit_module.load(store, UUID)
    index = commit_module.read_index(store, meta, column)
    stored = {v: set(ls) for v, ls in index.items()}
    rebuilt: dict[Any, set[str]] = {}
    fs = store.arrow_filesystem()
    for entry in meta.files.values():
        with fs.open_input_file(store.path(entry.key)) as f:
            values = pq.ParquetFile(f).read(columns=[column]).column(column)
        for value in pc.unique(values).to_pylist():
            if value is not None:
                rebuilt.setdefault(value, set()).add(entry.label)
    assert stored == rebuilt


def assert_key_queries_agree(store, keys) -> None:
    everything = rows_of(store)
    for k in keys:
        got = rows_of(store, filter=[[("key", "==", int(k))]])
        want = everything[everything.key == k].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)


def seeded(store, n: int = 40, appends: int = 0) -> pd.DataFrame:
    """A dataset partitioned on p with an index on key: 4 files per write."""
    df = frame(range(n))
    ka.write_dataset(df, store, UUID, partition_on=["p"], secondary_indices=["key"])
    frames = [df]
    for i in range(1, appends + 1):
        more = frame(range(i * 1000, i * 1000 + n))
        ka.write_dataset(more, store, UUID, mode="append")
        frames.append(more)
    return pd.concat(frames, ignore_index=True)


class RowChangeContract:
    """Behaviour every store must show; subclasses provide ``store``."""

    @pytest.fixture
    def store(self):  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def test_delete_by_indexed_key_rewrites_only_the_file_holding_it(self, store):
        model = seeded(store, appends=1)
        before = labels(store)
        holder = {t.label for t in ka.dataset(store, UUID, filter=[[("key", "==", 1005)]]).tasks}
        assert len(holder) == 1
        snap = ka.delete_rows(store, UUID, [[("key", "==", 1005)]])
        assert (snap.operation, snap.files_removed, snap.files_added) == ("delete_rows", 1, 1)
        assert (snap.rows_removed, snap.rows_added) == (1, 0)
        after = labels(store)
        assert before - after == holder
        (new,) = after - before
        assert new.rsplit("/", 1)[0] == next(iter(holder)).rsplit("/", 1)[0]  # same partition
        pd.testing.assert_frame_equal(
            rows_of(store), model_rows(model[model.key != 1005]), check_dtype=False
        )
        assert_index_exact(store)

    def test_upsert_half_new_half_existing(self, store):
        model = seeded(store)
        data = frame(range(30, 50), v=-1)  # 30..39 exist, 40..49 are new
        snap = ka.upsert(data, store, UUID, on="key")
        assert (snap.operation, snap.rows_added, snap.rows_removed) == ("upsert", 20, 10)
        # files of p=0..3 hold keys 30..39: each is rewritten once, with the new rows of its
        # partition in the same file
        assert snap.files_removed == 4 and snap.files_added == 4
        want = pd.concat([model[~model.key.isin(data.key)], data], ignore_index=True)
        pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
        assert_index_exact(store)
        assert_key_queries_agree(store, [30, 39, 40, 49, 5])


class TestLocal(RowChangeContract):
    @pytest.fixture
    def store(self, local_store):
        return local_store


@pytest.mark.s3
@pytest.mark.emulator
class TestS3(RowChangeContract):
    @pytest.fixture
    def store(self, s3_store):
        return s3_store


@pytest.fixture
def store(local_store):
    return local_store


# -- pruning ----------------------------------------------------------------------


def test_delete_by_partition_value_removes_whole_files_and_reads_none(store, monkeypatch):
    model = seeded(store, appends=1)
    read = []
    real = pq.ParquetFile

    def spy(source, *args, **kwargs):
        read.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    snap = ka.delete_rows(store, UUID, [[("p", "==", 1)]])
    monkeypatch.undo()
    assert (snap.files_removed, snap.files_added, snap.rows_removed) == (2, 0, 20)
    assert all("p=1" not in label for label in labels(store))
    pd.testing.assert_frame_equal(
        rows_of(store), model_rows(model[model.p != 1]), check_dtype=False
    )
    assert_index_exact(store)
    # partition values alone decide: the files go whole, without being read
    assert read == []


def test_delete_by_statistics_reads_only_files_whose_range_may_match(store):
    model = seeded(store, appends=1)  # v: 0..390 in the first write, 10000.. in the second
    first_write = {t.label for t in ka.dataset(store, UUID, version=0).tasks}
    snap = ka.delete_rows(store, UUID, [[("v", ">=", 10_200)]])
    assert snap.files_removed == 4 and snap.files_added == 4
    assert first_write <= labels(store)  # the first write's files were left alone
    want = model[model.v < 10_200]
    assert snap.rows_removed == len(model) - len(want)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)


def test_delete_that_empties_a_file_removes_it_without_a_new_one(store):
    seeded(store)
    snap = ka.delete_rows(store, UUID, [[("p", "==", 2), ("v", ">=", 0)]])
    assert (snap.files_removed, snap.files_added, snap.rows_removed) == (1, 0, 10)
    assert stored_data_keys(store) >= {
        e.key for e in ka.dataset(store, UUID).metadata.files.values()
    }


def test_delete_with_an_arrow_expression_keeps_rows_where_it_is_null(store):
    df = pd.DataFrame({"key": [1, 2, 3, 4], "x": [1.0, None, 3.0, None]})
    ka.write_dataset(df, store, UUID)
    snap = ka.delete_rows(store, UUID, pc.field("x") > 0)
    assert snap.rows_removed == 2
    got = ka.dataset(store, UUID).to_table().to_pandas().sort_values("key")
    assert got.key.tolist() == [2, 4]


def test_delete_matching_nothing_commits_no_version(store):
    seeded(store)
    snap = ka.delete_rows(store, UUID, [[("key", "==", 99_999)]])
    assert (snap.version, snap.rows_removed, snap.files_removed) == (0, 0, 0)
    assert [s.version for s in ka.history(store, UUID)] == [0]


def test_delete_all_rows_needs_all_rows(store):
    seeded(store)
    for empty in (None, []):
        with pytest.raises(ka.InvalidArgumentError, match="all_rows=True") as err:
            ka.delete_rows(store, UUID, empty)
        assert repr(empty) in str(err.value)
    snap = ka.delete_rows(store, UUID, all_rows=True)
    assert (snap.rows_removed, snap.files_removed) == (40, 4)
    assert ka.dataset(store, UUID).count_rows() == 0


# -- upsert -------------------------------------------------------------------------


def test_upsert_on_a_multi_column_key(store):
    df = pd.DataFrame({"a": [1, 1, 2, 2], "b": ["x", "y", "x", "y"], "v": [1, 2, 3, 4]})
    ka.write_dataset(df, store, UUID, partition_on=["a"])
    data = pd.DataFrame({"a": [1, 2, 3], "b": ["y", "z", "x"], "v": [20, 50, 60]})
    snap = ka.upsert(data, store, UUID, on=["a", "b"])
    assert (snap.rows_added, snap.rows_removed) == (3, 1)
    got = ka.dataset(store, UUID).to_table().to_pandas().sort_values(["a", "b"])
    assert list(zip(got.a, got.b, got.v)) == [
        (1, "x", 1),
        (1, "y", 20),
        (2, "x", 3),
        (2, "y", 4),
        (2, "z", 50),
        (3, "x", 60),
    ]


def test_upsert_moves_a_row_whose_partition_value_changed(store):
    model = seeded(store)
    data = frame([5]).assign(p=3, v=-5)  # key 5 lived in p=1
    ka.upsert(data, store, UUID, on="key")
    got = rows_of(store, filter=[[("key", "==", 5)]])
    assert got[["p", "v"]].values.tolist() == [[3, -5]]
    assert len(rows_of(store)) == len(model)
    assert_index_exact(store)


def test_upsert_writes_new_rows_in_the_dataset_layout_with_its_indices(store):
    seeded(store)
    snap = ka.upsert(frame([100, 101]), store, UUID, on="key")
    assert snap.files_removed == 0 and snap.files_added == 2
    new = labels(store) - {t.label for t in ka.dataset(store, UUID, version=0).tasks}
    assert {label.rsplit("/", 1)[0] for label in new} == {"p=0", "p=1"}
    assert_index_exact(store)


def test_time_travel_returns_the_rows_before_the_change(store):
    model = seeded(store)
    ka.delete_rows(store, UUID, [[("key", "in", [1, 2, 3])]])
    ka.upsert(frame([7], v=-7), store, UUID, on="key")
    pd.testing.assert_frame_equal(rows_of(store, version=0), model_rows(model), check_dtype=False)
    assert rows_of(store, version=1).key.tolist() == [k for k in range(40) if k not in (1, 2, 3)]
    assert rows_of(store, filter=[[("key", "==", 7)]]).v.tolist() == [-7]


def test_plateau_reads_the_result_of_every_operation(store, tmp_path):
    pl = pytest.importorskip("plateau.io.eager")
    minimalkv = pytest.importorskip("minimalkv")
    pstore = functools.partial(minimalkv.get_store_from_url, f"hfs://{store.root}")
    seeded(store)

    def plateau_rows() -> pd.DataFrame:
        df = pl.read_table(UUID, store=pstore)
        return model_rows(df.astype({"p": "int64"}))

    operations = [
        lambda: ka.delete_rows(store, UUID, [[("key", "==", 3)]]),
        lambda: ka.delete_rows(store, UUID, [[("p", "==", 2)]]),
        lambda: ka.delete_rows(store, UUID, [[("v", ">", 300)]]),
        lambda: ka.upsert(frame([0, 1, 500], v=-1), store, UUID, on="key"),
    ]
    for operation in operations:
        operation()
        pd.testing.assert_frame_equal(plateau_rows(), rows_of(store), check_dtype=False)
    got = pl.read_table(UUID, store=pstore, predicates=[[("key", "==", 500)]])
    assert got.v.tolist() == [-1]


# -- bad input: a KtkError naming the value, nothing written ------------------------


@pytest.mark.parametrize(
    "call, error, named",
    [
        (
            lambda s: ka.delete_rows(s, UUID, [[("nope", "==", 1)]]),
            ka.InvalidPredicateError,
            "nope",
        ),
        (
            lambda s: ka.delete_rows(s, UUID, pc.field("nope") == 1),
            ka.InvalidPredicateError,
            "nope",
        ),
        (lambda s: ka.upsert(frame([1]), s, UUID, on="nope"), ka.InvalidArgumentError, "nope"),
        (
            lambda s: ka.upsert(frame([1]).drop(columns="key"), s, UUID, on="key"),
            ka.InvalidArgumentError,
            "key",
        ),
        (
            lambda s: ka.upsert(frame([1, 2, 2, 3]), s, UUID, on="key"),
            ka.InvalidArgumentError,
            "{'key': 2}",
        ),
        (
            lambda s: ka.upsert(
                pd.DataFrame({"p": [0, 1], "key": [1, None], "v": [1, 2], "name": ["a", "b"]}),
                s,
                UUID,
                on="key",
            ),
            ka.InvalidArgumentError,
            "'key' has 1 null",
        ),
        (
            lambda s: ka.upsert(frame([1]).assign(extra=1), s, UUID, on="key"),
            ka.SchemaMismatchError,
            "extra",
        ),
        (
            lambda s: ka.upsert(frame([1]).assign(v="text"), s, UUID, on="key"),
            ka.SchemaMismatchError,
            "'v'",
        ),
        (lambda s: ka.upsert(frame([1]), s, UUID, on=[]), ka.InvalidArgumentError, "on=[]"),
        (lambda s: ka.delete_rows(s, UUID, "key == 1"), ka.InvalidPredicateError, "key == 1"),
    ],
)
def test_bad_input_names_the_value_and_writes_nothing(store, call, error, named):
    seeded(store)
    before = sorted(i.key for i in store.list(""))
    with pytest.raises(error) as err:
        call(store)
    assert isinstance(err.value, ka.KtkError)
    assert named in str(err.value)
    assert sorted(i.key for i in store.list("")) == before


def test_a_missing_dataset_is_dataset_not_found(store):
    with pytest.raises(ka.DatasetNotFoundError, match="'ds'"):
        ka.delete_rows(store, UUID, [[("key", "==", 1)]])
    with pytest.raises(ka.DatasetNotFoundError, match="'ds'"):
        ka.upsert(frame([1]), store, UUID, on="key")
    assert list(store.list("")) == []


# -- conflicts ----------------------------------------------------------------------


def concurrently(monkeypatch, action):
    """Run ``action`` (another writer's commit) just before the next row-level commit."""
    real = commit_module.commit

    def commit(store, dataset_uuid, change, **kwargs):
        if change.operation in ("delete_rows", "upsert"):
            monkeypatch.setattr(commit_module, "commit", real)
            action()
        return real(store, dataset_uuid, change, **kwargs)

    monkeypatch.setattr(commit_module, "commit", commit)


def test_delete_rebases_over_an_append_that_cannot_match(store, monkeypatch):
    model = seeded(store)
    concurrently(monkeypatch, lambda: ka.write_dataset(frame([500]), store, UUID, mode="append"))
    snap = ka.delete_rows(store, UUID, [[("key", "==", 5)]])
    assert snap.version == 2
    want = pd.concat([model[model.key != 5], frame([500])], ignore_index=True)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
    assert_index_exact(store)


def test_delete_conflicts_with_an_append_of_a_matching_row(store, monkeypatch):
    seeded(store)
    concurrently(monkeypatch, lambda: ka.write_dataset(frame([5]), store, UUID, mode="append"))
    with pytest.raises(ka.CommitConflictError, match="delete_rows"):
        ka.delete_rows(store, UUID, [[("key", "==", 5)]])
    assert ka.dataset(store, UUID).version == 1
    assert len(rows_of(store, filter=[[("key", "==", 5)]])) == 2  # nothing of the delete visible
    referenced = {e.key for e in ka.dataset(store, UUID).metadata.files.values()}
    assert stored_data_keys(store) == referenced  # the delete's own file is gone


def test_delete_conflicts_with_a_concurrent_rewrite_of_its_file(store, monkeypatch):
    seeded(store)
    concurrently(monkeypatch, lambda: ka.delete_rows(store, UUID, [[("key", "==", 9)]]))
    with pytest.raises(ka.CommitConflictError):
        ka.delete_rows(store, UUID, [[("key", "==", 1)]])  # keys 1 and 9 share p=1's file
    assert rows_of(store, filter=[[("key", "==", 1)]]).key.tolist() == [1]


def test_upserts_of_the_same_new_key_conflict_instead_of_duplicating(store, monkeypatch):
    seeded(store)
    concurrently(monkeypatch, lambda: ka.upsert(frame([77], v=1), store, UUID, on="key"))
    with pytest.raises(ka.CommitConflictError):
        ka.upsert(frame([77], v=2), store, UUID, on="key")
    assert rows_of(store, filter=[[("key", "==", 77)]]).v.tolist() == [1]


def test_upserts_of_other_keys_in_other_files_both_commit(store, monkeypatch):
    model = seeded(store)
    concurrently(monkeypatch, lambda: ka.upsert(frame([4], v=-4), store, UUID, on="key"))
    ka.upsert(frame([5], v=-5), store, UUID, on="key")  # p=1 vs p=0: other files
    got = rows_of(store)
    assert got[got.key.isin([4, 5])].v.tolist() == [-4, -5]
    assert len(got) == len(model)
    assert_index_exact(store)


def _worker(root: str, role: str, rounds: int, start: Any) -> list[tuple[int, str, list[int], int]]:
    """Commit ``rounds`` operations, retrying conflicts; returns (version, role, keys, v)."""
    import ktk_arrow as ka
    import ktk_arrow.rows  # imported before the start, so that the writers race

    start.wait()
    done = []
    for i in range(rounds):
        if role == "append":
            keys, v = list(range(1000 + 10 * i, 1010 + 10 * i)), i
        else:
            base = 0 if role == "upsert-a" else 20
            keys, v = list(range(base + i, base + i + 8)), 100 + i
        data = frame(keys, v=v)
        while True:
            try:
                if role == "append":
                    snap = ka.write_dataset(data, root, UUID, mode="append")
                else:
                    snap = ka.upsert(data, root, UUID, on="key")
                break
            except ka.CommitConflictError:
                continue
        done.append((snap.version, role, keys, v))
    return done


def test_concurrent_upserts_and_appends_equal_a_serial_order(tmp_path):
    root = str(tmp_path / "store")
    seeded(resolve_store(root), n=40)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        start = manager.Barrier(3)
        results = pool.starmap(
            _worker, [(root, role, 3, start) for role in ("append", "upsert-a", "upsert-b")]
        )
    commits = sorted(c for result in results for c in result)
    # every operation is one version, and replaying them in version order gives the dataset
    assert [c[0] for c in commits] == list(range(1, 10))
    model = frame(range(40))
    for _version, role, keys, v in commits:
        data = frame(keys, v=v)
        if role != "append":
            model = model[~model.key.isin(keys)]
        model = pd.concat([model, data], ignore_index=True)
    store = resolve_store(root)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(model), check_dtype=False)
    assert_index_exact(store)


# -- a random sequence of changes equals a pandas model -----------------------------

keys_st = st.lists(st.integers(0, 12), min_size=1, max_size=6)
operation = st.one_of(
    st.tuples(st.just("append"), keys_st),
    st.tuples(st.just("upsert"), st.lists(st.integers(0, 12), min_size=1, max_size=6, unique=True)),
    st.tuples(st.just("delete_keys"), keys_st),
    st.tuples(st.just("delete_partition"), st.integers(0, 2)),
    st.tuples(st.just("delete_v_above"), st.integers(0, 120)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=6))
def test_random_changes_equal_a_pandas_model(sequence):
    root = tempfile.mkdtemp()
    try:
        store = resolve_store(root)
        model = frame([0, 1, 2, 3], part_count=3)
        ka.write_dataset(model, store, UUID, partition_on=["p"], secondary_indices=["key"])
        for step, (kind, arg) in enumerate(sequence):
            if kind in ("append", "upsert"):
                data = frame(arg, part_count=3, v=step)
                if kind == "append":
                    ka.write_dataset(data, store, UUID, mode="append")
                else:
                    ka.upsert(data, store, UUID, on="key")
                    model = model[~model.key.isin(arg)]
                model = pd.concat([model, data], ignore_index=True)
            elif kind == "delete_keys":
                ka.delete_rows(store, UUID, [[("key", "in", arg)]])
                model = model[~model.key.isin(arg)]
            elif kind == "delete_partition":
                ka.delete_rows(store, UUID, [[("p", "==", arg)]])
                model = model[model.p != arg]
            else:
                ka.delete_rows(store, UUID, pc.field("v") > arg)
                model = model[~(model.v > arg)]
            got = ka.dataset(store, UUID).to_table().to_pandas()
            pd.testing.assert_frame_equal(
                model_rows(got), model_rows(model), check_dtype=False, check_index_type=False
            )
        if ka.dataset(store, UUID).metadata.indices:
            assert_index_exact(store)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_rows_of_a_rewritten_file_keep_their_order_and_types(store):
    df = pd.DataFrame(
        {
            "key": np.arange(10),
            "cat": pd.Categorical(list("abababcbab")),
            "ts": pd.date_range("2020-01-01", periods=10, freq="h"),
            "lst": [[i, i + 1] for i in range(10)],
        }
    )
    ka.write_dataset(df, store, UUID)
    ka.delete_rows(store, UUID, [[("key", "in", [2, 5])]])
    got = ka.dataset(store, UUID).to_table()
    before = ka.dataset(store, UUID, version=0).to_table()
    assert got.schema == before.schema
    want = before.filter(pc.invert(pc.is_in(before.column("key"), pa.array([2, 5]))))
    assert got.to_pylist() == want.to_pylist()


# -- the ktk command ------------------------------------------------------------------


def ktk(capsys, *argv: str) -> tuple[int, str, str]:
    from ktk_arrow.cli import main

    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ktk_delete_rows_and_upsert(tmp_path, capsys):
    import json

    root = str(tmp_path / "store")
    seeded(resolve_store(root))
    status, out, _ = ktk(capsys, "delete-rows", root, UUID, "--where", "key == 3 or key == 4")
    assert status == 0 and "deleted 2 rows" in out and "version 1" in out
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame([5, 100], v=-1), preserve_index=False), path)
    status, out, _ = ktk(capsys, "upsert", root, UUID, str(path), "--on", "key", "--json")
    assert status == 0
    assert json.loads(out) == {
        "version": 2,
        "operation": "upsert",
        "rows_added": 2,
        "rows_removed": 1,
        "files_added": 2,
        "files_removed": 1,
    }
    got = rows_of(resolve_store(root))
    assert sorted(got.key) == sorted([k for k in range(40) if k not in (3, 4)] + [100])
    assert got[got.key.isin([5, 100])].v.tolist() == [-1, -1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["delete-rows", "{root}", UUID], "--where"),
        (["delete-rows", "{root}", UUID, "--where", "nope == 1"], "--where 'nope == 1'"),
        (["delete-rows", "{root}", UUID, "--where", "key ==="], "key ==="),
        (["delete-rows", "{root}", "other", "--where", "key == 1"], "'other'"),
        (["upsert", "{root}", UUID, "{root}/missing.parquet", "--on", "key"], "missing.parquet"),
        (["upsert", "{root}", UUID, "{file}", "--on", "nope"], "nope"),
    ],
)
def test_ktk_row_changes_report_bad_input_plainly(tmp_path, capsys, argv, message):
    root = str(tmp_path / "store")
    seeded(resolve_store(root))
    file = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame([1]), preserve_index=False), file)
    argv = [a.format(root=root, file=file) for a in argv]
    status, out, err = ktk(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("ktk: error: ") and message in err
    assert "Traceback" not in err
    assert ka.dataset(root, UUID).version == 0


def test_an_expression_wider_than_its_predicate_deletes_only_its_rows(store):
    model = seeded(store)
    # the multiplication has no predicate form: pruning uses key in (...), rows the whole filter
    expr = pc.field("key").isin([1, 2, 3]) & (pc.multiply(pc.field("v"), 2) > 25)
    snap = ka.delete_rows(store, UUID, expr)
    assert snap.rows_removed == 2
    want = model[~model.key.isin([2, 3])]
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)


def test_a_small_buffer_writes_each_rewritten_file_on_its_own(store, monkeypatch):
    from ktk_arrow import rows

    model = seeded(store, appends=2)
    monkeypatch.setattr(rows, "BUFFER_BYTES", 1)
    snap = ka.upsert(frame([1, 1001, 2001, 5000], v=-1), store, UUID, on="key")
    # p=1 holds keys 1, 1001 and 2001 in three files: three rewritten files, plus 5000 (p=0)
    assert (snap.files_removed, snap.files_added) == (3, 4)
    data = frame([1, 1001, 2001, 5000], v=-1)
    want = pd.concat([model[~model.key.isin(data.key)], data], ignore_index=True)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
    assert_index_exact(store)


def test_row_changes_on_a_dataset_plateau_wrote(store):
    pl = pytest.importorskip("plateau.io.eager")
    minimalkv = pytest.importorskip("minimalkv")
    pstore = functools.partial(minimalkv.get_store_from_url, f"hfs://{store.root}")
    df = frame(range(20))
    pl.store_dataframes_as_dataset(
        store=pstore, dataset_uuid=UUID, dfs=[df], partition_on=["p"], secondary_indices=["key"]
    )
    snap = ka.delete_rows(store, UUID, [[("p", "==", 1)]])  # plateau records no row counts
    assert (snap.files_removed, snap.rows_removed) == (1, 5)
    snap = ka.upsert(frame([2, 100], v=-1), store, UUID, on="key")
    assert (snap.rows_added, snap.rows_removed) == (2, 1)
    want = pd.concat([df[(df.p != 1) & (df.key != 2)], frame([2, 100], v=-1)], ignore_index=True)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
    got = pl.read_table(UUID, store=pstore)
    pd.testing.assert_frame_equal(
        model_rows(got.astype({"p": "int64"})), model_rows(want), check_dtype=False
    )
    assert_index_exact(store)


def test_row_changes_keep_the_index_exact_in_lazy_view_mode(store):
    model = seeded(store)
    commit_module.configure(store, UUID, view="lazy")  # index changes go to index segments
    more = frame(range(1000, 1040))
    ka.write_dataset(more, store, UUID, mode="append")
    ka.delete_rows(store, UUID, [[("key", "in", [5, 1005])]])
    ka.upsert(frame([1, 1001, 5000], v=-1), store, UUID, on="key")
    assert commit_module.load(store, UUID).index_tail  # the index has segments
    data = frame([1, 1001, 5000], v=-1)
    want = pd.concat([model, more], ignore_index=True)
    want = want[~want.key.isin([5, 1005, 1, 1001])]
    want = pd.concat([want, data], ignore_index=True)
    pd.testing.assert_frame_equal(rows_of(store), model_rows(want), check_dtype=False)
    assert_index_exact(store)
    assert_key_queries_agree(store, [1, 5, 1001, 1005, 5000, 7])


def test_upsert_reads_only_the_files_the_index_names(store, monkeypatch):
    seeded(store, appends=2)  # 12 files; key 1001 is in one of them
    opened = []
    real = pq.ParquetFile

    def spy(source, *args, **kwargs):
        opened.append(getattr(source, "path", source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    snap = ka.upsert(frame([1001, 7777], v=-1), store, UUID, on="key")
    monkeypatch.undo()
    holder = ka.dataset(store, UUID, version=2, filter=[[("key", "==", 1001)]]).tasks
    assert len(opened) == 1 and len(holder) == 1
    assert (snap.files_removed, snap.rows_removed, snap.rows_added) == (1, 1, 2)
