"""The writer's parallel split: same files as the group-by split, errors and streaming intact."""

from __future__ import annotations

import datetime
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import commit as committer
from ktk_arrow import write
from ktk_arrow.storage import resolve_store

#: partition column kinds: an Arrow type and values with collisions, nulls and awkward text
KINDS: dict[str, tuple[pa.DataType, list[Any]]] = {
    "string": (pa.string(), ["a", "b/c", "d e", "%2F", "x=y", "é", None]),
    "bool": (pa.bool_(), [True, False, None]),
    "date": (pa.date32(), [datetime.date(2024, 1, 1), datetime.date(1999, 12, 31), None]),
    "int": (pa.int64(), [0, -1, 7, None]),
}


def _reference_split(
    table: pa.Table, partition_keys: Sequence[str]
) -> list[tuple[list[Any], write.Rows]]:
    """The split the writer had before: a group-by with list aggregation of row numbers."""
    if not partition_keys:
        return [([], slice(0, table.num_rows))]
    key_table = table.select(list(partition_keys)).combine_chunks()
    key_table = pa.table(
        {
            k: c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
            for k, c in zip(key_table.column_names, key_table.columns, strict=True)
        }
    )
    rows = key_table.append_column("__row", pa.array(np.arange(table.num_rows)))
    grouped = rows.group_by(list(partition_keys), use_threads=False).aggregate([("__row", "list")])
    values = [grouped.column(k).to_pylist() for k in partition_keys]
    lists = grouped.column("__row_list").combine_chunks()
    return [([v[i] for v in values], lists[i].values) for i in range(grouped.num_rows)]


@st.composite
def chunked_tables(draw: st.DrawFn) -> tuple[list[pa.Table], list[str]]:
    """1-3 chunks of one random table with 0-3 partition columns, and those columns."""
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), max_size=3))
    rows = draw(st.integers(1, 40))
    columns: dict[str, pa.Array] = {}
    for i, kind in enumerate(kinds):
        arrow_type, choices = KINDS[kind]
        picked = draw(st.lists(st.sampled_from(choices), min_size=rows, max_size=rows))
        columns[f"p{i}"] = pa.array(picked, arrow_type)
    columns["seq"] = pa.array(np.arange(rows, dtype=np.int64))
    columns["v"] = pa.array(
        draw(st.lists(st.sampled_from(["u", "w", None]), min_size=rows, max_size=rows)), pa.string()
    )
    table = pa.table(columns)
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=2)))
    bounds = [0, *cuts, rows]
    chunks = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return chunks, [f"p{i}" for i in range(len(kinds))]


def _files_by_directory(root: str, uuid: str) -> dict[str, list[dict[str, list[Any]]]]:
    """Each partition directory's files as column dicts, in a name-independent order."""
    meta = ka.dataset(root, uuid).metadata
    out: dict[str, list[dict[str, list[Any]]]] = {}
    for label, entry in meta.files.items():
        directory = label.rpartition("/")[0]
        out.setdefault(directory, []).append(pq.read_table(os.path.join(root, entry.key)))
    return {
        d: sorted((t.to_pydict() for t in tables), key=lambda c: c["seq"])
        for d, tables in out.items()
    }


@settings(max_examples=40, deadline=None)
@given(data=chunked_tables(), max_rows=st.sampled_from([None, 1, 2, 3]))
def test_split_writes_the_files_the_group_by_split_wrote(
    data: tuple[list[pa.Table], list[str]], max_rows: int | None
) -> None:
    chunks, keys_ = data
    options = {"partition_on": keys_, "max_rows_per_file": max_rows, "secondary_indices": ["v"]}
    with tempfile.TemporaryDirectory() as root:
        ka.write_dataset(chunks, root, "new", **options)
        with mock.patch.object(write, "_split", _reference_split):
            ka.write_dataset(chunks, root, "old", **options)
        new, old = _files_by_directory(root, "new"), _files_by_directory(root, "old")
        assert new == old
        for files in new.values():
            for columns in files:
                assert columns["seq"] == sorted(columns["seq"])  # input order kept in a file
                assert max_rows is None or len(columns["seq"]) <= max_rows
        got_new = ka.dataset(root, "new").to_table().sort_by("seq")
        got_old = ka.dataset(root, "old").to_table().sort_by("seq")
        assert got_new.schema == got_old.schema
        assert got_new.equals(got_old)
        expected = pa.concat_tables(chunks)
        assert got_new.select(expected.column_names).to_pylist() == expected.to_pylist()
        assert _index(root, "new") == _files_holding(root, "new", "v")


def _index(root: str, uuid: str) -> dict[Any, set[str]]:
    meta = ka.dataset(root, uuid).metadata
    if "v" not in meta.indices:  # a write whose indexed values are all null records none
        return {}
    index = committer.read_index(resolve_store(root), meta, "v")
    return {v: set(labels) for v, labels in index.items()}


def _files_holding(root: str, uuid: str, column: str) -> dict[Any, set[str]]:
    """Each non-null value of ``column`` and the labels of the files holding it."""
    out: dict[Any, set[str]] = {}
    for label, entry in ka.dataset(root, uuid).metadata.files.items():
        for value in pq.read_table(os.path.join(root, entry.key)).column(column).to_pylist():
            if value is not None:
                out.setdefault(value, set()).add(label)
    return out


def test_split_of_presorted_rows_slices_without_a_copy() -> None:
    table = pa.table({"p": ["a", "a", "b", "b", "b", "c"], "v": range(6)})
    parts = write._split(table, ["p"])
    assert [(values, rows) for values, rows in parts] == [
        (["a"], slice(0, 2)),
        (["b"], slice(2, 5)),
        (["c"], slice(5, 6)),
    ]


def test_split_of_interleaved_rows_keeps_first_seen_order_and_row_order() -> None:
    table = pa.table({"p": ["b", None, "a", "b", None, "a"], "q": [1, 1, 2, 1, 1, 2]})
    parts = write._split(table, ["p", "q"])
    assert [values for values, _ in parts] == [["b", 1], [None, 1], ["a", 2]]
    assert [rows.to_pylist() for _, rows in parts] == [[0, 3], [1, 4], [2, 5]]


def _chunks(count: int, partitions: int = 4, rows: int = 40) -> list[pa.Table]:
    return [
        pa.table(
            {
                "p": [f"k{i % partitions}" for i in range(rows)],
                "v": np.arange(n * rows, (n + 1) * rows, dtype=np.int64),
            }
        )
        for n in range(count)
    ]


def _data_files(root: str) -> list[str]:
    return [
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".parquet")
    ]


class Boom(Exception):
    """The error a failing worker raises."""


def _failing_write_file(fail_at: int, boom: Boom) -> Any:
    """A ``FileWriter._write_file`` whose call ``fail_at`` raises ``boom``; slow otherwise."""
    original = write.FileWriter._write_file
    calls = iter(range(10**9))
    lock = threading.Lock()

    def patched(self: write.FileWriter, *args: Any) -> int:
        with lock:
            n = next(calls)
        if n == fail_at:
            raise boom
        time.sleep(0.01)  # the others still write when the failure surfaces
        return original(self, *args)

    return patched


def test_worker_error_surfaces_as_itself_and_leaves_no_dataset_and_no_files(tmp_path) -> None:
    root = str(tmp_path)
    boom = Boom("disk on fire")
    failing = _failing_write_file(5, boom)
    with mock.patch.object(write.FileWriter, "_write_file", failing), pytest.raises(Boom) as raised:
        ka.write_dataset(_chunks(4), root, "ds", partition_on="p")
    assert raised.value is boom
    assert committer.load_latest(resolve_store(root), "ds") is None
    assert _data_files(root) == []


def test_worker_error_in_an_append_keeps_the_version_and_only_its_files(tmp_path) -> None:
    root = str(tmp_path)
    first = ka.write_dataset(_chunks(1), root, "ds", partition_on="p")
    before = sorted(_data_files(root))
    boom = Boom("quota")
    failing = _failing_write_file(6, boom)
    with mock.patch.object(write.FileWriter, "_write_file", failing), pytest.raises(Boom):
        ka.write_dataset(_chunks(4), root, "ds", mode="append")
    assert ka.dataset(root, "ds").version == first.version
    assert sorted(_data_files(root)) == before
    assert ka.dataset(root, "ds").to_table().num_rows == 40


def test_input_error_mid_stream_waits_for_the_workers_and_deletes_their_files(tmp_path) -> None:
    root = str(tmp_path)

    def chunks() -> Iterator[pa.Table]:
        yield from _chunks(3)
        raise ValueError("source went away")

    slow = _failing_write_file(-1, Boom("never"))
    with (
        mock.patch.object(write.FileWriter, "_write_file", slow),
        pytest.raises(ValueError, match="source went away"),
    ):
        ka.write_dataset(chunks(), root, "ds", partition_on="p")
    assert committer.load_latest(resolve_store(root), "ds") is None
    assert _data_files(root) == []


def test_a_generator_is_pulled_at_most_the_in_flight_bound_ahead(tmp_path) -> None:
    partitions, count = 4, 8
    written = 0
    lock = threading.Lock()
    original = write.FileWriter._write_file

    def counted(self: write.FileWriter, *args: Any) -> int:
        nonlocal written
        time.sleep(0.005)  # slower than pulling: a greedy reader would run ahead
        size = original(self, *args)
        with lock:
            written += 1
        return size

    ahead: list[int] = []

    def chunks() -> Iterator[pa.Table]:
        for i, chunk in enumerate(_chunks(count, partitions)):
            with lock:
                done_chunks = written // partitions
            ahead.append(i - done_chunks)
            yield chunk

    with mock.patch.object(write.FileWriter, "_write_file", counted):
        snapshot = ka.write_dataset(chunks(), str(tmp_path), "ds", partition_on="p")
    assert snapshot.files_added == partitions * count
    # pulling chunk i, the chunks before i - (bound - 1) are written: never more in memory
    assert max(ahead) <= write._CHUNKS_IN_FLIGHT - 1
    assert len(ahead) == count


def test_dictionary_encoding_only_where_values_repeat() -> None:
    n = 20_000
    data = pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "few": np.arange(n, dtype=np.int64) % 7,
            "name": pa.array([f"n{i}" for i in range(n)]),
            "tag": pa.array(["x", "y"] * (n // 2)),
            "cat": pa.array(["x", "y"] * (n // 2)).dictionary_encode(),
            "flag": pa.array([True, False] * (n // 2)),
        }
    )
    assert write._dictionary_columns(data) == ["few", "tag", "cat"]
    nested = data.append_column("xs", pa.array([[1]] * n))
    assert write._dictionary_columns(nested) is True
