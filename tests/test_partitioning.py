"""KartothekPartitioning: plain Arrow, ``parse`` and the fragments agree on typed values.

A four-level layout (string with ``/``, spaces, ``%`` and unicode; int; bool;
date; nulls at every level) read three ways: ``ka.dataset``, plain
``pyarrow.dataset.dataset`` with ``partitioning.arrow`` and with
``partitioning.discover()``.  One type per level across many values is
tested in ``test_partition_values.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pytest

import ktk_arrow as ka
from ktk_arrow import planning
from ktk_arrow.spec import keys

KEYS = ["s", "i", "b", "d"]
PARTITION_SCHEMA = pa.schema(
    [("s", pa.string()), ("i", pa.int64()), ("b", pa.bool_()), ("d", pa.date32())]
)
TABLE = pa.table(
    {
        "s": ["US/CA", "a b", "100%", "ünï©ødé ✓", None, "US/CA", "US/CA"],
        "i": pa.array([-5, 0, 7, None, 0, 7, 7], pa.int64()),
        "b": [True, False, None, True, False, True, True],
        "d": [
            dt.date(2020, 1, 2),
            None,
            dt.date(1999, 12, 31),
            dt.date(2020, 1, 2),
            None,
            None,
            None,
        ],
        "row": pa.array(range(7), pa.int64()),
    }
)
DIRECTORIES = 6  # the last two rows share one partition


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("partitioning") / "store")
    ka.write_dataset(TABLE, path, "t", partition_on=KEYS)
    # a second file in an existing partition directory, and one in a new directory
    extra = TABLE.slice(0, 1).set_column(4, "row", pa.array([7], pa.int64()))
    ka.write_dataset(extra, path, "t", mode="append")
    return path


@pytest.fixture
def dataset(root: str) -> ka.KartothekDataset:
    return ka.dataset(root, "t")


def expected() -> pa.Table:
    extra = TABLE.slice(0, 1).set_column(4, "row", pa.array([7], pa.int64()))
    return pa.concat_tables([TABLE, extra])


def by_row(table: pa.Table) -> pa.Table:
    return table.select(TABLE.column_names).sort_by("row")


def relative(task: planning.FileTask) -> str:
    """The file's path below the table directory."""
    return task.key.split(f"/{keys.TABLE}/", 1)[1]


def test_partition_schema_holds_the_typed_partition_columns(dataset: ka.KartothekDataset) -> None:
    partitioning = dataset.partitioning
    assert partitioning.partition_keys == tuple(KEYS)
    assert partitioning.schema.equals(PARTITION_SCHEMA)
    assert isinstance(partitioning.arrow, pds.HivePartitioning)
    assert partitioning.arrow.schema.equals(PARTITION_SCHEMA)
    for name in KEYS:
        assert dataset.schema.field(name).type == PARTITION_SCHEMA.field(name).type


def test_ka_dataset_reads_every_value_with_its_type(dataset: ka.KartothekDataset) -> None:
    assert len(dataset.tasks) == DIRECTORIES + 1
    assert by_row(dataset.to_table()).equals(by_row(expected()))


@pytest.mark.parametrize("how", ["arrow", "discover"])
def test_plain_arrow_reads_what_ka_dataset_reads(
    root: str, dataset: ka.KartothekDataset, how: str
) -> None:
    partitioning = dataset.partitioning
    plain = pds.dataset(
        os.path.join(root, "t", keys.TABLE),
        format="parquet",
        partitioning=partitioning.arrow if how == "arrow" else partitioning.discover(),
        exclude_invalid_files=True,  # skips _common_metadata (no row groups)
    )
    for name in KEYS:
        assert plain.schema.field(name).type == PARTITION_SCHEMA.field(name).type
    assert by_row(plain.to_table()).equals(by_row(dataset.to_table()))
    for predicate in [
        pc.field("s") == "US/CA",
        pc.field("s").is_null(),
        (pc.field("i") == 7) & (pc.field("b") == True),  # noqa: E712 (an Arrow expression)
        pc.field("d") == dt.date(2020, 1, 2),
        pc.field("b").is_null(),
    ]:
        # Arrow prunes its fragments by the parsed directories as we do by the metadata
        assert len(list(plain.get_fragments(filter=predicate))) == len(
            list(dataset.get_fragments(filter=predicate))
        )
        assert by_row(plain.to_table(filter=predicate)).equals(
            by_row(dataset.to_table(filter=predicate))
        )


def test_fragments_carry_the_expression_arrow_parses_from_the_path(
    dataset: ka.KartothekDataset,
) -> None:
    fragments = list(dataset.get_fragments())
    assert len(fragments) == len(dataset.tasks)
    for task, fragment in zip(dataset.tasks, fragments):
        arrow_parsed = dataset.partitioning.arrow.parse("/" + relative(task))
        assert fragment.partition_expression.equals(arrow_parsed), task.label
        assert fragment.partition_expression.equals(
            planning.partition_expression(task, dataset.schema)
        )
        assert pds.get_partition_keys(fragment.partition_expression) == task.partition_values


def test_files_of_one_directory_share_their_partition_expression(
    dataset: ka.KartothekDataset,
) -> None:
    by_directory: dict[str, list[pds.Fragment]] = {}
    for task, fragment in zip(dataset.tasks, dataset.get_fragments()):
        by_directory.setdefault(task.label.rsplit("/", 1)[0], []).append(fragment)
    assert sorted(len(f) for f in by_directory.values()) == [1] * (DIRECTORIES - 1) + [2]
    for fragments in by_directory.values():
        assert all(
            f.partition_expression.equals(fragments[0].partition_expression) for f in fragments
        )


def test_parse_gives_the_typed_values_of_a_label_a_file_or_a_directory(
    dataset: ka.KartothekDataset,
) -> None:
    parse = dataset.partitioning.parse
    for task in dataset.tasks:
        directory = relative(task).rsplit("/", 1)[0]
        assert parse(task.label) == task.partition_values
        assert parse(relative(task)) == task.partition_values
        assert parse(directory + "/") == task.partition_values
        assert parse(directory) == task.partition_values
        for value in task.partition_values.values():
            assert value is None or type(value) in (str, int, bool, dt.date)


def test_parse_examples() -> None:
    parse = ka.KartothekPartitioning(PARTITION_SCHEMA, KEYS).parse
    assert parse("s=US%2FCA/i=-5/b=False/d=2020-01-02/f.parquet") == {
        "s": "US/CA",
        "i": -5,
        "b": False,
        "d": dt.date(2020, 1, 2),
    }
    assert parse("s=__HIVE_DEFAULT_PARTITION__/i=__HIVE_DEFAULT_PARTITION__") == {
        "s": None,
        "i": None,
    }
    assert parse("s=100%25/other=1/f.parquet") == {"s": "100%"}  # not a partition key: left out
    assert parse("s=US/CA/i=1/f.parquet") == {"s": "US/CA", "i": 1}  # plateau's unquoted '/'
    assert parse("f.parquet") == {}


def test_equality_hash_repr_and_pickle(dataset: ka.KartothekDataset, root: str) -> None:
    partitioning = dataset.partitioning
    same = ka.dataset(root, "t").partitioning
    assert partitioning == same and hash(partitioning) == hash(same)
    assert partitioning == ka.KartothekPartitioning(PARTITION_SCHEMA, KEYS)
    assert partitioning != ka.KartothekPartitioning(PARTITION_SCHEMA, KEYS[:2])
    assert partitioning != ka.KartothekPartitioning(
        PARTITION_SCHEMA.set(1, pa.field("i", pa.int32())), KEYS
    )
    assert partitioning != partitioning.arrow
    assert len({partitioning, same}) == 1
    assert repr(partitioning) == "KartothekPartitioning(['s', 'i', 'b', 'd'])"
    assert pickle.loads(pickle.dumps(partitioning)) == partitioning


def test_an_unpartitioned_dataset_has_an_empty_partitioning(tmp_path) -> None:
    ka.write_dataset(pa.table({"x": [1, 2]}), str(tmp_path), "flat")
    flat = ka.dataset(str(tmp_path), "flat")
    assert flat.partitioning.partition_keys == ()
    assert len(flat.partitioning.schema) == 0
    fragment = next(iter(flat.get_fragments()))
    assert fragment.partition_expression.equals(pc.scalar(True))
    plain = pds.dataset(
        os.path.join(str(tmp_path), "flat", keys.TABLE),
        format="parquet",
        partitioning=flat.partitioning.arrow,
        exclude_invalid_files=True,
    )
    assert plain.to_table().equals(flat.to_table())


def test_dictionary_partition_columns_have_a_plain_partition_type(tmp_path) -> None:
    table = pa.table(
        {"c": pa.array(["x", "y", "x"]).dictionary_encode(), "v": pa.array([1, 2, 3], pa.int64())}
    )
    ka.write_dataset(table, str(tmp_path), "cat", partition_on=["c"])
    cat = ka.dataset(str(tmp_path), "cat")
    assert cat.partitioning.schema.field("c").type == pa.string()
    assert cat.to_table().sort_by("v").column("c").to_pylist() == ["x", "y", "x"]
