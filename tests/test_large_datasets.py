"""Large datasets (format 2): roots with manifest segments, index tails, lazy views.

The limits are lowered so that small test datasets behave like large ones:
every behaviour here is what a dataset of 100,000 partitions does.
"""

from __future__ import annotations

import functools
import os

import minimalkv
import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow import check, commit
from ktk_arrow.spec import keys, manifest
from ktk_arrow.storage import LocalStore


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(commit, "EAGER_MAX_FILES", 20)
    monkeypatch.setattr(commit, "EAGER_MAX_PAIRS", 10_000)
    monkeypatch.setattr(manifest, "INLINE_MAX", 4)
    monkeypatch.setattr(manifest, "FANIN", 3)
    monkeypatch.setattr(commit, "VIEW_BYTES_PER_COMMIT", 500)


def frame(start: int, n: int, parts: int = 50) -> pd.DataFrame:
    ids = list(range(start, start + n))
    return pd.DataFrame({"p": [i % parts for i in ids], "c": ids, "v": [float(i) for i in ids]})


def plateau_table(root: str) -> pd.DataFrame:
    from plateau.io.eager import read_table

    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    return read_table("ds", store)


def metadata_bytes(root: str) -> dict[str, int]:
    """Sizes of every object that is not a data file."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root)
            if not key.startswith("ds/table/") or key.endswith("_common_metadata"):
                out[key] = os.path.getsize(path)
    return out


def test_a_large_dataset_is_lazy_and_an_append_writes_o_of_change(tmp_path, small_limits):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 200), root, "ds", partition_on=["p"], secondary_indices=["c"])
    meta = commit.load(LocalStore(root), "ds")
    assert commit.is_lazy(meta) and meta.segments and not meta.inline_files
    written = []
    for step in range(6):
        before = metadata_bytes(root)
        ka.write_dataset(frame(1000 + step, 1), root, "ds", mode="append")
        after = metadata_bytes(root)
        written.append(sum(size for key, size in after.items() if before.get(key) != size))
    view = os.path.getsize(os.path.join(root, keys.metadata_key("ds")))
    # no append rewrote the view (200 files) or the whole index; each wrote a few KB
    assert max(written) < view
    assert max(written) < 8_000
    rows = ka.dataset(root, "ds").to_table().num_rows
    assert rows == 206


def test_reads_of_a_lazy_dataset_see_every_commit_and_plateau_sees_a_refreshed_view(
    tmp_path, small_limits
):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 100), root, "ds", partition_on=["p"], secondary_indices=["c"])
    for step in range(10):
        ka.write_dataset(frame(100 + step * 3, 3), root, "ds", mode="append")
    ours = ka.dataset(root, "ds").to_table().to_pandas().sort_values("c")
    assert ours.c.tolist() == list(range(130))
    theirs = plateau_table(root)
    # plateau sees one whole snapshot: an older version's rows, exactly
    lag_version = commit.load_view(LocalStore(root), "ds").version
    expected = ka.dataset(root, "ds", version=lag_version).to_table().num_rows
    assert len(theirs) == expected and set(theirs.c) <= set(ours.c)
    commit.refresh_view(LocalStore(root), "ds")
    theirs = plateau_table(root).sort_values("c")
    assert theirs.c.tolist() == ours.c.tolist()


def test_a_lazy_view_is_read_from_its_prefix_and_the_head(tmp_path, small_limits, monkeypatch):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 100), root, "ds", partition_on=["p"])
    for step in range(3):
        ka.write_dataset(frame(100 + step, 1), root, "ds", mode="append")
    calls: list[str] = []
    real_get, real_prefix = LocalStore.get, LocalStore.get_prefix

    def get(self, key):
        calls.append(key)
        return real_get(self, key)

    def prefix(self, key, length):
        calls.append(f"prefix:{key}")
        return real_prefix(self, key, length)

    monkeypatch.setattr(LocalStore, "get", get)
    monkeypatch.setattr(LocalStore, "get_prefix", prefix)
    commit._SEGMENTS.clear()
    ds = ka.dataset(root, "ds")
    assert ds.version == 3
    assert calls[:3] == [
        f"prefix:{keys.metadata_key('ds')}",
        keys.head_key("ds"),
        keys.log_key("ds", 4),
    ]
    assert all("/_ktk/manifests/" in key for key in calls[3:])  # the files of an unfiltered scan
    calls.clear()
    assert ka.dataset(root, "ds", filter=[[("p", "==", 7)]]).to_table().num_rows == 2
    segment_reads = [k for k in calls if "/_ktk/manifests/" in k]
    meta = commit.load(LocalStore(root), "ds")
    assert len(segment_reads) < len(meta.segments) or len(meta.segments) == 1


def test_planning_reads_only_segments_whose_bounds_can_match(tmp_path, small_limits, monkeypatch):
    root = str(tmp_path)
    # one partition value per append: each segment covers a narrow range of p
    ka.write_dataset(frame(0, 25, parts=1000), root, "ds", partition_on=["p"])
    for start in range(25, 200, 25):
        ka.write_dataset(frame(start, 25, parts=1000), root, "ds", mode="append")
    meta = commit.load(LocalStore(root), "ds")
    assert len(meta.segments) >= 2
    read: list[str] = []
    real = commit.read_segment

    def counting(store, segment):
        read.append(segment.key)
        return real(store, segment)

    monkeypatch.setattr(commit, "read_segment", counting)
    fresh = commit.load(LocalStore(root), "ds")
    table = ka.dataset(root, "ds", filter=[[("p", "==", 30)]]).to_table()
    assert table.column("c").to_pylist() == [30]
    holding = [s for s in fresh.segments if s.bounds["p"][0] <= 30 <= s.bounds["p"][1]]
    assert len(set(read)) <= len(holding) < len(fresh.segments)


def test_removals_rewrite_only_the_segments_that_held_the_files(tmp_path, small_limits):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 200), root, "ds", partition_on=["p"], secondary_indices=["c"])
    before = {s.key for s in commit.load(LocalStore(root), "ds").segments}
    ka.write_dataset(
        frame(5000, 1, parts=1).assign(p=3), root, "ds", mode="overwrite", delete_scope=[{"p": 3}]
    )
    meta = commit.load(LocalStore(root), "ds")
    table = ka.dataset(root, "ds").to_table().to_pandas()
    assert sorted(table[table.p == 3].c) == [5000]
    assert len(table) == 200 - 4 + 1
    assert ka.dataset(root, "ds", filter=[[("c", "==", 3)]]).to_table().num_rows == 0
    assert ka.dataset(root, "ds", filter=[[("c", "==", 5000)]]).to_table().num_rows == 1
    assert {s.key for s in meta.segments} != before
    # the view plateau reads after a refresh lists exact indices
    commit.refresh_view(LocalStore(root), "ds")
    theirs = plateau_table(root)
    assert sorted(theirs.c) == sorted(table.c)


def test_index_tails_grow_per_commit_and_merge_in_tiers(tmp_path, small_limits):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 100), root, "ds", partition_on=["p"], secondary_indices=["c"])
    for step in range(12):
        ka.write_dataset(frame(100 + step, 1), root, "ds", mode="append")
        tail = commit.load(LocalStore(root), "ds").index_tail.get("c", ())
        assert len(tail) < 3 * manifest.FANIN  # merged in tiers, never one per commit
    for value in (0, 55, 105, 111):
        got = ka.dataset(root, "ds", filter=[[("c", "==", value)]]).to_table()
        assert got.column("c").to_pylist() == [value]
    got = ka.dataset(root, "ds", filter=[[("c", "in", [3, 104, 999])]]).to_table()
    assert sorted(got.column("c").to_pylist()) == [3, 104]


def test_time_travel_reaches_versions_written_before_the_dataset_grew(tmp_path, small_limits):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 10), root, "ds", partition_on=["p"], secondary_indices=["c"])
    assert not commit.load(LocalStore(root), "ds").segments  # small: the old, full-state format
    ka.write_dataset(frame(10, 100), root, "ds", mode="append")
    ka.write_dataset(frame(110, 5), root, "ds", mode="append")
    assert commit.load(LocalStore(root), "ds").segments
    assert ka.dataset(root, "ds", version=0).to_table().num_rows == 10
    assert ka.dataset(root, "ds", version=1).to_table().num_rows == 110
    assert ka.dataset(root, "ds").to_table().num_rows == 115
    assert ka.dataset(root, "ds", version=0, filter=[[("c", "==", 5)]]).count_rows() == 1


def test_gc_keeps_live_segments_and_collects_replaced_ones(tmp_path, small_limits):
    import datetime as dt

    root = str(tmp_path)
    store = LocalStore(root)
    ka.write_dataset(frame(0, 100), root, "ds", partition_on=["p"], secondary_indices=["c"])
    for step in range(10):
        ka.write_dataset(frame(100 + step, 1), root, "ds", mode="append")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)
    # all versions retained: only files no version references (index files of views
    # since replaced, index segments merged again within their commit) are garbage
    early = commit.garbage_collect(store, "ds", now=later)
    used = set().union(
        *(commit.referenced_keys(commit.load_version(store, "ds", v)) for v in range(11))
    )
    assert early and not set(early) & used
    commit.expire(store, "ds", keep_last=1, grace_period=dt.timedelta(0))
    deleted = commit.garbage_collect(store, "ds", now=later)
    assert any("/_ktk/index/" in key for key in deleted)  # merged-away index segments
    commit._SEGMENTS.clear()
    assert ka.dataset(root, "ds").to_table().num_rows == 110
    assert ka.dataset(root, "ds", filter=[[("c", "==", 104)]]).count_rows() == 1
    assert len(plateau_table(root)) == 110
    report = check.check_dataset(store, "ds")
    assert not report.problems, report.problems


def test_view_mode_setting(tmp_path):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 10), root, "ds", partition_on=["p"])
    commit.configure(LocalStore(root), "ds", view="lazy")
    ka.write_dataset(frame(10, 5), root, "ds", mode="append")
    ka.write_dataset(frame(15, 5), root, "ds", mode="append")
    assert ka.dataset(root, "ds").to_table().num_rows == 20
    assert len(plateau_table(root)) == 10  # refreshed when it became lazy, not since
    commit.refresh_view(LocalStore(root), "ds")
    assert len(plateau_table(root)) == 20
    commit.configure(LocalStore(root), "ds", view="eager")
    ka.write_dataset(frame(20, 5), root, "ds", mode="append")
    assert len(plateau_table(root)) == 25
    with pytest.raises(ka.InvalidArgumentError, match="view mode"):
        commit.configure(LocalStore(root), "ds", view="sometimes")


def test_a_damaged_segment_is_a_clear_error(tmp_path, small_limits):
    root = str(tmp_path)
    ka.write_dataset(frame(0, 100), root, "ds", partition_on=["p"])
    meta = commit.load(LocalStore(root), "ds")
    key = meta.segments[0].key
    commit._SEGMENTS.clear()
    with open(os.path.join(root, key), "wb") as f:
        f.write(b"not parquet")
    with pytest.raises(ka.CorruptMetadataError, match="manifest segment"):
        ka.dataset(root, "ds").to_table()
    os.remove(os.path.join(root, key))
    commit._SEGMENTS.clear()
    with pytest.raises(ka.StoreError, match="missing"):
        ka.dataset(root, "ds").to_table()


def test_segment_bounds_are_typed_for_dates(tmp_path, small_limits):
    root = str(tmp_path)
    days = pd.date_range("2024-01-01", periods=60, freq="D").date
    df = pd.DataFrame({"d": days, "x": range(60)})
    table = pa.Table.from_pandas(df, preserve_index=False)
    ka.write_dataset(table, root, "ds", partition_on=["d"])
    import datetime as dt

    got = ka.dataset(root, "ds", filter=[[("d", ">=", dt.date(2024, 2, 25))]]).to_table()
    assert sorted(got.column("x").to_pylist()) == list(range(55, 60))


def _append_lazily(url: str, options: dict, writer: int, count: int) -> list[int]:
    store = ka.resolve_store(url, options)
    out = []
    for i in range(count):
        df = pd.DataFrame({"p": [writer % 3, (writer + i) % 3], "c": [writer * 100 + i] * 2})
        df["v"] = [float(writer), float(i)]
        out.append(ka.write_dataset(df, store, "ds", mode="append").version)
    return out


def test_concurrent_appends_to_a_lazy_dataset_all_land(shared_url_and_options):
    """Writers in other processes (default limits) follow the dataset's own settings."""
    import multiprocessing as mp

    url, options = shared_url_and_options
    store = ka.resolve_store(url, dict(options))
    first = pd.DataFrame({"p": [0, 1, 2], "c": [-1, -2, -3], "v": [0.0, 0.0, 0.0]})
    ka.write_dataset(first, store, "ds", partition_on=["p"], secondary_indices=["c"])
    commit.configure(store, "ds", view="lazy", inline_max=2)
    writers, appends = 4, 4
    with mp.get_context("spawn").Pool(writers) as pool:
        results = pool.starmap(
            _append_lazily, [(url, dict(options), w, appends) for w in range(writers)]
        )
    assert sorted(v for vs in results for v in vs) == list(range(2, 2 + writers * appends))
    meta = commit.load(store, "ds")
    assert meta.segments and commit.is_lazy(meta)
    table = ka.dataset(store, "ds").to_table().to_pandas()
    assert len(table) == 3 + 2 * writers * appends
    for w in range(writers):
        for i in range(appends):
            hit = ka.dataset(store, "ds", filter=[[("c", "==", w * 100 + i)]]).to_table()
            assert hit.num_rows == 2
    assert [s.version for s in ka.history(store, "ds")] == list(range(2 + writers * appends))
    commit.refresh_view(store, "ds")
    view = commit.load_view(store, "ds")
    assert view.version == meta.version and len(view.files) == len(meta.files)
    assert not check.check_dataset(store, "ds").problems


def test_check_reports_a_missing_segment_instead_of_failing(tmp_path):
    root = str(tmp_path)
    store = LocalStore(root)
    df = pd.DataFrame({"p": list(range(40)), "c": list(range(40))})
    ka.write_dataset(df, root, "ds", partition_on=["p"], secondary_indices=["c"])
    commit.configure(store, "ds", view="lazy", inline_max=2)
    ka.write_dataset(df.assign(c=df.c + 100), root, "ds", mode="append")
    meta = commit.load(store, "ds")
    assert meta.segments and meta.index_tail["c"]
    assert not check.check_dataset(store, "ds").problems
    commit._SEGMENTS.clear()
    os.remove(os.path.join(root, meta.segments[-1].key))
    found = {(p.kind, p.key) for p in check.check_dataset(store, "ds").problems}
    assert ("missing_file", meta.segments[-1].key) in found
    assert ("segment_unreadable", keys.log_key("ds", meta.version)) in found
