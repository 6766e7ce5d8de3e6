"""Schema evolution: ``write_dataset(..., schema_mode="merge")``.

New columns are added as nullable (older files read them as null, in Arrow,
plateau, the kartothek facade, Polars and DuckDB), integer and float columns
widen, anything else is refused naming the columns; concurrent evolving
appends rebase while their schemas still merge.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ktk_arrow as ka
from ktk_arrow import commit, write
from ktk_arrow.check import check_dataset
from ktk_arrow.io import eager
from ktk_arrow.spec import keys
from ktk_arrow.storage import resolve_store

minimalkv = pytest.importorskip("minimalkv")
import plateau.io.eager as pl  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UUID = "evolving"


@pytest.fixture
def root(tmp_path) -> str:
    path = tmp_path / "store"
    path.mkdir()
    return str(path)


def first(n: int = 4, offset: int = 0) -> pa.Table:
    i = np.arange(offset, offset + n)
    return pa.table(
        {"p": ["A" if k % 2 else "B" for k in i], "id": i, "name": [f"n{k}" for k in i]}
    )


def evolved(root: str) -> None:
    """Version 0: p, id, name; version 1 adds ``score`` (float) in two rows."""
    ka.write_dataset(first(), root, UUID, partition_on=["p"])
    more = first(2, offset=10).append_column("score", pa.array([1.5, 2.5]))
    ka.write_dataset(more, root, UUID, mode="append", schema_mode="merge")


def by_id(table: pa.Table) -> dict[str, list]:
    return table.sort_by("id").to_pydict()


def test_added_column_reads_null_in_older_files(root):
    evolved(root)
    ds = ka.dataset(root, UUID)
    assert ds.schema.field("score").type == pa.float64()
    assert ds.schema.field("score").nullable
    rows = by_id(ds.to_table())
    assert rows["id"] == [0, 1, 2, 3, 10, 11]
    assert rows["score"] == [None, None, None, None, 1.5, 2.5]
    assert ds.metadata.schema_evolved
    # filters on the new column: the old files hold only nulls there
    assert by_id(ka.dataset(root, UUID, filter=[[("score", ">", 2.0)]]).to_table())["id"] == [11]
    assert ka.dataset(root, UUID).to_table(filter=pa.compute.field("score").is_null()).num_rows == 4
    report = check_dataset(resolve_store(root), UUID, deep=True)
    assert report.ok and report.problems == []


def test_plateau_sees_the_new_column(root):
    evolved(root)
    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    df = pl.read_table(UUID, store=store).sort_values("id").reset_index(drop=True)
    assert list(df["id"]) == [0, 1, 2, 3, 10, 11]
    assert df["score"].isna().tolist() == [True] * 4 + [False] * 2
    assert df["score"].iloc[4:].tolist() == [1.5, 2.5]
    raw = resolve_store(root).get(keys.common_metadata_key(UUID, keys.TABLE))
    assert "score" in pq.read_schema(pa.BufferReader(raw)).names


def test_eager_facade_polars_and_duckdb_read_the_evolved_dataset(root):
    evolved(root)
    df = eager.read_table(UUID, store=root).sort_values("id").reset_index(drop=True)
    assert df["score"].isna().sum() == 4 and df["score"].iloc[5] == 2.5

    frame = ka.dataset(root, UUID).to_polars().collect().sort("id")
    assert frame["score"].to_list() == [None, None, None, None, 1.5, 2.5]
    assert str(frame.schema["score"]) == "Float64"
    only_old = ka.dataset(root, UUID, filter=[[("id", "<", 4)]]).to_polars().collect()
    assert only_old["score"].null_count() == 4

    relation = ka.dataset(root, UUID).to_duckdb()
    got = sorted(relation.fetchall(), key=lambda row: row[1])
    assert [row[1:] for row in got] == [
        (0, "n0", None),
        (1, "n1", None),
        (2, "n2", None),
        (3, "n3", None),
        (10, "n10", 1.5),
        (11, "n11", 2.5),
    ]
    # planned files that all predate the column: a typed null column, not a binder error
    old = ka.dataset(root, UUID, filter=[[("id", "<", 4)]]).to_duckdb()
    assert old.columns[-1] == "score" and str(old.types[-1]) == "DOUBLE"
    assert [row[-1] for row in old.fetchall()] == [None] * 4


def test_data_lacking_a_column_is_written_null_with_merge(root):
    evolved(root)
    ka.write_dataset(first(1, offset=20), root, UUID, mode="append", schema_mode="merge")
    assert by_id(ka.dataset(root, UUID).to_table())["score"][-1] is None
    with pytest.raises(ka.SchemaMismatchError, match=r"missing columns \['score'\]"):
        ka.write_dataset(first(1, offset=30), root, UUID, mode="append")
    with pytest.raises(ka.SchemaMismatchError, match="partition columns"):
        ka.write_dataset(
            first(1, offset=30).drop_columns(["p"]), root, UUID, mode="append", schema_mode="merge"
        )


def test_default_mode_refuses_new_columns_and_names_merge(root):
    ka.write_dataset(first(), root, UUID)
    with pytest.raises(ka.SchemaMismatchError) as info:
        ka.write_dataset(first().append_column("x", pa.array([1] * 4)), root, UUID, mode="append")
    assert "unexpected columns ['x']" in str(info.value)
    assert "schema_mode='merge'" in str(info.value)
    assert ka.dataset(root, UUID).schema.names == ["p", "id", "name"]
    assert len(ka.history(root, UUID)) == 1


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("id", pa.array(["a"] * 2), "'id': dataset has int64, data has string"),
        ("name", pa.array([1, 2]), "'name': dataset has string, data has int64"),
        ("p", pa.array([1, 2]), "partition column 'p': dataset has string, data has int64"),
        ("id", pa.array([1.5, 2.5]), "'id': dataset has int64, data has double"),
    ],
)
def test_merge_refuses_other_type_changes_naming_the_columns(root, column, value, message):
    ka.write_dataset(first(), root, UUID, partition_on=["p"])
    data = first(2, offset=10)
    data = data.set_column(data.schema.get_field_index(column), column, value)
    with pytest.raises(ka.SchemaMismatchError) as info:
        ka.write_dataset(data, root, UUID, mode="append", schema_mode="merge")
    assert message in str(info.value)
    assert "mode='overwrite'" in str(info.value)
    assert len(ka.history(root, UUID)) == 1


def test_schema_mode_is_checked(root):
    with pytest.raises(ka.InvalidArgumentError, match="schema_mode must be None or 'merge'"):
        ka.write_dataset(first(), root, UUID, mode="append", schema_mode="overwrite")
    with pytest.raises(ka.InvalidArgumentError, match="needs mode='append'"):
        ka.write_dataset(first(), root, UUID, schema_mode="merge")
    with pytest.raises(ka.InvalidArgumentError, match="replaces the schema already"):
        ka.write_dataset(first(), root, UUID, mode="overwrite", schema_mode="merge")


def test_merge_on_overwrite_with_delete_scope(root):
    ka.write_dataset(first(), root, UUID, partition_on=["p"])
    new = pa.table({"p": ["A"], "id": [7], "name": ["x"], "flag": [True]})
    ka.write_dataset(
        new, root, UUID, mode="overwrite", delete_scope=[{"p": "A"}], schema_mode="merge"
    )
    rows = by_id(ka.dataset(root, UUID).to_table())
    assert rows["id"] == [0, 2, 7] and rows["flag"] == [None, None, True]


def test_narrow_integers_and_floats_widen(root):
    # our datasets normalise as kartothek does: int32/float32 data joins int64/float64 columns
    ka.write_dataset(first(), root, UUID)
    small = pa.table(
        {
            "p": ["A"],
            "id": pa.array([5], pa.int16()),
            "name": ["x"],
            "f": pa.array([1.0], pa.float32()),
        }
    )
    ka.write_dataset(small, root, UUID, mode="append", schema_mode="merge")
    schema = ka.dataset(root, UUID).schema
    assert schema.field("id").type == pa.int64() and schema.field("f").type == pa.float64()


def test_a_narrow_dataset_schema_widens(root):
    """A schema file recording int32/float32 (a writer that does not normalise) widens."""
    df = pd.DataFrame(
        {"id": np.arange(3, dtype="int32"), "x": np.array([0.5, 1.5, 2.5], dtype="float32")}
    )
    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    pl.store_dataframes_as_dataset(store=store, dataset_uuid=UUID, dfs=[df])
    narrow = pa.schema([("id", pa.int32()), ("x", pa.float32())])
    pq.write_metadata(narrow, f"{root}/{UUID}/table/_common_metadata")
    assert ka.dataset(root, UUID).schema.field("id").type == pa.int32()
    big = pa.table({"id": pa.array([2**40], pa.int64()), "x": pa.array([1e300])})
    with pytest.raises(ka.SchemaMismatchError, match="'id' cannot be converted"):
        ka.write_dataset(big, root, UUID, mode="append")
    ka.write_dataset(big, root, UUID, mode="append", schema_mode="merge")
    ds = ka.dataset(root, UUID)
    assert ds.schema.field("id").type == pa.int64() and ds.schema.field("x").type == pa.float64()
    rows = by_id(ds.to_table())
    assert rows["id"] == [0, 1, 2, 2**40] and rows["x"] == [0.5, 1.5, 2.5, 1e300]
    assert sorted(ds.to_polars().collect()["id"].to_list()) == [0, 1, 2, 2**40]
    assert sorted(r[0] for r in ds.to_duckdb().fetchall()) == [0, 1, 2, 2**40]


def test_time_travel_shows_the_schema_of_each_version(root):
    evolved(root)
    ka.write_dataset(
        first(1, offset=40).append_column("tag", pa.array(["t"])),
        root,
        UUID,
        mode="append",
        schema_mode="merge",
    )
    names = [ka.dataset(root, UUID, version=v).schema.names for v in range(3)]
    assert names == [
        ["p", "id", "name"],
        ["p", "id", "name", "score"],
        ["p", "id", "name", "score", "tag"],
    ]
    old = ka.dataset(root, UUID, version=0).to_table()
    assert old.column_names == ["p", "id", "name"] and old.num_rows == 4
    assert not ka.dataset(root, UUID, version=0).metadata.schema_evolved


def test_delete_rows_and_upsert_on_an_evolved_dataset(root):
    evolved(root)
    ka.delete_rows(root, UUID, [[("id", "in", [1, 11])]])  # an old file and a new one
    rows = by_id(ka.dataset(root, UUID).to_table())
    assert rows["id"] == [0, 2, 3, 10]
    assert rows["score"] == [None, None, None, 1.5]
    update = pa.table({"p": ["B", "A"], "id": [0, 99], "name": ["new", "n99"], "score": [9.0, 8.0]})
    ka.upsert(update, root, UUID, on="id")
    rows = by_id(ka.dataset(root, UUID).to_table())
    assert rows["id"] == [0, 2, 3, 10, 99]
    assert rows["name"] == ["new", "n2", "n3", "n10", "n99"]
    assert rows["score"] == [9.0, None, None, 1.5, 8.0]


def test_compaction_merges_files_of_both_schemas(root):
    evolved(root)
    before = by_id(ka.dataset(root, UUID).to_table())
    ka.compact(root, UUID)
    ds = ka.dataset(root, UUID)
    assert len(ds.metadata.files) == 2  # one file per partition
    assert by_id(ds.to_table()) == before
    assert not ds.metadata.schema_evolved  # every file now holds every column
    assert sorted(ds.to_duckdb().fetchall(), key=lambda r: r[1])[-1][-1] == 2.5


def test_build_index_on_an_added_column(root):
    evolved(root)
    with pytest.raises(ka.InvalidArgumentError, match="build them over all files"):
        ka.write_dataset(
            first(1, offset=50).append_column("score", pa.array([3.5])),
            root,
            UUID,
            mode="append",
            secondary_indices=["score"],
        )
    ka.build_index(root, UUID, "score")
    ds = ka.dataset(root, UUID, filter=[[("score", "==", 2.5)]])
    assert len(ds.tasks) == 1 and by_id(ds.to_table())["id"] == [11]


def _prepared(root: str, *, schema_mode: str | None = "merge") -> write.PreparedWrite:
    return write.prepare_write(resolve_store(root), UUID, mode="append", schema_mode=schema_mode)


def _commit(prepared: write.PreparedWrite, data: pa.Table) -> ka.Snapshot:
    writer = prepared.writer_spec().open()
    writer.write(data)
    try:
        return prepared.commit_files(writer.entries, writer.index_delta, writer.schema)
    finally:
        writer.release()


def test_concurrent_evolutions_rebase_to_the_union(root):
    ka.write_dataset(first(), root, UUID, partition_on=["p"])
    # both read version 0, then commit one after the other: the second rebases
    a, b, plain = _prepared(root), _prepared(root), _prepared(root, schema_mode=None)
    _commit(a, first(1, offset=10).append_column("x", pa.array([1])))
    _commit(b, first(1, offset=20).append_column("y", pa.array(["y"])))
    same = _prepared(root)
    _commit(_prepared(root), first(1, offset=30).append_column("z", pa.array([3.0])))
    _commit(same, first(1, offset=40).append_column("z", pa.array([4.0])))  # the same column
    _commit(plain, first(1, offset=50))  # old schema onto the evolved dataset
    ds = ka.dataset(root, UUID)
    assert ds.schema.names == ["p", "id", "name", "x", "y", "z"]
    rows = by_id(ds.to_table())
    assert rows["id"] == [0, 1, 2, 3, 10, 20, 30, 40, 50]
    assert rows["x"] == [None] * 4 + [1] + [None] * 4
    assert rows["y"] == [None] * 5 + ["y"] + [None] * 3
    assert rows["z"] == [None] * 6 + [3.0, 4.0, None]
    assert [s.operation for s in ka.history(root, UUID)] == ["create"] + ["append"] * 5


def test_concurrent_incompatible_evolutions_conflict(root):
    ka.write_dataset(first(), root, UUID)
    a, b = _prepared(root), _prepared(root)
    _commit(a, first(1, offset=10).append_column("x", pa.array([1])))
    with pytest.raises(ka.CommitConflictError, match="'x': dataset has int64"):
        _commit(b, first(1, offset=20).append_column("x", pa.array(["text"])))
    assert ka.dataset(root, UUID).schema.field("x").type == pa.int64()
    assert len(ka.history(root, UUID)) == 2


def test_threads_evolving_at_once_all_commit(root):
    ka.write_dataset(first(), root, UUID)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def append(k: int) -> None:
        try:
            prepared = _prepared(root)
            barrier.wait()
            _commit(prepared, first(1, offset=100 + k).append_column(f"c{k}", pa.array([k])))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ds = ka.dataset(root, UUID)
    assert sorted(ds.schema.names) == sorted(["p", "id", "name", "c0", "c1", "c2", "c3"])
    rows = by_id(ds.to_table())
    assert rows["id"] == [0, 1, 2, 3, 100, 101, 102, 103]
    for k in range(4):
        assert rows[f"c{k}"] == [None] * (4 + k) + [k] + [None] * (3 - k)
    assert len(ka.history(root, UUID)) == 5
    assert commit.load(resolve_store(root), UUID).schema_evolved


def test_an_all_null_column_takes_the_type_of_later_data(root):
    ka.write_dataset(pa.table({"id": [1, 2], "x": pa.nulls(2)}), root, UUID)
    assert ka.dataset(root, UUID).schema.field("x").type == pa.null()
    ka.write_dataset(
        pa.table({"id": [3], "x": [0.5]}), root, UUID, mode="append", schema_mode="merge"
    )
    ds = ka.dataset(root, UUID)
    assert ds.schema.field("x").type == pa.float64()
    assert by_id(ds.to_table())["x"] == [None, None, 0.5]


def test_plateau_cannot_select_or_filter_a_column_older_files_lack(root):
    """plateau reads each file with the columns it stores (docs/compatibility.md)."""
    evolved(root)
    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    with pytest.raises(ValueError, match="Columns cannot be found in stored dataframe: score"):
        pl.read_table(UUID, store=store, columns=["id", "score"])
    with pytest.raises(KeyError):
        pl.read_table(UUID, store=store, predicates=[[("score", "==", 1.5)]])
    # ktk-arrow answers both
    got = ka.dataset(root, UUID, filter=[[("score", "==", 1.5)]]).to_table(columns=["id", "score"])
    assert got.to_pydict() == {"id": [10], "score": [1.5]}
