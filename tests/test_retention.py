"""Retention: ``commit.expire_snapshots`` then ``commit.garbage_collect``.

Expiry forgets snapshots (time travel to them ends); gc then frees the files
only they used, but never before its grace period has passed since the
expiry, so a reader already reading an expired snapshot finishes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import multiprocessing as mp
import tempfile
import time
import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import cli, commit
from ktk_arrow.spec import keys
from ktk_arrow.storage import LocalStore, Store

NOW = dt.timezone.utc
ZERO = dt.timedelta(0)


def utcnow() -> dt.datetime:
    return dt.datetime.now(NOW)


def later(hours: float = 2) -> dt.datetime:
    """A gc clock past the default one-hour grace period."""
    return utcnow() + dt.timedelta(hours=hours)


def frame(i: int, parts: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    return pd.DataFrame({"p": list(parts), "x": [i] * len(parts)})


def rows(store: Store, version: int) -> list[tuple[str, int]]:
    table = ka.dataset(store, "ds", version=version).to_table()
    return sorted(zip(table.column("p").to_pylist(), table.column("x").to_pylist()))


def versions(store: Store) -> list[int]:
    return [s.version for s in ka.history(store, "ds")]


def files_on_disk(store: Store) -> set[str]:
    return {i.key for prefix in ("ds/table/", "ds/indices/") for i in store.list(prefix)} - {
        keys.common_metadata_key("ds")
    }


def referenced_by_retained(store: Store) -> set[str]:
    live: set[str] = set()
    for v in versions(store):
        live |= commit.referenced_keys(commit.load(store, "ds", version=v))
    return live


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(str(tmp_path))


def overwrites(store: Store, n: int, **kwargs) -> None:
    """Versions 0..n-1, each replacing every file (so each has files of its own)."""
    ka.write_dataset(frame(0), store, "ds", partition_on=["p"], **kwargs)
    for i in range(1, n):
        ka.write_dataset(frame(i), store, "ds", mode="overwrite", partition_on=["p"], **kwargs)


# -- which versions expire --------------------------------------------------------------


def test_keep_last_expires_older_versions_and_time_travel_to_them_ends(store):
    overwrites(store, 6)
    assert commit.expire_snapshots(store, "ds", keep_last=2, grace_period=ZERO) == [0, 1, 2, 3]
    assert versions(store) == [4, 5]
    assert [s.version for s in ka.history(store, "ds")] == [4, 5]
    for v in (0, 3):
        with pytest.raises(ka.DatasetNotFoundError, match=f"no version {v} .*expired"):
            ka.dataset(store, "ds", version=v)
    assert rows(store, 4) == [("a", 4), ("b", 4)]
    assert ka.dataset(store, "ds").version == 5
    # a second run has nothing left to do
    assert commit.expire_snapshots(store, "ds", keep_last=2, grace_period=ZERO) == []


def test_older_than_and_keep_last_must_both_allow_expiry(store):
    overwrites(store, 6)
    stamps = {s.version: s.timestamp for s in ka.history(store, "ds")}
    # older than version 3's commit: 0, 1, 2; but keep_last=4 keeps 2..5
    got = commit.expire_snapshots(
        store, "ds", older_than=stamps[3], keep_last=4, grace_period=ZERO, dry_run=True
    )
    assert got == [0, 1]
    # strictly older: version 3 itself is not older than its own timestamp
    got = commit.expire_snapshots(store, "ds", older_than=stamps[3], grace_period=ZERO)
    assert got == [0, 1, 2]
    assert versions(store) == [3, 4, 5]


def test_older_than_accepts_an_age_and_a_naive_utc_datetime(store):
    overwrites(store, 3)
    assert commit.expire_snapshots(store, "ds", older_than=dt.timedelta(days=1)) == []
    naive_future = (utcnow() + dt.timedelta(days=1)).replace(tzinfo=None)
    got = commit.expire_snapshots(store, "ds", older_than=naive_future, grace_period=ZERO)
    assert got == [0, 1]


def test_the_latest_version_is_never_expired(store):
    overwrites(store, 3)
    future = utcnow() + dt.timedelta(days=365)
    assert commit.expire_snapshots(store, "ds", older_than=future, grace_period=ZERO) == [0, 1]
    assert commit.expire_snapshots(store, "ds", older_than=ZERO, grace_period=ZERO) == []
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == []
    assert versions(store) == [2]
    assert rows(store, 2) == [("a", 2), ("b", 2)]
    assert ka.write_dataset(frame(9), store, "ds", mode="append").version == 3


def test_versions_younger_than_the_grace_period_are_kept(store):
    overwrites(store, 4)
    assert commit.expire_snapshots(store, "ds", keep_last=1) == []  # default grace: 1 h
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=dt.timedelta(1)) == []
    assert versions(store) == [0, 1, 2, 3]


def test_a_stalled_publisher_cannot_fork_the_log_under_the_default_grace_period(store):
    """A writer that won version 2 but writes its view late must still find 3, 4, 5."""
    overwrites(store, 3)
    late_view = store.get(keys.metadata_key("ds"))  # version 2's view, written late below
    for i in range(3, 6):
        ka.write_dataset(frame(i), store, "ds", mode="overwrite")
    assert commit.expire_snapshots(store, "ds", keep_last=1) == []
    store.put(keys.metadata_key("ds"), late_view)
    assert ka.dataset(store, "ds").version == 5  # rolls forward 3, 4, 5
    assert ka.write_dataset(frame(6), store, "ds", mode="append").version == 6
    assert rows(store, 6) == [("a", 5), ("a", 6), ("b", 5), ("b", 6)]


def test_dry_run_changes_nothing(store):
    overwrites(store, 4)
    before = {i.key for i in store.list("ds/")}
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO, dry_run=True) == [
        0,
        1,
        2,
    ]
    assert {i.key for i in store.list("ds/")} == before
    assert versions(store) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "older_than= .*keep_last="),
        ({"keep_last": 0}, "keep_last must be a positive int"),
        ({"keep_last": -2}, "keep_last must be a positive int"),
        ({"keep_last": True}, "keep_last must be a positive int"),
        ({"keep_last": 1.5}, "keep_last must be a positive int"),
        ({"older_than": dt.timedelta(days=-1)}, "negative timedelta"),
        ({"older_than": "7d"}, "datetime or a timedelta"),
        ({"older_than": 7}, "datetime or a timedelta"),
        ({"keep_last": 1, "grace_period": dt.timedelta(seconds=-1)}, "grace_period"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_read(store, kwargs, match):
    overwrites(store, 2)
    with pytest.raises(ka.InvalidArgumentError, match=match):
        commit.expire_snapshots(store, "ds", **kwargs)
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError too
        commit.expire_snapshots(store, "ds", **kwargs)
    assert versions(store) == [0, 1]


def test_unknown_dataset_and_bad_uuid(store):
    with pytest.raises(ka.DatasetNotFoundError, match="nope"):
        commit.expire_snapshots(store, "nope", keep_last=1)
    with pytest.raises(ka.InvalidArgumentError, match="invalid dataset_uuid"):
        commit.expire_snapshots(store, "../ds", keep_last=1)


def test_a_dataset_without_a_log_has_nothing_to_expire(store):
    overwrites(store, 1)
    store.delete(keys.log_key("ds", 0))  # as plateau leaves it: a view, no log
    view = json.loads(store.get(keys.metadata_key("ds")))
    del view["ktk_arrow"]
    store.put(keys.metadata_key("ds"), json.dumps(view).encode())
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == []
    assert ka.dataset(store, "ds").version == 0


# -- as_of ------------------------------------------------------------------------------


def test_as_of_before_the_oldest_kept_version_names_it(store):
    overwrites(store, 5)
    stamps = {s.version: s.timestamp for s in ka.history(store, "ds")}
    commit.expire_snapshots(store, "ds", keep_last=2, grace_period=ZERO)
    # at version 3's timestamp the state was version 3: kept
    assert ka.dataset(store, "ds", as_of=stamps[3]).version == 3
    assert ka.dataset(store, "ds", as_of=stamps[4] + dt.timedelta(days=1)).version == 4
    for when in (stamps[1], stamps[3] - dt.timedelta(microseconds=1), dt.datetime(2000, 1, 1)):
        with pytest.raises(ka.DatasetNotFoundError, match=r"oldest version kept is 3.*expired"):
            ka.dataset(store, "ds", as_of=when)


# -- garbage collection -----------------------------------------------------------------


def test_gc_frees_files_only_expired_snapshots_used_once_its_grace_period_passed(store):
    overwrites(store, 4, secondary_indices=["x"])
    commit.expire_snapshots(store, "ds", keep_last=2, grace_period=ZERO)
    kept = referenced_by_retained(store)
    orphaned = files_on_disk(store) - kept
    assert len(orphaned) == 2 * 2 + 2  # two files and one index file per expired version
    assert any("/indices/" in k for k in orphaned)
    # just expired: a reader may still be reading them
    assert commit.garbage_collect(store, "ds") == []
    assert commit.garbage_collect(store, "ds", now=later(0.5)) == []
    assert set(commit.garbage_collect(store, "ds", now=later(), dry_run=True)) == orphaned
    assert files_on_disk(store) == kept | orphaned
    assert set(commit.garbage_collect(store, "ds", now=later())) == orphaned
    assert files_on_disk(store) == kept
    assert rows(store, 2) == [("a", 2), ("b", 2)]
    assert ka.dataset(store, "ds").count_rows(filter=[[("x", "==", 3)]]) == 2
    # the expiry record protects nothing any more and went with that gc
    assert list(store.list(f"ds/{commit.EXPIRED_DIR}")) == []


def test_a_reader_of_an_expired_snapshot_keeps_its_files_for_the_grace_period(store):
    overwrites(store, 3)
    old = ka.dataset(store, "ds", version=0)  # planned: it reads version 0's files
    latest = ka.dataset(store, "ds")  # version 2, overwritten next
    ka.write_dataset(frame(3), store, "ds", mode="overwrite")
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == [0, 1, 2]
    assert commit.garbage_collect(store, "ds") == []  # just expired: within gc's grace period
    # the grace period is the protection: without one, gc would delete them now
    doomed = commit.garbage_collect(store, "ds", grace_period=ZERO, dry_run=True, force=True)
    assert len(doomed) == 6
    assert old.to_table().num_rows == 2
    assert latest.to_table().column("x").to_pylist() == [2, 2]
    assert len(commit.garbage_collect(store, "ds", now=later())) == 6
    with pytest.raises(OSError):
        old.to_table()  # past the grace period: the reader was warned by the docs


def test_append_only_datasets_need_no_expiry_record(store):
    ka.write_dataset(frame(0), store, "ds", partition_on=["p"])
    for i in range(1, 5):
        ka.write_dataset(frame(i), store, "ds", mode="append")
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO) == [0, 1, 2, 3]
    assert list(store.list(f"ds/{commit.EXPIRED_DIR}")) == []
    assert commit.garbage_collect(store, "ds", now=later()) == []  # every file is still live
    assert ka.dataset(store, "ds").count_rows() == 10


def test_gc_never_deletes_files_of_retained_snapshots(store):
    ka.write_dataset(frame(0), store, "ds", partition_on=["p"])
    ka.write_dataset(frame(1, ("a",)), store, "ds", mode="overwrite", delete_scope=[{"p": "a"}])
    ka.write_dataset(frame(2, ("b",)), store, "ds", mode="overwrite", delete_scope=[{"p": "b"}])
    ka.write_dataset(frame(3, ("c",)), store, "ds", mode="append")
    # version 1 keeps version 0's b file, version 2 keeps version 1's a file
    assert commit.expire_snapshots(store, "ds", keep_last=3, grace_period=ZERO) == [0]
    deleted = commit.garbage_collect(store, "ds", grace_period=ZERO, now=later(), force=True)
    assert len(deleted) == 1 and "/p=a/" in deleted[0]
    assert rows(store, 1) == [("a", 1), ("b", 0)]
    assert rows(store, 3) == [("a", 1), ("b", 2), ("c", 3)]


# -- interplay with writers -------------------------------------------------------------


def test_a_foreign_view_after_version_0_expired_is_still_seen_as_ours(store):
    """The 'never managed by us' test must not rely on log entry 0, which expiry removes."""
    overwrites(store, 3)
    commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    # a view without our extension, as plateau writes it
    view = json.loads(store.get(keys.metadata_key("ds")))
    del view["ktk_arrow"]
    store.put(keys.metadata_key("ds"), json.dumps(view).encode())
    assert ka.dataset(store, "ds").version == 2  # not "a plateau dataset at version 0"
    assert ka.write_dataset(frame(3), store, "ds", mode="append").version == 3
    assert versions(store) == [2, 3]


def test_plateau_appends_after_expiry_are_adopted_as_the_next_version(store):
    pytest.importorskip("plateau")
    import minimalkv
    import plateau.io.eager as pl

    overwrites(store, 3)
    commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    factory = functools.partial(minimalkv.get_store_from_url, f"hfs://{store.root}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        pl.update_dataset_from_dataframes([frame(7, ("c",))], factory, "ds")
    with pytest.warns(UserWarning, match="adopted as version 3"):
        assert rows(store, 3) == [("a", 2), ("b", 2), ("c", 7)]
    with pytest.warns(UserWarning, match="adopted"):
        assert ka.write_dataset(frame(8, ("a",)), store, "ds", mode="append").version == 4
    assert versions(store) == [2, 3, 4]


def test_a_commit_whose_read_version_expired_commits_nothing(store):
    overwrites(store, 2)
    base = commit.load(store, "ds")
    ka.write_dataset(frame(2), store, "ds", mode="append")
    commit.expire_snapshots(store, "ds", keep_last=1, grace_period=ZERO)
    change = commit.Change(
        operation="overwrite_partitions",
        remove=lambda s: [lbl for lbl in s.files if lbl.startswith("p=a/")],
        depends_on=lambda s: [lbl for lbl in s.files if lbl.startswith("p=a/")],
        read_version=base.version,
    )
    # the state it read is gone, so it cannot prove it does not conflict
    with pytest.raises(ka.KtkError, match=f"version {base.version}"):
        commit.commit(store, "ds", change)
    assert ka.dataset(store, "ds").version == 2


def _append_loop(root: str, writer: int, count: int) -> None:
    for i in range(count):
        ka.write_dataset(frame(writer * 100 + i), root, "ds", mode="append")


def test_expiry_while_other_processes_append(tmp_path):
    root = str(tmp_path)
    store = LocalStore(root)
    ka.write_dataset(frame(-1), store, "ds", partition_on=["p"])
    ctx = mp.get_context("spawn")
    writers, appends = 3, 12
    procs = [ctx.Process(target=_append_loop, args=(root, w, appends)) for w in range(writers)]
    for p in procs:
        p.start()
    expired: list[int] = []
    while any(p.is_alive() for p in procs):
        expired += commit.expire_snapshots(store, "ds", keep_last=10, grace_period=ZERO)
        time.sleep(0.01)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    expired += commit.expire_snapshots(store, "ds", keep_last=10, grace_period=ZERO)
    total = writers * appends
    assert sorted(expired) == list(range(total + 1 - 10))
    assert versions(store) == list(range(total + 1 - 10, total + 1))
    assert ka.dataset(store, "ds").count_rows() == 2 * (total + 1)
    assert commit.garbage_collect(store, "ds", now=later()) == []  # appends orphan nothing


# -- the property -----------------------------------------------------------------------

PARTS = ("a", "b", "c")
op = st.one_of(
    st.tuples(st.just("append"), st.sets(st.sampled_from(PARTS), min_size=1)),
    st.tuples(st.just("overwrite"), st.sets(st.sampled_from(PARTS), min_size=1)),
    st.tuples(st.just("delete_scope"), st.sets(st.sampled_from(PARTS), min_size=1)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ops=st.lists(op, min_size=1, max_size=8),
    keep_last=st.one_of(st.none(), st.integers(1, 5)),
    cutoff_at=st.one_of(st.none(), st.integers(0, 9)),
)
def test_expire_then_gc_keeps_every_retained_version_exactly(ops, keep_last, cutoff_at):
    if keep_last is None and cutoff_at is None:
        keep_last = 1
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        ka.write_dataset(frame(0, ("a", "b")), store, "ds", partition_on=["p"])
        for i, (kind, parts) in enumerate(ops, start=1):
            data = frame(i, tuple(sorted(parts)))
            if kind == "append":
                ka.write_dataset(data, store, "ds", mode="append")
            elif kind == "overwrite":
                ka.write_dataset(data, store, "ds", mode="overwrite", partition_on=["p"])
            else:
                scope = [{"p": p} for p in sorted(parts)]
                ka.write_dataset(data, store, "ds", mode="overwrite", delete_scope=scope)
        snaps = ka.history(store, "ds")
        before = {s.version: rows(store, s.version) for s in snaps}
        latest = snaps[-1].version
        older_than = None
        if cutoff_at is not None:
            older_than = snaps[min(cutoff_at, latest)].timestamp
        expected = [
            s.version
            for s in snaps[:-1]
            if (older_than is None or s.timestamp < older_than)
            and (keep_last is None or s.version <= latest - keep_last)
        ]

        got = commit.expire_snapshots(
            store, "ds", older_than=older_than, keep_last=keep_last, grace_period=ZERO
        )
        assert got == expected
        commit.garbage_collect(store, "ds", now=later())

        kept = versions(store)
        assert kept == sorted(set(before) - set(got))
        for v in kept:
            assert rows(store, v) == before[v]
        for v in got:
            with pytest.raises(ka.DatasetNotFoundError, match=f"no version {v}"):
                ka.dataset(store, "ds", version=v)
        assert files_on_disk(store) == referenced_by_retained(store)


# -- CLI --------------------------------------------------------------------------------


def test_cli_expire(store, capsys):
    overwrites(store, 4)
    root = store.root
    assert cli.main(["expire", root, "ds", "--keep-last", "1"]) == 0
    assert "nothing to expire" in capsys.readouterr().out
    args = ["expire", root, "ds", "--keep-last", "1", "--grace-period", "0"]
    assert cli.main([*args, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dry_run": True, "versions": [0, 1, 2]}
    assert cli.main([*args, "--older-than", "1d"]) == 0  # nothing is a day old
    assert "nothing to expire" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "expired 3 snapshots: 0, 1, 2" in capsys.readouterr().out
    assert versions(store) == [3]
    future = (utcnow() + dt.timedelta(days=1)).isoformat()
    assert cli.main(["expire", root, "ds", "--older-than", future, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == []


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "needs --older-than"),  # the CLI names its flags, not the library's arguments
        (["--keep-last", "0"], "--keep-last must be a positive int"),
        (["--older-than", "yesterday"], "invalid --older-than"),
        (["--keep-last", "1", "--grace-period", "soon"], "invalid duration"),
    ],
)
def test_cli_expire_errors(store, capsys, argv, match):
    overwrites(store, 2)
    assert cli.main(["expire", store.root, "ds", *argv]) == 2
    assert match in capsys.readouterr().err
