"""The dataset contract, concurrent writers and planning cost on the emulated object stores."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pandas as pd
import pytest

import ktk_arrow as ka
from dataset_contract import DatasetContract

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
