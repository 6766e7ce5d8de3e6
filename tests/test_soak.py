"""The randomized soak (``tests/soak.py``), bounded: writers, compaction, expiry and gc
at once, SIGKILLed at random, on local disk and on S3 through a proxy that loses answers.
"""

from __future__ import annotations

import datetime as dt

import pytest

import ktk_arrow as ka
import soak
from ktk_arrow import commit


def _finish(store: ka.Store, run: soak.SoakRun) -> soak.Report:
    report = soak.check(store, run.journal_dir)
    assert run.kills >= 3
    assert report.committed_ok >= 10, report  # the soak did real work
    # with no writer left, gc may collect everything the kills orphaned: history stays whole
    commit.garbage_collect(store, soak.UUID, grace_period=dt.timedelta(0), force=True)
    assert soak.check(store, run.journal_dir).versions == report.versions
    print(f"soak: {run.kills} kills, {report}")  # shown with pytest -s
    return report


@pytest.mark.timeout(240)
def test_soak_on_local_disk(tmp_path):
    url = str(tmp_path / "store")
    (tmp_path / "journal").mkdir()
    run = soak.SoakRun(url, {}, tmp_path / "journal", seed=7)
    run.run(20)
    _finish(ka.resolve_store(url), run)
    # plateau reads the final view: every file it lists exists
    from functools import partial

    from minimalkv import get_store_from_url
    from plateau.io.eager import read_table

    theirs = read_table(soak.UUID, partial(get_store_from_url, f"hfs://{url}"))
    assert len(theirs) == ka.dataset(url, soak.UUID).count_rows()


@pytest.mark.timeout(300)
@pytest.mark.s3
@pytest.mark.emulator
def test_soak_on_s3_through_a_lossy_network(faulty_s3_url_and_options, tmp_path):
    url, options, proxy = faulty_s3_url_and_options
    options = {**options, "config_kwargs": {"retries": {"max_attempts": 4, "mode": "standard"}}}
    (tmp_path / "journal").mkdir()
    proxy.random_faults(
        0.05,
        seed=11,
        methods=("PUT", "POST", "DELETE", "GET"),
        actions=("error_after", "drop_after", "error_before"),
    )
    run = soak.SoakRun(url, options, tmp_path / "journal", seed=11)
    run.run(30)
    broken = sum(1 for entry in proxy.log if entry.action is not None)
    proxy.clear()
    assert broken >= 3, broken  # the network really was lossy (fewer requests on a busy machine)
    _finish(ka.resolve_store(url, options), run)


def _make_lazy(store: ka.Store) -> None:
    """The soak's dataset as a large one: lazy view, manifest segments after 2 inline files."""
    import pandas as pd

    empty = pd.DataFrame({"part": pd.Series([], dtype=str), "op": pd.Series([], dtype=str)})
    empty["i"] = pd.Series([], dtype="int64")
    ka.write_dataset(empty, store, soak.UUID, partition_on=["part"])
    commit.configure(store, soak.UUID, view="lazy", inline_max=2)


@pytest.mark.timeout(240)
def test_soak_of_a_lazy_dataset_on_local_disk(tmp_path):
    url = str(tmp_path / "store")
    (tmp_path / "journal").mkdir()
    store = ka.resolve_store(url)
    _make_lazy(store)
    run = soak.SoakRun(url, {}, tmp_path / "journal", seed=5)
    run.run(20)
    _finish(store, run)
    assert commit.load(store, soak.UUID).segments
    commit.refresh_view(store, soak.UUID)
    from functools import partial

    from minimalkv import get_store_from_url
    from plateau.io.eager import read_table

    theirs = read_table(soak.UUID, partial(get_store_from_url, f"hfs://{url}"))
    assert len(theirs) == ka.dataset(url, soak.UUID).count_rows()


@pytest.mark.timeout(300)
@pytest.mark.s3
@pytest.mark.emulator
def test_soak_of_a_lazy_dataset_on_s3_through_a_lossy_network(faulty_s3_url_and_options, tmp_path):
    url, options, proxy = faulty_s3_url_and_options
    options = {**options, "config_kwargs": {"retries": {"max_attempts": 4, "mode": "standard"}}}
    (tmp_path / "journal").mkdir()
    _make_lazy(ka.resolve_store(url, options))
    proxy.random_faults(
        0.05,
        seed=13,
        methods=("PUT", "POST", "DELETE", "GET"),
        actions=("error_after", "drop_after", "error_before"),
    )
    run = soak.SoakRun(url, options, tmp_path / "journal", seed=13)
    run.run(20)
    proxy.clear()
    _finish(ka.resolve_store(url, options), run)
