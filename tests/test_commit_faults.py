"""Commits through a lossy network: the fault proxy breaks requests after the store applied
them (S3 500 / dropped connection, the client's retry then refused with 412/409), before
it did, or keeps failing.  Real clients, real emulators, one test class for each store.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pandas as pd
import pytest

import ktk_arrow as ka
from faultproxy import Fault, FaultProxy
from ktk_arrow import commit
from ktk_arrow.spec import keys


def later(hours: float = 2) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)


def frame(writer: int) -> pd.DataFrame:
    return pd.DataFrame({"part": ["a", "b"], "writer": [writer] * 2, "row": [0, 1]})


def break_uploads(proxy: FaultProxy, name: str, action: str, times: int = 1) -> list[Fault]:
    """Break the uploads of the object whose key ends in ``name``, on every backend.

    S3 and Azure PUT to the key's path; gcsfs POSTs a multipart upload that
    names the object only in its body.
    """
    pattern = _key_pattern(name) + "$"
    return [
        proxy.add_fault("PUT", pattern, action, times=times),
        proxy.add_fault("POST", r"/upload/", action, times=times, body=re.escape(name).encode()),
    ]


def _key_pattern(name: str) -> str:
    """``name`` in a URL path: GCS percent-encodes the slashes of object names."""
    return "(/|%2F)".join(re.escape(part) for part in name.split("/"))


def break_reads(proxy: FaultProxy, name: str, *, skip: int = 0) -> Fault:
    """Fail every GET of the object whose key ends in ``name`` after the first ``skip``."""
    return proxy.add_fault("GET", _key_pattern(name) + "$", "error_before", times=-1, skip=skip)


def hits(faults: list[Fault]) -> int:
    return sum(f.hits for f in faults)


def writers(store: ka.Store) -> list[int]:
    return sorted(ka.dataset(store, "ds").to_table().column("writer").to_pylist())


LOG_1 = keys.log_key("ds", 1).split("/", 1)[1]  # "_ktk/log/000...01.json"
LOG_0 = keys.log_key("ds", 0).split("/", 1)[1]


@pytest.fixture
def faulty(faulty_url_and_options):
    url, options, proxy = faulty_url_and_options
    return ka.resolve_store(url, dict(options)), proxy


@pytest.mark.parametrize("action", ["error_after", "drop_after"])
def test_a_lost_answer_to_the_log_entry_put_is_recognised(faulty, action):
    store, proxy = faulty
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"], secondary_indices=["writer"])
    faults = break_uploads(proxy, LOG_1, action)
    snap = ka.write_dataset(frame(1), store, "ds", mode="append")
    assert hits(faults) == 1  # the entry was written, and its answer lost
    assert snap.version == 1
    # nothing of the commit was deleted: data, and the index that names it
    assert writers(store) == [0, 0, 1, 1]
    assert ka.dataset(store, "ds").count_rows(filter=[[("writer", "==", 1)]]) == 2
    assert [s.version for s in ka.history(store, "ds")] == [0, 1]
    assert commit.read_entry(store, "ds", 2) is None  # not committed twice
    assert commit.garbage_collect(store, "ds", now=later()) == []
    assert ka.write_dataset(frame(2), store, "ds", mode="append").version == 2


@pytest.mark.parametrize("action", ["error_after", "drop_after"])
def test_a_lost_answer_to_the_first_commit_is_recognised(faulty, action):
    store, proxy = faulty
    faults = break_uploads(proxy, LOG_0, action)
    snap = ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    assert hits(faults) == 1 and snap.version == 0
    assert writers(store) == [0, 0]
    with pytest.raises(ka.DatasetExistsError):
        ka.write_dataset(frame(1), store, "ds")


def test_a_commit_whose_outcome_stays_unknown_keeps_its_files(faulty):
    """The entry is written, then every retry and read-back fails: in doubt, nothing deleted."""
    store, proxy = faulty
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"], secondary_indices=["writer"])
    break_uploads(proxy, LOG_1, "error_after")
    break_uploads(proxy, LOG_1, "error_before", times=-1)
    break_reads(proxy, LOG_1, skip=1)  # the write's first probe of entry 1 passes
    with pytest.raises(ka.CommitInDoubtError, match="may or may not be in") as info:
        ka.write_dataset(frame(1), store, "ds", mode="append")
    assert isinstance(info.value, ka.StoreError) and not commit.may_discard(info.value)
    proxy.clear()
    # it was in: every file it references is there
    assert ka.dataset(store, "ds").version == 1
    assert writers(store) == [0, 0, 1, 1]
    assert ka.dataset(store, "ds").count_rows(filter=[[("writer", "==", 1)]]) == 2


def test_a_commit_that_never_landed_leaves_files_for_gc_only(faulty):
    store, proxy = faulty
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    break_uploads(proxy, LOG_1, "error_before", times=-1)
    break_reads(proxy, LOG_1, skip=1)
    with pytest.raises(ka.CommitInDoubtError):
        ka.write_dataset(frame(1), store, "ds", mode="append")
    proxy.clear()
    assert ka.dataset(store, "ds").version == 0 and writers(store) == [0, 0]
    orphans = commit.garbage_collect(store, "ds", now=later())
    assert len(orphans) == 2  # the data files the in-doubt commit kept


def test_a_view_that_cannot_be_written_is_reported_and_repaired_by_expiry(faulty):
    store, proxy = faulty
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"])
    view = keys.metadata_key("ds").split("/")[-1]
    break_uploads(proxy, view, "error_before", times=-1)
    with pytest.warns(ka.errors.ViewLagWarning, match="is committed"):
        snap = ka.write_dataset(frame(1), store, "ds", mode="append")
    assert snap.version == 1
    proxy.clear()
    stored = json.loads(store.get(keys.metadata_key("ds")))
    assert stored["ktk_arrow"]["commit"]["version"] == 0  # the view lags
    assert writers(store) == [0, 0, 1, 1]  # readers roll forward
    assert commit.expire_snapshots(store, "ds", keep_last=1, grace_period=dt.timedelta(0)) == [0]
    stored = json.loads(store.get(keys.metadata_key("ds")))
    assert stored["ktk_arrow"]["commit"]["version"] == 1
    assert writers(store) == [0, 0, 1, 1]
    assert ka.write_dataset(frame(2), store, "ds", mode="append").version == 2


def test_lost_answers_on_data_and_index_files_are_harmless(faulty):
    """Plain PUTs are idempotent: a lost answer is retried by the client."""
    store, proxy = faulty
    ka.write_dataset(frame(0), store, "ds", partition_on=["part"], secondary_indices=["writer"])
    faults = [
        proxy.add_fault("PUT", r"\.parquet$", "error_after", times=2),
        proxy.add_fault("POST", r"/upload/", "error_after", times=2, body=rb"\.parquet"),
    ]
    assert ka.write_dataset(frame(1), store, "ds", mode="append").version == 1
    assert hits(faults) == 2
    assert writers(store) == [0, 0, 1, 1]
    assert ka.dataset(store, "ds").count_rows(filter=[[("writer", "==", 1)]]) == 2
