"""The dataset contract, concurrent writers and planning cost on the emulated object stores."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import subprocess
import sys
import textwrap
from typing import Any

import pandas as pd
import pytest

import ktk_arrow as ka
from dataset_contract import DatasetContract
from ktk_arrow import commit

pytestmark = pytest.mark.emulator


class TestS3(DatasetContract):
    @pytest.fixture
    def store(self, s3_store):
        return s3_store


class TestAzure(DatasetContract):
    @pytest.fixture
    def store(self, azure_store):
        return azure_store


class TestGCS(DatasetContract):
    @pytest.fixture
    def store(self, gcs_store):
        return gcs_store


def _append(url: str, options: dict[str, Any], writer: int, count: int) -> list[int]:
    versions = []
    for i in range(count):
        df = pd.DataFrame({"part": [f"p{writer % 2}"] * 2, "writer": [writer] * 2, "seq": [i] * 2})
        snap = ka.write_dataset(df, url, "ds", mode="append", storage_options=options)
        versions.append(snap.version)
    return versions


def test_concurrent_appends_on_every_object_store(remote_url_and_options):
    url, options = remote_url_and_options
    seed = pd.DataFrame({"part": ["p0"], "writer": [-1], "seq": [0]})
    ka.write_dataset(
        seed,
        url,
        "ds",
        partition_on=["part"],
        secondary_indices=["writer"],
        storage_options=options,
    )
    writers, appends = 4, 5
    with mp.get_context("spawn").Pool(writers) as pool:
        results = pool.starmap(_append, [(url, options, w, appends) for w in range(writers)])
    assert sorted(v for vs in results for v in vs) == list(range(1, writers * appends + 1))
    ds = ka.dataset(url, "ds", storage_options=options)
    df = ds.to_table().to_pandas()
    counts = df[df.writer >= 0].groupby(["writer", "seq"]).size()
    assert len(counts) == writers * appends and (counts == 2).all()
    history = ka.history(url, "ds", storage_options=options)
    assert [s.version for s in history] == list(range(writers * appends + 1))
    for w in range(writers):
        assert ds.count_rows(filter=[[("writer", "==", w)]]) == 2 * appends


def test_planning_sends_two_requests_to_s3_whatever_the_size(s3_store, moto_request_counter):
    df = pd.DataFrame({"part": [f"p{i}" for i in range(50)], "x": range(50)})
    ka.write_dataset(df, s3_store, "ds", partition_on=["part"])
    for i in range(10):
        ka.write_dataset(df.assign(x=i), s3_store, "ds", mode="append")
    with moto_request_counter() as counted:
        ds = ka.dataset(s3_store, "ds")
    assert ds.version == 10 and len(ds.tasks) == 550
    assert counted.count == 2, counted.requests
    with moto_request_counter() as counted:
        ka.dataset(s3_store, "ds", version=3)
    assert counted.count == 1, counted.requests


_CRASH_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import pandas as pd
    import ktk_arrow as ka
    from ktk_arrow import commit
    url, options, step = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    store = ka.resolve_store(url, options)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if step == "after_data":
        commit.commit = die
    elif step == "after_log":
        commit._publish = die
    elif step == "after_view":
        cls = type(store)
        real = cls.put
        def put(self, key, data):
            real(self, key, data)
            if key.endswith(".by-dataset-metadata.json"):
                die()
        cls.put = put
    df = pd.DataFrame({"part": ["a", "b"], "x": [10, 11]})
    ka.write_dataset(df, store, "ds", mode="append")
    """
)


@pytest.mark.parametrize("step", ["after_data", "after_log", "after_view"])
def test_killed_writer_leaves_a_consistent_state_on_object_stores(remote_url_and_options, step):
    url, options = remote_url_and_options
    store = ka.resolve_store(url, dict(options))
    ka.write_dataset(pd.DataFrame({"part": ["a"], "x": [1]}), store, "ds", partition_on=["part"])
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, url, json.dumps(options), step], timeout=180
    )
    assert proc.returncode == -9
    ds = ka.dataset(store, "ds")
    rows = sorted(ds.to_table().column("x").to_pylist())
    if step == "after_data":
        assert rows == [1] and ds.version == 0  # nothing committed
    else:
        assert rows == [1, 10, 11] and ds.version == 1  # the log entry is the commit
    snap = ka.write_dataset(pd.DataFrame({"part": ["a"], "x": [2]}), store, "ds", mode="append")
    assert snap.version == ds.version + 1
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    deleted = commit.garbage_collect(store, "ds", now=later)
    assert len(deleted) == (2 if step == "after_data" else 0)
    assert sorted(ka.dataset(store, "ds").to_table().column("x").to_pylist()) == sorted([*rows, 2])
