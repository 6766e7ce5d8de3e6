"""Type fidelity: every column type round trips with its values and dtype family.

Normalisations (kartothek's, documented in docs/compatibility.md): signed ints
are stored as int64, unsigned as uint64, floats as float64, categoricals as
dictionary<int32, ...>, timestamps in microseconds.  Reading back through
``io.eager`` gives kartothek's pandas conventions: nanosecond datetime64,
dates as objects, numpy dtypes where the column has no nulls and pandas'
nullable dtypes (Int64, UInt64, boolean) where it has.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager
from ktk_arrow.spec import keys


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "store")


@dataclass(frozen=True)
class Case:
    values: Any  # anything pd.Series accepts, with ``dtype``
    dtype: Any  # the input pandas dtype (None: let pandas infer)
    arrow: pa.DataType  # the dataset's Arrow type
    eager: Any  # the dtype io.eager reads back


TS = ["2020-01-01 00:00:00.000001", "1900-06-30 23:59:59", "2262-04-11 12:00:00.5"]
BERLIN = "Europe/Berlin"

CASES: dict[str, Case] = {
    **{
        f"int{n}": Case([1, -(2 ** (n - 1)), 2 ** (n - 1) - 1], f"int{n}", pa.int64(), "int64")
        for n in (8, 16, 32, 64)
    },
    **{
        f"Int{n}": Case([1, None, -(2 ** (n - 1))], f"Int{n}", pa.int64(), "Int64")
        for n in (8, 16, 32, 64)
    },
    **{
        f"uint{n}": Case([0, 2**n - 1, 1], f"uint{n}", pa.uint64(), "uint64")
        for n in (8, 16, 32, 64)
    },
    **{
        f"UInt{n}": Case([0, None, 2**n - 1], f"UInt{n}", pa.uint64(), "UInt64")
        for n in (8, 16, 32, 64)
    },
    "int64_big_with_null": Case([2**63 - 1, None, 2**53 + 1], "Int64", pa.int64(), "Int64"),
    "float32": Case([1.5, float("nan"), -0.25], "float32", pa.float64(), "float64"),
    "float64": Case([1.5, None, float("inf")], "float64", pa.float64(), "float64"),
    "bool": Case([True, False, True], "bool", pa.bool_(), "bool"),
    "boolean": Case([True, None, False], "boolean", pa.bool_(), "boolean"),
    "str": Case(["a", None, "ü €"], None, pa.large_string(), "str"),
    "str_empty": Case(["", "b", None], "str", pa.large_string(), "str"),
    "string": Case(["a", None, "c"], "string", pa.large_string(), "str"),
    "category": Case(
        ["x", None, "y"], "category", pa.dictionary(pa.int32(), pa.large_string()), "category"
    ),
    "binary": Case([b"\x00\xff", None, b""], "object", pa.binary(), "object"),
    "date": Case([dt.date(2020, 1, 1), None, dt.date(1, 1, 1)], "object", pa.date32(), "object"),
    "datetime": Case(
        pd.to_datetime([*TS, None], format="ISO8601"), None, pa.timestamp("us"), "datetime64[ns]"
    ),
    "datetime_ns_input": Case(
        pd.to_datetime([*TS, None], format="ISO8601").as_unit("ns"),
        None,
        pa.timestamp("us"),
        "datetime64[ns]",
    ),
    "datetime_tz": Case(
        pd.to_datetime([*TS, None], format="ISO8601").tz_localize(BERLIN),
        None,
        pa.timestamp("us", tz=BERLIN),
        f"datetime64[ns, {BERLIN}]",
    ),
    "datetime_utc": Case(
        pd.to_datetime([*TS, None], format="ISO8601").tz_localize("UTC"),
        None,
        pa.timestamp("us", tz="UTC"),
        "datetime64[ns, UTC]",
    ),
    "decimal": Case(
        [decimal.Decimal("1.10"), None, decimal.Decimal("-2.25")],
        "object",
        pa.decimal128(3, 2),
        "object",
    ),
    "list_int": Case([[1, 2], None, []], "object", pa.list_(pa.int64()), "object"),
    "list_str": Case([["a", None], None, []], "object", pa.list_(pa.string()), "object"),
}


def frame(name: str) -> pd.DataFrame:
    case = CASES[name]
    values = pd.Series(case.values, dtype=case.dtype)
    return pd.DataFrame({"col": values, "row": np.arange(len(values), dtype="int64")})


def plain(value: Any) -> Any:
    """A comparable Python value: numpy scalars/arrays, NaN, NA and NaT made plain."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, pd.Timestamp):
        return value.as_unit("ns")
    if isinstance(value, dt.datetime):
        return pd.Timestamp(value).as_unit("ns")
    return value


def values_of(series: pd.Series) -> list[Any]:
    return [plain(v) for v in series.astype(object).tolist()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_through_write_dataset_and_ka_dataset(root, name):
    df = frame(name)
    ka.write_dataset(df, root, "types")
    ds = ka.dataset(root, "types")
    assert ds.schema.field("col").type == CASES[name].arrow
    got = ds.to_table().sort_by("row")
    assert got.column("col").type == CASES[name].arrow
    assert [plain(v) for v in got.column("col").to_pylist()] == values_of(df["col"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_through_eager(root, name):
    df = frame(name)
    eager.store_dataframes_as_dataset(root, "types", [df])
    got = eager.read_table("types", root).sort_values("row").reset_index(drop=True)
    assert str(got["col"].dtype) == str(CASES[name].eager)
    assert values_of(got["col"]) == values_of(df["col"])


@pytest.mark.parametrize("name", ["Int64", "boolean", "category", "datetime_tz", "list_int"])
def test_round_trip_of_partition_sized_frames_via_read_dataset_as_dataframes(root, name):
    df = pd.concat([frame(name)] * 2, ignore_index=True)
    df["row"] = np.arange(len(df))
    eager.store_dataframes_as_dataset(root, "types", [df.iloc[:3], df.iloc[3:]])
    frames = eager.read_dataset_as_dataframes("types", root)
    assert len(frames) == 2
    for part in frames:
        assert str(part["col"].dtype) == str(CASES[name].eager)
    got = pd.concat(frames).sort_values("row", kind="stable").reset_index(drop=True)
    assert values_of(got["col"]) == values_of(df["col"])


@pytest.mark.parametrize(
    ("arrow_type", "stored"),
    [
        (pa.int8(), pa.int64()),
        (pa.int16(), pa.int64()),
        (pa.int32(), pa.int64()),
        (pa.uint8(), pa.uint64()),
        (pa.uint32(), pa.uint64()),
        (pa.float16(), pa.float64()),
        (pa.float32(), pa.float64()),
        (pa.string(), pa.string()),
        (pa.large_string(), pa.large_string()),
        (pa.timestamp("s"), pa.timestamp("us")),
        (pa.timestamp("ms", tz="UTC"), pa.timestamp("us", tz="UTC")),
        (pa.timestamp("ns"), pa.timestamp("us")),
        (pa.date64(), pa.date64()),
        (pa.large_list(pa.int8()), pa.list_(pa.int64())),
        (pa.dictionary(pa.int8(), pa.string()), pa.dictionary(pa.int32(), pa.string())),
    ],
)
def test_arrow_input_types_are_normalised_like_kartothek(root, arrow_type, stored):
    if pa.types.is_floating(arrow_type) and arrow_type.bit_width == 16:
        values = pa.array(np.array([1.5, 0, 2], np.float16), mask=np.array([0, 1, 0], bool))
    elif pa.types.is_large_list(arrow_type):
        values = pa.array([[1], None, [2, 3]], type=arrow_type)
    elif pa.types.is_dictionary(arrow_type):
        values = pa.array(["a", None, "a"], type=pa.string()).dictionary_encode()
        values = values.cast(arrow_type)
    elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        values = pa.array(["a", None, "b"], type=arrow_type)
    elif pa.types.is_date(arrow_type):
        values = pa.array([dt.date(2020, 1, 1), None, dt.date(1970, 1, 1)], type=arrow_type)
    elif pa.types.is_timestamp(arrow_type):
        values = pa.array([10**6, None, 2 * 10**6], type=pa.int64()).cast(arrow_type)
    else:
        values = pa.array([1, None, 2], type=pa.int64()).cast(arrow_type)
    table = pa.table({"col": values, "row": [0, 1, 2]})
    ka.write_dataset(table, root, "types")
    got = ka.dataset(root, "types").to_table().sort_by("row")
    assert got.schema.field("col").type == stored
    assert got.column("col").to_pylist() == values.cast(stored).to_pylist()


def test_all_null_column_is_stored_as_null_type(root):
    ka.write_dataset(pd.DataFrame({"col": [None, None], "row": [0, 1]}), root, "nulls")
    assert ka.dataset(root, "nulls").schema.field("col").type == pa.null()
    assert eager.read_table("nulls", root)["col"].isna().all()
    # plateau refines a null column on the first append with values; we refuse
    # (documented in docs/compatibility.md: pass schema= when creating instead)
    later = pd.DataFrame({"col": [1, 2], "row": [2, 3]})
    with pytest.raises(ka.SchemaMismatchError, match=r"'col': dataset has null"):
        ka.write_dataset(later, root, "nulls", mode="append")
    schema = pa.schema([("col", pa.int64()), ("row", pa.int64())])
    ka.write_dataset(
        pd.DataFrame({"col": [None, None], "row": [0, 1]}), root, "typed", schema=schema
    )
    ka.write_dataset(later, root, "typed", mode="append")
    got = eager.read_table("typed", root).sort_values("row")
    assert got["col"].dtype == "Int64" and got["col"].tolist()[2:] == [1, 2]


# -- timestamps: microseconds on disk, everywhere --------------------------------------


def parquet_files(root: str) -> list[str]:
    return sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith(".parquet") or f == keys.COMMON_METADATA
    )


def timestamp_units(path: str) -> dict[str, str]:
    """Column path -> the parquet logical timestamp unit, read from the footer."""
    schema = pq.read_metadata(path).schema
    out = {}
    for i in range(len(schema)):
        column = schema.column(i)
        logical = column.logical_type
        if logical.type == "TIMESTAMP":
            out[column.path] = logical.to_json()
    return out


def test_timestamps_are_microseconds_in_data_files_index_files_and_common_metadata(root):
    df = pd.DataFrame(
        {
            "naive": pd.to_datetime(TS, format="ISO8601").as_unit("ns"),
            "aware": pd.to_datetime(TS, format="ISO8601").as_unit("ns").tz_localize("UTC"),
            "nested": [[pd.Timestamp("2020-01-01").as_unit("ns")], [], None],
            "part": ["a", "b", "a"],
            "row": [0, 1, 2],
        }
    )
    ka.write_dataset(df, root, "ts", partition_on=["part"], secondary_indices=["naive"])
    ka.write_dataset(df, root, "ts", mode="append")
    files = parquet_files(root)
    assert any(f.endswith(keys.COMMON_METADATA) for f in files)
    assert any(keys.INDEX_SUFFIX in f for f in files)
    seen = 0
    for path in files:
        for column, logical in timestamp_units(path).items():
            assert '"timeUnit":"microseconds"' in logical.replace(" ", ""), (path, column, logical)
            seen += 1
    assert seen >= 4 * 3 + 1 + 1  # 4 data files x 3 columns, _common_metadata, index
    common = pq.read_schema(os.path.join(root, "ts", "table", keys.COMMON_METADATA))
    assert common.field("naive").type == pa.timestamp("us")
    assert common.field("aware").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(pd.to_datetime(["2020-01-01 00:00:00.000000001"])),
        pd.Series(pd.to_datetime(["2020-01-01 00:00:00.000001999"])).dt.tz_localize(BERLIN),
        pa.array([[1_500]], pa.list_(pa.timestamp("ns"))),
        pa.array([1], pa.timestamp("ns")).dictionary_encode(),
    ],
    ids=["naive", "aware", "list", "dictionary"],
)
def test_sub_microsecond_timestamps_raise_and_write_nothing(root, column):
    # nested values as Arrow: pyarrow itself truncates pd.Timestamps inside lists to us
    df = pa.table({"t": column, "row": range(len(column))})
    with pytest.raises(ka.InvalidArgumentError, match=r"'t'.*sub-microsecond.*timestamp_unit='ns'"):
        ka.write_dataset(df, root, "ts")
    assert not os.path.exists(root) or parquet_files(root) == []
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(root, "ts")


def test_sub_microsecond_timestamps_raise_on_append_and_leave_the_dataset_alone(root):
    good = pd.DataFrame({"t": pd.to_datetime(["2020-01-01"]).as_unit("ns"), "row": [0]})
    ka.write_dataset(good, root, "ts")
    before = all_files(root)
    bad = pd.DataFrame({"t": pd.to_datetime(["2020-01-01 00:00:00.000000001"]), "row": [1]})
    with pytest.raises(ka.InvalidArgumentError, match="sub-microsecond"):
        ka.write_dataset([good, bad], root, "ts", mode="append")
    assert all_files(root) == before
    assert ka.dataset(root, "ts").version == 0


def test_timestamp_unit_ns_keeps_nanoseconds_and_appends_stay_ns(root):
    stamps = pd.to_datetime(["2020-01-01 00:00:00.000000001", "2020-01-01 00:00:00.000001999"])
    df = pd.DataFrame({"t": stamps, "row": [0, 1]})
    ka.write_dataset(df, root, "ns", timestamp_unit="ns", secondary_indices=["t"])
    ka.write_dataset(df.assign(row=[2, 3]), root, "ns", mode="append")  # default unit
    got = ka.dataset(root, "ns").to_table().sort_by("row")
    assert got.schema.field("t").type == pa.timestamp("ns")
    assert got.column("t").cast(pa.int64()).to_pylist() == list(stamps.asi8) * 2
    for path in parquet_files(root):
        for logical in timestamp_units(path).values():
            assert "nanoseconds" in logical, path
    hits = eager.read_table("ns", root, predicates=[[("t", "==", stamps[0])]])
    assert sorted(hits["row"]) == [0, 2]


# -- schema enforcement ----------------------------------------------------------------


def all_files(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


BASE = pd.DataFrame(
    {
        "part": ["a", "b"],
        "x": np.array([1, 2], dtype="int64"),
        "s": ["u", "v"],
        "t": pd.to_datetime(["2020-01-01", "2020-01-02"]),
    }
)


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        (BASE.drop(columns=["s"]), ["missing", "'s'"]),
        (BASE.assign(extra=[1, 2]), ["unexpected", "'extra'"]),
        (BASE.drop(columns=["s", "x"]).assign(y=1), ["'s'", "'x'", "'y'"]),
        (BASE.assign(x=["1", "2"]), ["'x'", "int64"]),
        (BASE.assign(x=[1.5, 2.0]), ["'x'", "int64", "double"]),
        (BASE.assign(s=[1, 2]), ["'s'"]),
        (BASE.assign(t=BASE["t"].dt.tz_localize("UTC")), ["'t'", "timestamp"]),
        (BASE.assign(part=[1, 2]), ["'part'"]),
    ],
    ids=["missing", "extra", "missing+extra", "str-for-int", "float-for-int", "int-for-str",
         "tz-for-naive", "int-for-partition"],
)  # fmt: skip
@pytest.mark.parametrize("api", ["ka", "eager"])
def test_append_with_another_schema_raises_naming_columns_and_writes_nothing(root, bad, names, api):
    ka.write_dataset(BASE, root, "strict", partition_on=["part"], secondary_indices=["x"])
    before = all_files(root)
    with pytest.raises(ka.SchemaMismatchError) as info:
        if api == "ka":
            # a good table first: its files are written, then removed again
            ka.write_dataset([BASE, bad], root, "strict", mode="append")
        else:
            eager.update_dataset_from_dataframes([BASE, bad], root, "strict")
    for name in names:
        assert name in str(info.value)
    assert all_files(root) == before
    assert ka.dataset(root, "strict").version == 0
    assert len(ka.history(root, "strict")) == 1


@pytest.mark.parametrize(
    "ok",
    [
        BASE.assign(x=BASE["x"].astype("int8")),
        BASE.assign(x=pd.array([1, None], dtype="Int32")),
        BASE.assign(s=pd.Categorical(["u", "w"])),
        BASE.assign(s=pd.array(["u", None], dtype="string")),
        BASE.assign(s=[None, None]),
        BASE.assign(t=BASE["t"].dt.as_unit("s")),
        BASE[["t", "s", "x", "part"]],
    ],
    ids=["int8", "Int32-null", "category", "string", "all-null", "seconds", "reordered"],
)
def test_append_with_compatible_types_is_accepted_and_normalised(root, ok):
    ka.write_dataset(BASE, root, "strict", partition_on=["part"])
    ka.write_dataset(ok, root, "strict", mode="append")
    ds = ka.dataset(root, "strict")
    assert ds.count_rows() == 4
    assert ds.to_table().schema.field("x").type == pa.int64()
    assert ds.to_table().schema.field("t").type == pa.timestamp("us")
