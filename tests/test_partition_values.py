"""Partition values round trip: ka.dataset, io.eager, plain Arrow, and the key encoding.

Every partition value is written as ``quote(value_to_string(v), safe="")`` in a
``col=value`` directory; null is ``__HIVE_DEFAULT_PARTITION__``.  Reading it
back must give the same value *and* type, through our reader and through plain
``pyarrow.dataset`` with the dataset's ``HivePartitioning``.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow.io import eager
from ktk_arrow.spec import keys

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

#: one case per partition type: (arrow type, values incl. null, eager dtype without/with nulls)
CASES: dict[str, tuple[pa.DataType, list]] = {
    "str": (
        pa.string(),
        [
            "US/CA",
            "a b",
            "x=y",
            "100%",
            "what?",
            "#1",
            "a+b",
            "ünï©ødé ✓",
            "",
            " lead",
            "trail ",
            "..",
            "%2F",
            "__HIVE_DEFAULT_PARTITION__x",
            None,
        ],
    ),
    "int": (pa.int64(), [-(2**63), -5, 0, 7, 2**63 - 1, None]),
    "bool": (pa.bool_(), [True, False, None]),
    "date": (pa.date32(), [dt.date(2020, 1, 2), dt.date(1, 1, 1), dt.date(9999, 12, 31), None]),
    "ts": (
        pa.timestamp("us"),
        [
            dt.datetime(2020, 1, 2, 3, 4, 5, 6),
            dt.datetime(2020, 1, 2),
            dt.datetime(1900, 2, 28, 23, 59, 59, 999999),
            None,
        ],
    ),
    "tz": (
        pa.timestamp("us", tz="Europe/Berlin"),
        [
            dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=BERLIN),
            dt.datetime(2020, 7, 1, tzinfo=BERLIN),  # summer time: another offset
            None,
        ],
    ),
    "tz_utc": (pa.timestamp("us", tz="UTC"), [dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc)]),
}


def table_for(name: str) -> pa.Table:
    arrow_type, values = CASES[name]
    return pa.table(
        {
            "part": pa.array(values, type=arrow_type),
            "row": pa.array(range(len(values)), type=pa.int64()),
        }
    )


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "store")


def written(root: str, name: str) -> pa.Table:
    table = table_for(name)
    ka.write_dataset(table, root, name, partition_on=["part"])
    return table


def distinct(values: list) -> int:
    return len({(type(v), v) for v in values})


@pytest.mark.parametrize("name", sorted(CASES))
def test_partition_values_round_trip_through_ka_dataset(root, name):
    table = written(root, name)
    ds = ka.dataset(root, name)
    assert ds.schema.field("part").type == table.schema.field("part").type
    got = ds.to_table().sort_by("row")
    assert got.column("part").type == table.schema.field("part").type
    assert got.column("part").to_pylist() == table.column("part").to_pylist()
    assert len(ds.tasks) == distinct(table.column("part").to_pylist())


@pytest.mark.parametrize("name", sorted(CASES))
def test_partition_values_round_trip_through_eager_read_table(root, name):
    table = written(root, name)
    got = eager.read_table(name, root).sort_values("row").reset_index(drop=True)
    expected = table.to_pandas(date_as_object=True, coerce_temporal_nanoseconds=True)
    if name == "int":
        # a null in an int column: pandas' nullable Int64, not float64 (2**63-1 must survive)
        assert got["part"].dtype == "Int64"
        assert got["part"].tolist()[:-1] == table.column("part").to_pylist()[:-1]
        assert got["part"].isna().tolist() == [False] * 5 + [True]
        return
    if name == "bool":
        assert got["part"].dtype == "boolean"
        assert got["part"].tolist()[:2] == [True, False] and pd.isna(got["part"].iloc[2])
        return
    pd.testing.assert_series_equal(got["part"], expected["part"], check_names=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_arrow_reads_the_directory_with_the_dataset_partitioning(root, name):
    table = written(root, name)
    partitioning = ka.dataset(root, name).partitioning.arrow
    plain = pds.dataset(
        os.path.join(root, name, keys.TABLE),
        format="parquet",
        partitioning=partitioning,
        exclude_invalid_files=True,  # skips _common_metadata (no row groups)
    )
    got = plain.to_table().sort_by("row")
    assert got.schema.field("part").type == table.schema.field("part").type
    assert got.column("part").to_pylist() == table.column("part").to_pylist()


def test_plain_arrow_ignores_metadata_files_via_ignore_prefixes(root):
    written(root, "str")
    partitioning = ka.dataset(root, "str").partitioning.arrow
    plain = pds.dataset(
        os.path.join(root, "str", keys.TABLE),
        format="parquet",
        partitioning=partitioning,
        ignore_prefixes=["_", "."],
    )
    assert plain.count_rows() == len(CASES["str"][1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_equality_predicate_on_each_value_prunes_to_its_partition(root, name):
    table = written(root, name)
    values = table.column("part").to_pylist()
    for row, value in enumerate(values):
        want_rows = [i for i, v in enumerate(values) if v == value or (v is None and value is None)]
        ds = ka.dataset(root, name, filter=[[("part", "==", value)]])
        assert len(ds.tasks) == 1, (value, [t.label for t in ds.tasks])
        assert sorted(ds.to_table().column("row").to_pylist()) == want_rows, value
        got = eager.read_table(name, root, predicates=[[("part", "==", value)]])
        assert sorted(got["row"].tolist()) == want_rows, (row, value)


@pytest.mark.parametrize(
    ("name", "predicate", "rows"),
    [
        ("int", ("part", "<", 0), [0, 1]),
        ("int", ("part", ">=", 0), [2, 3, 4]),
        ("int", ("part", "in", [-5, 7]), [1, 3]),
        ("bool", ("part", "==", False), [1]),
        ("bool", ("part", "!=", True), [1, 2]),  # plateau semantics: != selects nulls
        ("date", ("part", ">", dt.date(1000, 1, 1)), [0, 2]),
        ("ts", ("part", ">=", dt.datetime(2020, 1, 2)), [0, 1]),
        ("ts", ("part", "<", pd.Timestamp("2000-01-01")), [2]),
        ("tz", ("part", ">", pd.Timestamp("2020-06-30T21:00:00Z")), [1]),
        ("tz", ("part", "<", pd.Timestamp("2020-06-30T21:00:00Z")), [0]),
        ("tz", ("part", "==", pd.Timestamp("2020-06-30T22:00:00Z")), [1]),
        ("str", ("part", "in", ["", "US/CA", "100%"]), [0, 3, 8]),
        ("str", ("part", "==", None), [14]),
    ],
)
def test_range_and_set_predicates_on_partition_columns_prune(root, name, predicate, rows):
    written(root, name)
    ds = ka.dataset(root, name, filter=[[predicate]])
    assert len(ds.tasks) == len(rows)
    assert sorted(ds.to_table().column("row").to_pylist()) == rows
    got = eager.read_table(name, root, predicates=[[predicate]])
    assert sorted(got["row"].tolist()) == rows


def test_directory_names_are_quoted_with_nothing_safe(root):
    written(root, "str")
    names = set(os.listdir(os.path.join(root, "str", keys.TABLE)))
    assert "part=US%2FCA" in names  # plateau would write part=US/CA: two levels
    assert "part=a%20b" in names and "part=x%3Dy" in names and "part=100%25" in names
    assert "part=what%3F" in names and "part=%231" in names and "part=a%2Bb" in names
    assert "part=" in names and "part=%20lead" in names and "part=trail%20" in names
    assert "part=%252F" in names and "part=.." in names
    assert "part=__HIVE_DEFAULT_PARTITION__" in names
    assert f"part={quote('ünï©ødé ✓', safe='')}" in names


def test_bool_partitions_are_written_as_python_literals(root):
    written(root, "bool")
    names = set(os.listdir(os.path.join(root, "bool", keys.TABLE)))
    assert {"part=True", "part=False", "part=__HIVE_DEFAULT_PARTITION__"} <= names


def test_tz_aware_partitions_are_written_in_utc_with_microseconds(root):
    written(root, "tz")
    names = {n for n in os.listdir(os.path.join(root, "tz", keys.TABLE)) if "=" in n}
    raw = {keys.unquote_value(n.split("=", 1)[1]) for n in names}
    assert raw == {
        "2020-01-02 02:04:05.000006+00:00",
        "2020-06-30 22:00:00+00:00",
        keys.NULL_VALUE,
    }


def test_local_mean_time_offsets_with_seconds_round_trip(root):
    """Before 1893 Berlin was at +00:53:28: an offset neither pandas nor Arrow parse."""
    value = dt.datetime(1890, 1, 1, tzinfo=BERLIN)
    table = pa.table(
        {"part": pa.array([value], pa.timestamp("us", tz="Europe/Berlin")), "row": [0]}
    )
    ka.write_dataset(table, root, "lmt", partition_on=["part"])
    assert ka.dataset(root, "lmt").to_table().column("part").to_pylist() == [value]


def test_multi_level_partitions_round_trip(root):
    table = pa.table(
        {
            "country": ["US/CA", "DE", "DE", None],
            "flag": [True, False, False, True],
            "day": pa.array([dt.date(2020, 1, 1)] * 3 + [None], type=pa.date32()),
            "row": [0, 1, 2, 3],
        }
    )
    ka.write_dataset(table, root, "multi", partition_on=["country", "flag", "day"])
    ds = ka.dataset(root, "multi")
    got = ds.to_table().sort_by("row").select(table.column_names)
    assert got.equals(table.cast(got.schema))
    ds = ka.dataset(root, "multi", filter=[[("country", "==", "DE"), ("flag", "==", False)]])
    assert len(ds.tasks) == 1 and ds.count_rows() == 2


def test_a_string_equal_to_the_null_marker_reads_as_null(root):
    """Documented collision (Hive's convention): the literal text is the null marker."""
    table = pa.table({"part": ["__HIVE_DEFAULT_PARTITION__"], "row": [0]})
    ka.write_dataset(table, root, "marker", partition_on=["part"])
    assert ka.dataset(root, "marker").to_table().column("part").to_pylist() == [None]


# -- labels as plateau writes them ---------------------------------------------------


def test_parse_label_rejoins_a_slash_plateau_left_unquoted():
    pairs, name = keys.parse_label("country=US/CA/city=San%20Jos%C3%A9/abc")
    assert pairs == [("country", "US/CA"), ("city", "San José")]
    assert name == "abc"
    assert keys.parse_label("a=/x/b=1/f") == ([("a", "/x"), ("b", "1")], "f")
    assert keys.parse_label("a=x//f") == ([("a", "x/")], "f")
    assert keys.parse_label("f") == ([], "f")


def test_parse_label_refuses_a_label_not_starting_with_a_partition():
    with pytest.raises(ka.InvalidArgumentError, match="without '='"):
        keys.parse_label("oops/a=1/f")


# -- property tests of the encoding ----------------------------------------------------

#: deterministic runs: the same examples every time, no example database
FIXED = {"derandomize": True, "database": None}

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(TEXT)
@settings(**FIXED)
def test_quote_unquote_round_trip(text):
    quoted = keys.quote_value(text)
    assert "/" not in quoted and "=" not in quoted
    assert keys.unquote_value(quoted) == text


@given(TEXT)
@settings(max_examples=200, **FIXED)
def test_partition_directory_parses_back_to_the_same_text(text):
    directory = keys.partition_directory(["c/ol=x"], [text])
    assert keys.parse_label(f"{directory}/file") == ([("c/ol=x", text)], "file")


@given(TEXT.filter(lambda t: t != keys.NULL_VALUE))
@settings(max_examples=200, **FIXED)
def test_arrow_hive_parsing_agrees_with_our_string_encoding(text):
    assert _arrow_parse(text, pa.string()) == text


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DATES = st.dates()
NAIVE = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata", "Etc/GMT+12"])

TYPED = {
    "int": (INT64, pa.int64()),
    "uint": (st.integers(min_value=0, max_value=2**64 - 1), pa.uint64()),
    "bool": (st.booleans(), pa.bool_()),
    "float": (st.floats(allow_nan=False, width=64), pa.float64()),
    "date": (DATES, pa.date32()),
    "ts": (NAIVE, pa.timestamp("us")),
    "str": (TEXT.filter(lambda t: t != keys.NULL_VALUE), pa.string()),
}


@pytest.mark.parametrize("kind", sorted(TYPED))
def test_value_to_string_round_trips_each_type(kind):
    strategy, arrow_type = TYPED[kind]

    @given(strategy)
    @settings(max_examples=150, **FIXED)
    def check(value):
        text = keys.value_to_string(value)
        assert keys.string_to_value(text, arrow_type) == value
        assert keys.value_to_string(None) == keys.NULL_VALUE
        assert keys.string_to_value(keys.NULL_VALUE, arrow_type) is None

    check()


@pytest.mark.parametrize("kind", ["int", "uint", "bool", "float", "date", "ts"])
def test_arrow_hive_parsing_agrees_with_our_encoding_of_each_type(kind):
    strategy, arrow_type = TYPED[kind]

    @given(strategy)
    @settings(max_examples=100, **FIXED)
    def check(value):
        assert _arrow_parse(keys.value_to_string(value), arrow_type) == value

    check()


@given(NAIVE, ZONES)
@settings(max_examples=150, **FIXED)
def test_tz_aware_timestamps_round_trip_through_our_encoding_and_arrow(naive, zone):
    arrow_type = pa.timestamp("us", tz=zone)
    value = naive.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    try:
        pd.Timestamp(value)  # some wall times overflow once converted to UTC
    except (OverflowError, ValueError):
        return
    text = keys.value_to_string(value)
    back = keys.string_to_value(text, arrow_type)
    assert back == value and str(back.tzinfo) == zone
    assert _arrow_parse(text, arrow_type) == value


@given(NAIVE)
@settings(**FIXED)
def test_pandas_timestamps_encode_like_datetimes(value):
    assert keys.value_to_string(pd.Timestamp(value)) == keys.value_to_string(value)


def _arrow_parse(text: str, arrow_type: pa.DataType):
    """The value Arrow's hive partitioning reads from our directory name."""
    partitioning = pds.HivePartitioning(
        pa.schema([("c", arrow_type)]), null_fallback=keys.NULL_VALUE, segment_encoding="uri"
    )
    expr = partitioning.parse("/" + keys.partition_directory(["c"], [text]) + "/f.parquet")
    return pds.get_partition_keys(expr)["c"]
