"""A real Spark reads what we write: the portability promise of DESIGN §2.

One local Spark session for the module (local[1], no UI, session time zone
UTC).  Timestamps are compared as microseconds since the epoch, computed by
Spark itself, so no Python time zone conversion can hide a shift.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import shutil

import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow.spec import keys

pyspark = pytest.importorskip("pyspark")


def _java_home() -> str | None:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


@pytest.fixture(scope="module")
def spark():
    home = _java_home()
    if home is None:
        pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)")
    os.environ["JAVA_HOME"] = home
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("ktk-arrow-compat")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "true")
        # tiny data: compiling generated code costs more than it saves
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "store")


def table_dir(root: str, uuid: str) -> str:
    return os.path.join(root, uuid, keys.TABLE)


def micros(value) -> int | None:
    if value is None or value is pd.NaT:
        return None
    return int(pd.Timestamp(value).value) // 1000  # .value is always nanoseconds


WRITTEN = pd.DataFrame(
    {
        "region": ["US/CA", "a b", "US/CA", "x=1%", "a b"],
        "shard": [-1, 2, 2, 0, -1],
        "row": [0, 1, 2, 3, 4],
        "at": pd.to_datetime(
            [
                "2020-01-01 00:00:00.000001",
                "2021-06-01 12:00:00.5",
                "1999-12-31 23:59:59",
                "1900-01-01",
                None,
            ],
            format="ISO8601",
        ),
        "at_tz": pd.to_datetime(
            ["2020-01-01 01:00", "2021-06-01 12:00", None, "2020-07-01", "2020-01-01"],
            format="ISO8601",
        ).tz_localize("Europe/Berlin"),
        "day": [dt.date(2020, 1, 1), dt.date(1970, 1, 1), None, dt.date(2000, 2, 29), None],
        "price": [decimal.Decimal("1.10"), None, decimal.Decimal("-2.25"), None, None],
        "kind": pd.Categorical(["x", "y", None, "x", "z"]),
        "amount": [1.5, None, 2.5, 3.5, 4.5],
    }
)


def spark_rows(df, spark_frame_columns) -> list[tuple]:
    return [tuple(r) for r in df.select(*spark_frame_columns).orderBy("row").collect()]


def test_spark_reads_a_partitioned_dataset_with_every_common_type(spark, root):
    from pyspark.sql import functions as F

    ka.write_dataset(WRITTEN, root, "sales", partition_on=["region", "shard"])
    path = table_dir(root, "sales")
    assert os.path.exists(os.path.join(path, keys.COMMON_METADATA))
    df = spark.read.option("basePath", path).parquet(path)
    types = dict(df.dtypes)
    assert types["region"] == "string" and types["shard"] == "int"
    assert types["at"] == "timestamp_ntz" and types["at_tz"] == "timestamp"
    assert types["day"] == "date" and types["price"] == "decimal(3,2)"
    assert types["kind"] == "string" and types["amount"] == "double"
    got = spark_rows(
        df,
        [
            "row",
            "region",
            "shard",
            F.unix_micros(F.col("at").cast("timestamp")),
            F.unix_micros("at_tz"),
            "day",
            "price",
            "kind",
            "amount",
        ],
    )
    want = [
        (
            r.row,
            r.region,
            r.shard,
            micros(r.at),
            micros(r.at_tz),
            r.day,
            r.price,
            None if pd.isna(r.kind) else r.kind,
            None if pd.isna(r.amount) else r.amount,
        )
        for r in WRITTEN.itertuples()
    ]
    assert got == want


def test_spark_reads_appended_files_and_merge_schema(spark, root):
    ka.write_dataset(WRITTEN, root, "sales", partition_on=["region", "shard"])
    ka.write_dataset(WRITTEN.assign(row=WRITTEN.row + 10), root, "sales", mode="append")
    path = table_dir(root, "sales")
    for reader in (
        spark.read.option("basePath", path),
        spark.read.option("basePath", path).option("mergeSchema", "true"),
    ):
        df = reader.parquet(path)
        assert df.count() == 2 * len(WRITTEN)
        assert df.filter("region = 'US/CA' and shard = 2").count() == 2


def test_spark_reads_the_same_rows_as_ka_dataset(spark, root):
    ka.write_dataset(WRITTEN, root, "sales", partition_on=["region", "shard"])
    path = table_dir(root, "sales")
    ours = ka.dataset(root, "sales").to_table(columns=["row", "region", "shard", "amount"])
    ours = sorted(zip(*(ours.column(c).to_pylist() for c in ours.column_names), strict=True))
    theirs = spark_rows(
        spark.read.option("basePath", path).parquet(path), ["row", "region", "shard", "amount"]
    )
    assert [tuple(r) for r in ours] == theirs


def test_spark_reads_non_ascii_partition_values_as_latin1_mojibake(spark, root):
    """Documented limitation: Spark unescapes %XX byte by byte as Latin-1."""
    values = ["ü", "東京", "plain"]
    ka.write_dataset(
        pd.DataFrame({"city": values, "row": [0, 1, 2]}), root, "cities", partition_on=["city"]
    )
    path = table_dir(root, "cities")
    got = [
        r.city for r in spark.read.option("basePath", path).parquet(path).orderBy("row").collect()
    ]
    assert got == [v.encode("utf-8").decode("latin-1") for v in values]
    assert got[0] == "Ã¼" and got[2] == "plain"
    # the raw bytes survive: the value can be repaired in Spark or afterwards
    assert [g.encode("latin-1").decode("utf-8") for g in got] == values


def test_spark_infers_bool_and_timestamp_partitions_as_strings_unless_given_a_schema(spark, root):
    df = pd.DataFrame(
        {
            "flag": [True, False, None],
            "at": pd.to_datetime(
                ["2020-01-01 00:00:00.000001", "2021-06-01 12:00:00.5", None], format="ISO8601"
            ),
            "day": [dt.date(2020, 1, 1), None, dt.date(2020, 1, 3)],
            "row": [0, 1, 2],
        }
    )
    ka.write_dataset(df, root, "parts", partition_on=["flag", "at", "day"])
    path = table_dir(root, "parts")
    inferred = spark.read.option("basePath", path).parquet(path)
    types = dict(inferred.dtypes)
    assert types["flag"] == "string" and types["at"] == "string" and types["day"] == "date"
    rows = inferred.orderBy("row").collect()
    assert [r.flag for r in rows] == ["True", "False", None]  # null marker -> null
    assert [r.day for r in rows] == [dt.date(2020, 1, 1), None, dt.date(2020, 1, 3)]
    typed = (
        spark.read.schema("row long, flag boolean, at timestamp_ntz, day date")
        .option("basePath", path)
        .parquet(path)
    )
    rows = typed.orderBy("row").collect()
    assert [r.flag for r in rows] == [True, False, None]
    assert [r.at for r in rows] == [
        dt.datetime(2020, 1, 1, 0, 0, 0, 1),
        dt.datetime(2021, 6, 1, 12, 0, 0, 500000),
        None,
    ]


def test_spark_reads_tz_aware_partitions_written_in_utc(spark, root):
    from pyspark.sql import functions as F

    stamps = pd.to_datetime(["2020-01-01 10:00", "2020-07-01 10:00"]).tz_localize("Europe/Berlin")
    ka.write_dataset(pd.DataFrame({"at": stamps, "row": [0, 1]}), root, "tz", partition_on=["at"])
    path = table_dir(root, "tz")
    df = spark.read.schema("row long, at timestamp").option("basePath", path).parquet(path)
    got = [r[0] for r in df.orderBy("row").select(F.unix_micros("at")).collect()]
    assert got == [micros(s) for s in stamps]


def test_spark_refuses_nanosecond_timestamps_so_they_are_opt_in(spark, root):
    """Why timestamp_unit='us' is the default: Spark cannot read TIMESTAMP(NANOS)."""
    df = pa.table(
        {"at": pa.array([1, 2_000], pa.timestamp("ns")), "row": pa.array([0, 1], pa.int64())}
    )
    ka.write_dataset(df, root, "nanos", timestamp_unit="ns")
    path = table_dir(root, "nanos")
    with pytest.raises(Exception, match=r"(?i)nanos|Illegal Parquet type"):
        spark.read.parquet(path).collect()


def test_spark_reads_quoted_punctuation_but_refuses_an_empty_string_partition(spark, root):
    """Documented limitation: Spark refuses ``col=`` (we keep "" as "", like plateau)."""
    values = [" x ", "a+b", "%41", "q?#&"]
    ka.write_dataset(
        pd.DataFrame({"s": values, "row": range(4)}), root, "punct", partition_on=["s"]
    )
    path = table_dir(root, "punct")
    got = [r.s for r in spark.read.option("basePath", path).parquet(path).orderBy("row").collect()]
    assert got == values
    ka.write_dataset(pd.DataFrame({"s": [""], "row": [9]}), root, "punct", mode="append")
    with pytest.raises(Exception, match="EMPTY_PARTITION_COLUMN_VALUE"):
        spark.read.option("basePath", path).parquet(path).collect()
