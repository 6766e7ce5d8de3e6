"""ktk_arrow.io.iter: plateau's iterator API, streamed, one commit per call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager
from ktk_arrow.io.iter import (
    read_dataset_as_dataframes__iterator,
    store_dataframes_as_dataset__iter,
    update_dataset_from_dataframes__iter,
)
from ktk_arrow.storage import resolve_store


def _frames(n: int = 4) -> list[pd.DataFrame]:
    return [
        pd.DataFrame(
            {
                "p": [i % 2] * 3,
                "x": [f"v{i}{j}" for j in range(3)],
                "y": [float(i * 3 + j) for j in range(3)],
            }
        )
        for i in range(n)
    ]


def _keys(store: str, uuid: str) -> list[str]:
    return [info.key for info in resolve_store(store).list(f"{uuid}/")]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def test_store_iter_round_trips_with_partition_on_and_indices(store: str) -> None:
    meta = store_dataframes_as_dataset__iter(
        iter(_frames()), store, "u", partition_on=["p"], secondary_indices=["x"]
    )
    assert meta.uuid == "u"
    assert len(meta.files) == 4
    assert set(meta.indices) == {"x"}
    assert len(ka.history(store, "u")) == 1  # one commit for the whole generator
    back = eager.read_table("u", store)
    expected = pd.concat(_frames(), ignore_index=True)
    pd.testing.assert_frame_equal(
        back.sort_values("y", ignore_index=True)[["p", "x", "y"]], expected, check_dtype=False
    )


def test_store_iter_streams_the_generator(store: str) -> None:
    seen: list[int] = []

    def gen() -> Iterator[pd.DataFrame]:
        for i, df in enumerate(_frames(8)):
            # the files of all but the last two frames are already written (not yet
            # committed): the writer encodes while it takes the next frame
            seen.append(sum(k.endswith(".parquet") for k in _keys(store, "u")))
            yield df
            del df, i

    store_dataframes_as_dataset__iter(gen(), store, "u", partition_on=["p"])
    assert seen[0] == 0
    assert all(written >= i - 2 for i, written in enumerate(seen)), seen
    assert len(ka.dataset(store, "u").files) == 8


def test_store_iter_without_uuid_picks_one(store: str) -> None:
    meta = store_dataframes_as_dataset__iter(_frames(1), store)
    assert len(meta.uuid) == 32
    assert ka.dataset(store, meta.uuid).count_rows() == 3


def test_store_iter_refuses_existing_dataset_unless_overwrite(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(1), store, "u")
    with pytest.raises(ka.DatasetExistsError):
        store_dataframes_as_dataset__iter(_frames(1), store, "u")
    meta = store_dataframes_as_dataset__iter(_frames(2), store, "u", overwrite=True)
    assert meta.total_rows == 6


def test_failing_generator_leaves_nothing(store: str) -> None:
    def gen() -> Iterator[pd.DataFrame]:
        yield from _frames(2)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        store_dataframes_as_dataset__iter(gen(), store, "u", partition_on=["p"])
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(store, "u")
    assert _keys(store, "u") == []


def test_update_iter_appends_and_replaces_delete_scope(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(), store, "u", partition_on=["p"])
    new = pd.DataFrame({"p": [0, 0], "x": ["n1", "n2"], "y": [100.0, 101.0]})
    meta = update_dataset_from_dataframes__iter(
        iter([new]), store=store, dataset_uuid="u", delete_scope=[{"p": 0}]
    )
    back = eager.read_table("u", store, predicates=[[("p", "==", 0)]])
    assert sorted(back["x"]) == ["n1", "n2"]
    assert meta.total_rows == 6 + 2
    meta = update_dataset_from_dataframes__iter(iter([new]), store=store, dataset_uuid="u")
    assert meta.total_rows == 10
    assert [s.operation for s in ka.history(store, "u")] == [
        "create",
        "overwrite_partitions",
        "append",
    ]


def test_update_iter_sorts_partitions(store: str) -> None:
    df = pd.DataFrame({"p": [1, 1, 1], "x": ["c", "a", "b"], "y": [3.0, 1.0, 2.0]})
    store_dataframes_as_dataset__iter([df.iloc[:0]], store, "u", partition_on=["p"])
    update_dataset_from_dataframes__iter(
        [df], store=store, dataset_uuid="u", partition_on=["p"], sort_partitions_by="x"
    )
    (back,) = list(read_dataset_as_dataframes__iterator("u", store))
    assert list(back["x"]) == ["a", "b", "c"]


def test_update_iter_creates_a_missing_dataset(store: str) -> None:
    meta = update_dataset_from_dataframes__iter(
        iter(_frames(1)), store=store, dataset_uuid="new", partition_on=["p"]
    )
    assert meta.total_rows == 3


def test_update_iter_refuses_an_index_the_old_files_lack(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(), store, "u", partition_on=["p"])
    with pytest.raises(ka.InvalidArgumentError, match="build_dataset_indices"):
        update_dataset_from_dataframes__iter(
            iter(_frames(1)), store=store, dataset_uuid="u", secondary_indices=["x"]
        )
    assert ka.dataset(store, "u").count_rows() == 12


def test_update_iter_with_empty_generator_is_a_no_op(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(1), store, "u")
    meta = update_dataset_from_dataframes__iter(iter([]), store=store, dataset_uuid="u")
    assert meta.total_rows == 3
    assert [s.operation for s in ka.history(store, "u")] == ["create"]


def test_read_iterator_yields_one_frame_per_file_lazily(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(), store, "u", partition_on=["p"])
    frames = read_dataset_as_dataframes__iterator("u", store, columns=["x", "p"])
    assert isinstance(frames, Iterator)
    out = list(frames)
    assert len(out) == 4
    assert all(list(df.columns) == ["x", "p"] for df in out)


def test_read_iterator_prunes_with_predicates_and_dispatches(store: str) -> None:
    store_dataframes_as_dataset__iter(
        _frames(), store, "u", partition_on=["p"], secondary_indices=["x"]
    )
    out = list(read_dataset_as_dataframes__iterator("u", store, predicates=[[("x", "==", "v21")]]))
    assert len(out) == 1 and list(out[0]["x"]) == ["v21"]
    groups = list(read_dataset_as_dataframes__iterator("u", store, dispatch_by=["p"]))
    assert [sorted(set(g["p"])) for g in groups] == [[0], [1]]
    assert [len(g) for g in groups] == [6, 6]


def test_read_iterator_checks_arguments_when_called(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(1), store, "u")
    with pytest.raises(ka.InvalidArgumentError, match="nope"):
        read_dataset_as_dataframes__iterator("u", store, columns=["nope"])
    with pytest.raises(ka.DatasetNotFoundError):
        read_dataset_as_dataframes__iterator("missing", store)


def test_read_iterator_categoricals(store: str) -> None:
    store_dataframes_as_dataset__iter(_frames(2), store, "u")
    (df, *_) = read_dataset_as_dataframes__iterator("u", store, categoricals=["x"])
    assert isinstance(df["x"].dtype, pd.CategoricalDtype)
