"""Auto-compaction: the ``auto_compact`` dataset setting keeps appends from piling up small files.

Every test writes and reads real datasets; failures are injected only into
the compaction step, never into the append it follows.
"""

from __future__ import annotations

import collections
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow import commit as committer
from ktk_arrow import planning, write
from ktk_arrow.io import eager
from ktk_arrow.write import AutoCompact

compact_module = importlib.import_module("ktk_arrow.compact")

UUID = "events"
SRC = Path(__file__).parents[1] / "src"


def batch(i: int, rows: int = 10, partitions: tuple = ("a", "b")) -> pa.Table:
    """``rows`` rows with unique ``x``, spread over ``partitions``."""
    xs = list(range(i * rows, (i + 1) * rows))
    return pa.table(
        {
            "p": [partitions[x % len(partitions)] for x in xs],
            "x": pa.array(xs, pa.int64()),
            "s": [f"s{x}" for x in xs],
        }
    )


def sorted_rows(table: pa.Table) -> list[dict]:
    return table.select(["p", "x", "s"]).sort_by("x").to_pylist()


def files_per_partition(path: str, **kwargs) -> dict[str, int]:
    return dict(
        collections.Counter(
            t.label.rsplit("/", 1)[0] for t in ka.dataset(path, UUID, **kwargs).tasks
        )
    )


def operations(path: str) -> list[str]:
    return [s.operation for s in ka.history(path, UUID)]


def parquet_files(path: str) -> set[str]:
    """The data files on disk (keys relative to the store root)."""
    root = Path(path)
    return {str(p.relative_to(root)) for p in (root / UUID / "table").rglob("*.parquet")}


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_hundred_appends_stay_bounded_and_keep_exactly_the_appended_rows(path, no_warnings):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 8})
    written = [batch(0)]
    for i in range(1, 100):
        snap = ka.write_dataset(batch(i), path, UUID, mode="append")
        written.append(batch(i))
        assert snap.operation == "append"  # the write's snapshot, not the compaction's
        counts = files_per_partition(path)
        assert set(counts) == {"p=a", "p=b"}
        assert max(counts.values()) <= 8 + 1, (i, counts)
    assert sorted_rows(ka.dataset(path, UUID).to_table()) == sorted_rows(pa.concat_tables(written))
    ops = operations(path)
    assert ops.count("append") == 99
    assert ops.count("compact") >= 10
    # a compaction never adds or removes rows
    assert all(s.rows_added == 0 for s in ka.history(path, UUID) if s.operation == "compact")


def test_time_travel_to_an_append_before_a_compaction_reads_its_rows(path):
    expected: dict[int, list[dict]] = {}
    written: list[pa.Table] = []
    for i in range(20):
        kwargs = {"partition_on": ["p"], "auto_compact": {"min_files": 3}} if i == 0 else {}
        snap = ka.write_dataset(batch(i), path, UUID, mode="append", **kwargs)
        written.append(batch(i))
        expected[snap.version] = sorted_rows(pa.concat_tables(written))
    history = ka.history(path, UUID)
    compacts = [s.version for s in history if s.operation == "compact"]
    assert len(compacts) >= 4
    before_a_compaction = [v for v in expected if v + 1 in compacts]
    assert before_a_compaction
    for version, rows in expected.items():
        assert sorted_rows(ka.dataset(path, UUID, version=version).to_table()) == rows
    for version in before_a_compaction:  # the files the compaction replaced are still read
        assert max(files_per_partition(path, version=version).values()) == 4
        assert max(files_per_partition(path, version=version + 1).values()) == 1


def test_a_concurrent_partition_overwrite_wins_and_the_append_stays(path, monkeypatch, no_warnings):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 3})
    for i in range(1, 3):
        ka.write_dataset(batch(i), path, UUID, mode="append")
    replacement = pa.table({"p": ["b"], "x": pa.array([-1], pa.int64()), "s": ["new"]})
    rewrite = compact_module._rewrite
    overwrote: list[int] = []

    def rewrite_while_someone_overwrites_b(*args, **kwargs):
        writer = rewrite(*args, **kwargs)
        if not overwrote:
            snap = ka.write_dataset(
                replacement, path, UUID, mode="overwrite", delete_scope=[{"p": "b"}]
            )
            overwrote.append(snap.version)
        return writer

    monkeypatch.setattr(compact_module, "_rewrite", rewrite_while_someone_overwrites_b)
    before = parquet_files(path)
    snap = ka.write_dataset(batch(3), path, UUID, mode="append")  # 4 files in a and b: compacts
    assert snap.operation == "append" and overwrote == [snap.version + 1]
    # the compaction lost the race and committed nothing; its own files are gone again
    assert operations(path)[-2:] == ["append", "overwrite_partitions"]
    ours = ka.dataset(path, UUID, version=snap.version).to_table()
    assert sorted_rows(ours) == sorted_rows(pa.concat_tables([batch(i) for i in range(4)]))
    a_rows = [r for i in range(4) for r in sorted_rows(batch(i)) if r["p"] == "a"]
    assert sorted_rows(ka.dataset(path, UUID).to_table()) == sorted(
        [*a_rows, *replacement.to_pylist()], key=lambda r: r["x"]
    )
    assert len(parquet_files(path) - before) == 3  # the append's two files and the overwrite's
    # the next write tries again, and compacts partition a
    monkeypatch.setattr(compact_module, "_rewrite", rewrite)
    ka.write_dataset(batch(4), path, UUID, mode="append")
    assert operations(path)[-1] == "compact"
    assert files_per_partition(path)["p=a"] == 1


def test_a_conflict_in_the_compaction_is_skipped_silently(path, monkeypatch, no_warnings):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 2})
    ka.write_dataset(batch(1), path, UUID, mode="append")

    attempts: list[int] = []

    def conflict(*args, **kwargs):
        attempts.append(1)
        raise ka.CommitConflictError("a concurrent commit changed the compacted files")

    monkeypatch.setattr(compact_module, "_commit", conflict)
    before = parquet_files(path)
    snap = ka.write_dataset(batch(2), path, UUID, mode="append")
    assert attempts == [1]
    assert snap.operation == "append"
    assert operations(path)[-1] == "append"
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(3)]))
    # the compaction's files were deleted; the append's stay
    assert len(parquet_files(path) - before) == 2
    assert parquet_files(path) == {t.key for t in ka.dataset(path, UUID).tasks}


@pytest.mark.parametrize("step", ["_rewrite", "_commit"])
def test_a_store_error_in_the_compaction_is_a_warning_and_the_append_stays(path, monkeypatch, step):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 2})
    ka.write_dataset(batch(1), path, UUID, mode="append")

    def fail(*args, **kwargs):
        raise ka.StoreError("the store is unreachable")

    monkeypatch.setattr(compact_module, step, fail)
    with pytest.warns(UserWarning, match=r"auto-compaction of dataset 'events' .*StoreError") as w:
        snap = ka.write_dataset(batch(2), path, UUID, mode="append")
    assert "the write itself is committed" in str(w[0].message)
    assert "ka.compact(store, 'events')" in str(w[0].message)
    assert w[0].filename == __file__  # points at the user's write
    assert snap.operation == "append"
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(3)]))


def test_ctrl_c_during_the_compaction_keeps_the_committed_append(path, monkeypatch):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 2})
    ka.write_dataset(batch(1), path, UUID, mode="append")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compact_module, "_rewrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ka.write_dataset(batch(2), path, UUID, mode="append")
    table = ka.dataset(path, UUID).to_table()  # every file of the append is still there
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(3)]))


def test_ctrl_c_during_the_compaction_of_a_distributed_write_keeps_its_files(path, monkeypatch):
    """``PreparedWrite.commit`` (the Dask facades' commit) marks the interrupt: files stay."""
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 1})
    prepared = write.prepare_write(ka.resolve_store(path), UUID, mode="append")
    writer = prepared.writer_spec().open()
    writer.write(batch(1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compact_module, "_rewrite", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        prepared.commit(writer.entries, writer.index_delta, writer.schema)
    assert not committer.may_discard(info.value)
    writer.release()
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(0), batch(1)]))


def test_the_dask_update_facade_compacts(path, no_warnings):
    dd = pytest.importorskip("dask.dataframe")
    kdd = importlib.import_module("ktk_arrow.io.dask.dataframe")
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 3})
    for i in range(1, 6):
        ddf = dd.from_pandas(batch(i).to_pandas(), npartitions=2)
        kdd.update_dataset_from_ddf(ddf, path, UUID).compute(scheduler="sync")
    assert "compact" in operations(path)
    assert max(files_per_partition(path).values()) <= 4
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(6)]))


def test_off_by_default_then_turned_on_then_off(path, no_warnings):
    for i in range(12):
        ka.write_dataset(batch(i), path, UUID, mode="append", partition_on=["p"])
    assert "compact" not in operations(path)
    assert files_per_partition(path) == {"p=a": 12, "p=b": 12}
    assert "auto_compact" not in ka.dataset(path, UUID).metadata.settings

    ka.write_dataset(batch(12), path, UUID, mode="append", auto_compact=True)
    assert ka.dataset(path, UUID).metadata.settings["auto_compact"] == {
        "min_files": 8,
        "target_size": 64 * 1024 * 1024,
    }
    assert operations(path)[-2:] == ["append", "compact"]
    assert files_per_partition(path) == {"p=a": 1, "p=b": 1}

    ka.write_dataset(batch(13), path, UUID, mode="append", auto_compact=False)
    assert "auto_compact" not in ka.dataset(path, UUID).metadata.settings
    for i in range(14, 24):
        ka.write_dataset(batch(i), path, UUID, mode="append")
    assert operations(path)[-1] == "append"
    assert files_per_partition(path) == {"p=a": 12, "p=b": 12}
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(24)]))


def test_only_the_partitions_a_write_touched_are_compacted(path, monkeypatch, no_warnings):
    many = ("a", "b", "c", "d", "e")
    for i in range(6):
        ka.write_dataset(batch(i, partitions=many), path, UUID, mode="append", partition_on=["p"])
    planned: list[planning.ScanFilter] = []
    plan = planning.plan

    def spy(meta, scan_filter=planning.NO_FILTER, load_index=None):
        planned.append(scan_filter)
        return plan(meta, scan_filter, load_index)

    monkeypatch.setattr(planning, "plan", spy)
    only_c = pa.table({"p": ["c"], "x": pa.array([10_000], pa.int64()), "s": ["late"]})
    ka.write_dataset(only_c, path, UUID, mode="append", auto_compact={"min_files": 4})
    # planning (of the write's state, then of the latest) was handed the touched partition only
    assert len(planned) == 2
    for scan_filter in planned:
        clauses = scan_filter.predicate.clauses
        assert [[(t.column, t.op, t.value) for t in c] for c in clauses] == [[("p", "==", "c")]]
    assert files_per_partition(path) == {"p=a": 6, "p=b": 6, "p=c": 1, "p=d": 6, "p=e": 6}


def test_an_append_that_compacts_nothing_reads_nothing_more(path, monkeypatch, no_warnings):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 3})
    loads: list[str] = []
    load = committer.load

    def counting_load(*args, **kwargs):
        loads.append("load")
        return load(*args, **kwargs)

    monkeypatch.setattr(committer, "load", counting_load)
    ka.write_dataset(batch(1), path, UUID, mode="append")  # 2 files per partition
    ka.write_dataset(batch(2), path, UUID, mode="append")  # 3: not more than min_files
    assert loads == []
    ka.write_dataset(batch(3), path, UUID, mode="append")  # 4: compacts
    assert loads == ["load"]
    assert operations(path)[-1] == "compact"


def test_partition_values_of_every_kind_are_selected(path, no_warnings):
    values = ["US/CA", None, "ü=%", "plain"]
    frame = pa.table(
        {
            "p": values,
            "flag": [True, False, True, False],
            "day": pa.array([dt.datetime(2024, 1, 1, 12)] * 4, pa.timestamp("us")),
            "x": pa.array([0, 1, 2, 3], pa.int64()),
        }
    )
    for i in range(4):
        ka.write_dataset(
            frame.set_column(3, "x", pa.array([4 * i + k for k in range(4)], pa.int64())),
            path,
            UUID,
            mode="append",
            partition_on=["p", "flag", "day"],
            auto_compact={"min_files": 3},
        )
    counts = files_per_partition(path)
    assert len(counts) == 4 and set(counts.values()) == {1}
    assert operations(path)[-1] == "compact"
    table = ka.dataset(path, UUID).to_table()
    assert sorted(table.column("x").to_pylist()) == list(range(16))
    assert sorted(table.column("p").to_pylist(), key=str) == sorted(values * 4, key=str)


@pytest.mark.parametrize(
    "bad, words",
    [
        (0, "must be True, False, a dict"),
        ("yes", "must be True, False, a dict"),
        ({"min_files": 0}, "min_files must be a positive int (files), got 0"),
        ({"min_files": True}, "min_files must be a positive int (files), got True"),
        ({"target_size": 1.5}, "target_size must be a positive int (bytes), got 1.5"),
        ({"target_size": -1}, "target_size must be a positive int (bytes), got -1"),
        ({"max_files": 3}, "unknown keys ['max_files']"),
    ],
)
def test_invalid_settings_are_refused_before_anything_is_written(path, bad, words):
    with pytest.raises(ka.InvalidArgumentError) as info:
        ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact=bad)
    assert words in str(info.value)
    assert "auto_compact" in str(info.value)
    assert isinstance(info.value, ka.KtkError)
    assert not os.path.exists(path) or not parquet_files(path)


def test_the_dataclass_validates_and_is_accepted(path):
    with pytest.raises(ka.InvalidArgumentError, match="min_files must be a positive int"):
        ka.AutoCompact(min_files=-2)
    assert ka.AutoCompact is AutoCompact
    ka.write_dataset(batch(0), path, UUID, auto_compact=ka.AutoCompact(min_files=2, target_size=10))
    assert ka.dataset(path, UUID).metadata.settings["auto_compact"] == {
        "min_files": 2,
        "target_size": 10,
    }


def test_a_malformed_stored_setting_warns_and_the_append_stays(path):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"])
    store = ka.resolve_store(path)
    committer.commit(
        store, UUID, committer.Change(operation="configure", settings={"auto_compact": "often"})
    )
    with pytest.warns(UserWarning, match="auto_compact must be True, False"):
        snap = ka.write_dataset(batch(1), path, UUID, mode="append")
    assert ka.dataset(path, UUID).version == snap.version


def test_the_setting_persists_for_other_writers(path, no_warnings):
    ka.write_dataset(batch(0), path, UUID, partition_on=["p"], auto_compact={"min_files": 3})
    view = json.loads(Path(path, f"{UUID}.by-dataset-metadata.json").read_text())
    assert view["ktk_arrow"]["settings"]["auto_compact"] == {
        "min_files": 3,
        "target_size": 64 * 1024 * 1024,
    }
    # another process appends without any auto_compact argument
    code = (
        "import pyarrow as pa, ktk_arrow as ka\n"
        "for i in range(1, 9):\n"
        "    xs = list(range(i * 10, i * 10 + 10))\n"
        "    t = pa.table({'p': [('a', 'b')[x % 2] for x in xs], 'x': pa.array(xs, pa.int64()),\n"
        "                  's': [f's{x}' for x in xs]})\n"
        f"    ka.write_dataset(t, {path!r}, {UUID!r}, mode='append')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert operations(path).count("compact") >= 2
    assert max(files_per_partition(path).values()) <= 3
    table = ka.dataset(path, UUID).to_table()
    assert sorted_rows(table) == sorted_rows(pa.concat_tables([batch(i) for i in range(9)]))


def test_the_kartothek_update_facade_compacts(path, no_warnings):
    frames = [batch(i).to_pandas() for i in range(12)]
    eager.store_dataframes_as_dataset(path, UUID, frames[0], partition_on=["p"])
    ka.write_dataset([], path, UUID, mode="append", allow_empty=True, auto_compact=True)
    assert ka.dataset(path, UUID).metadata.settings["auto_compact"]["min_files"] == 8
    for frame in frames[1:]:
        eager.update_dataset_from_dataframes(frame, store=path, dataset_uuid=UUID)
        assert max(files_per_partition(path).values()) <= 9
    assert "compact" in operations(path)
    got = eager.read_table(UUID, path).sort_values("x")
    want = pd.concat(frames).sort_values("x")
    for column in ("p", "x", "s"):
        assert got[column].astype(object).tolist() == want[column].astype(object).tolist()


def test_plateau_reads_an_auto_compacted_dataset(tmp_path, no_warnings):
    pl = pytest.importorskip("plateau.io.eager")
    minimalkv = pytest.importorskip("minimalkv")
    root = tmp_path / "store"
    root.mkdir()
    for i in range(20):
        kwargs = {"partition_on": ["p"], "auto_compact": {"min_files": 4}} if i == 0 else {}
        ka.write_dataset(batch(i), str(root), UUID, mode="append", **kwargs)
    assert "compact" in operations(str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plateau's own deprecations
        theirs = pl.read_table(UUID, lambda: minimalkv.get_store_from_url(f"hfs://{root}"))
    theirs = theirs.sort_values("x").reset_index(drop=True)
    want = pa.concat_tables([batch(i) for i in range(20)]).to_pandas()
    assert theirs["x"].tolist() == want["x"].tolist()
    assert theirs["s"].tolist() == want["s"].tolist()
    assert theirs["p"].astype(str).tolist() == want["p"].tolist()
