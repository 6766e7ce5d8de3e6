"""Hostile or damaged storage: a ``KtkError`` naming the key, never a raw error or a wrong answer.

Each damage is done by hand to a small dataset (``p`` partitions, index on
``s``), then read through every entry point of the dataset.  What is detected
where (read path or ``ktk check`` only) is tabled in docs/errors.md.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ktk_arrow as ka
from ktk_arrow import arrow, commit
from ktk_arrow.io import eager
from ktk_arrow.spec import keys
from ktk_arrow.storage import LocalStore, Store

UUID = "ds"


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "p": ["a", "a", "b", "b", "c"],
            "x": [1, 2, 3, 4, 5],
            "s": ["u", "v", "w", "u", "z"],
        }
    )


def build(store: Store) -> Store:
    ka.write_dataset(frame(), store, UUID, partition_on=["p"], secondary_indices=["s"])
    return store


@pytest.fixture
def store(tmp_path) -> Store:
    return build(LocalStore(str(tmp_path / "store")))


def data_key(store: Store, partition: str = "a") -> str:
    meta = commit.load(store, UUID)
    return next(e.key for e in meta.files.values() if e.label.startswith(f"p={partition}/"))


def index_key(store: Store) -> str:
    ref = commit.load(store, UUID).indices["s"]
    assert isinstance(ref, str)
    return ref


def rewrite_metadata(store: Store, change) -> None:
    """Apply ``change`` to the JSON of the view and of its log entry (they stay equal)."""
    meta = commit.load(store, UUID)
    for key in (keys.metadata_key(UUID), keys.log_key(UUID, meta.version)):
        data = json.loads(store.get(key))
        change(data)
        store.put(key, json.dumps(data).encode())


READERS = {
    "to_table": lambda d: d.to_table(),
    "to_table(columns)": lambda d: d.to_table(columns=["x"]),
    "to_table(filter on index)": lambda d: d.to_table(filter=[[("s", "==", "u")]]),
    "to_table(expression)": lambda d: d.to_table(filter=pc.field("x") > 0),
    "to_batches": lambda d: list(d.to_batches()),
    "to_reader": lambda d: d.to_reader().read_all(),
    # x > 1 is undecided by the row group statistics of p=a: its pages are read
    "count_rows(filter)": lambda d: d.count_rows(filter=pc.field("x") > 1),
    "head": lambda d: d.head(10),
    "take": lambda d: d.take([0, 1, 2, 3, 4]),
    "filter().to_table": lambda d: d.filter(pc.field("x") >= 1).to_table(),
    "eager.read_table": lambda d: eager.read_table(UUID, d.store),
}


def damage_missing(store: Store, key: str) -> None:
    store.delete(key)


def damage_zero(store: Store, key: str) -> None:
    store.put(key, b"")


def damage_truncate(store: Store, key: str) -> None:
    store.put(key, store.get(key)[:-100])


def damage_garbage(store: Store, key: str) -> None:
    store.put(key, b"\x07" * 300)


def damage_garbage_same_size(store: Store, key: str) -> None:
    store.put(key, b"\x07" * len(store.get(key)))


def damage_corrupt_page(store: Store, key: str) -> None:
    """Same size, footer intact, a data page overwritten: Arrow says OSError, no path."""
    raw = bytearray(store.get(key))
    raw[4:20] = b"\xff" * 16
    store.put(key, bytes(raw))


FILE_DAMAGE = {
    "missing": (damage_missing, ka.StoreError, "is missing from"),
    "zero bytes": (damage_zero, ka.CorruptMetadataError, "is 0 bytes, but the metadata records"),
    "truncated": (damage_truncate, ka.CorruptMetadataError, "bytes, but the metadata records"),
    "garbage": (damage_garbage, ka.CorruptMetadataError, "is 300 bytes, but the metadata"),
    "garbage, same size": (
        damage_garbage_same_size,
        ka.CorruptMetadataError,
        "is not a readable parquet file",
    ),
    "corrupt page": (damage_corrupt_page, ka.CorruptMetadataError, "is not a readable parquet"),
}


def assert_names(exc: BaseException, store: Store, key: str) -> None:
    message = str(exc)
    assert repr(key) in message
    assert f"ktk check {store.url} {UUID}" in message
    # the backend's error is kept, never shown raw
    assert exc.__cause__ is not None


@pytest.mark.parametrize("damage", list(FILE_DAMAGE))
@pytest.mark.parametrize("reader", list(READERS))
def test_damaged_data_file_raises_naming_the_key(store, damage, reader):
    key = data_key(store)
    do, error, fragment = FILE_DAMAGE[damage]
    do(store, key)
    with pytest.raises(ka.KtkError) as info:
        READERS[reader](ka.dataset(store, UUID))
    assert type(info.value) is error
    assert fragment in str(info.value)
    assert_names(info.value, store, key)


@pytest.mark.parametrize("damage", list(FILE_DAMAGE))
def test_damage_outside_the_filter_is_not_read(store, damage):
    """Pruning still works: a read that never touches the damaged file succeeds."""
    FILE_DAMAGE[damage][0](store, data_key(store, "a"))
    table = ka.dataset(store, UUID).to_table(filter=[[("p", "==", "b")]])
    assert sorted(table.column("x").to_pylist()) == [3, 4]
    assert ka.dataset(store, UUID, filter=[[("s", "==", "w")]]).to_table().num_rows == 1


def test_missing_file_of_an_old_version_names_it(store):
    old = data_key(store)
    ka.write_dataset(frame(), store, UUID, mode="overwrite")
    store.delete(old)
    assert ka.dataset(store, UUID).count_rows() == 5  # the latest does not need it
    with pytest.raises(ka.StoreError, match="version 0") as info:
        ka.dataset(store, UUID, version=0).to_table()
    assert_names(info.value, store, old)


def test_a_file_from_another_partition_copied_over_is_caught_by_the_row_count(store):
    """Another valid parquet file in its place: a full read notices the row count."""
    target, source = data_key(store, "a"), data_key(store, "c")
    store.put(target, store.get(source))
    with pytest.raises(ka.CorruptMetadataError, match="read 4 rows, but its metadata records 5"):
        ka.dataset(store, UUID).to_table()
    with pytest.raises(ka.CorruptMetadataError) as info:
        ka.dataset(store, UUID).to_table(columns=["x"])
    assert f"{target!r} holds 1 rows, the metadata records 2" in str(info.value)


def test_wrong_row_count_in_metadata(store):
    """count_rows() answers from the metadata (documented); a full read raises."""
    key = data_key(store)
    label = next(lbl for lbl in commit.load(store, UUID).files if lbl.startswith("p=a/"))

    def inflate(data):
        data["ktk_arrow"]["files"][label][1] = 7

    rewrite_metadata(store, inflate)
    ds = ka.dataset(store, UUID)
    assert ds.count_rows() == 10  # no file is read: not detectable here, ktk check --deep is
    assert ds.count_rows(filter=pc.field("x") > 0) == 5  # a scan counts the real rows
    with pytest.raises(ka.CorruptMetadataError) as info:
        ds.to_table()
    assert f"{key!r} holds 2 rows, the metadata records 7" in str(info.value)
    assert f"ktk check {store.url} {UUID}" in str(info.value)


def test_negative_row_count_in_metadata_is_corrupt(store):
    label = next(iter(commit.load(store, UUID).files))

    def negative(data):
        data["ktk_arrow"]["files"][label][1] = -2

    rewrite_metadata(store, negative)
    with pytest.raises(ka.CorruptMetadataError, match=f"{label!r} has byte size .* row count -2"):
        ka.dataset(store, UUID)


def test_wrong_size_in_metadata_reads_the_file_on_local_disk(store):
    """Local reads learn the size from the file itself; ktk check reports the mismatch."""
    label = next(iter(commit.load(store, UUID).files))

    def grow(data):
        data["ktk_arrow"]["files"][label][0] += 50

    rewrite_metadata(store, grow)
    assert ka.dataset(store, UUID).to_table().num_rows == 5


@pytest.mark.parametrize("delta", [-50, 50])
def test_wrong_size_in_metadata_raises_on_s3(s3_store, delta):
    """Object stores get the size from the metadata: the footer is not where Arrow looks."""
    build(s3_store)
    meta = commit.load(s3_store, UUID)
    label, entry = next(iter(meta.files.items()))

    def change(data):
        data["ktk_arrow"]["files"][label][0] += delta

    rewrite_metadata(s3_store, change)
    with pytest.raises(ka.CorruptMetadataError) as info:
        ka.dataset(s3_store, UUID).to_table()
    assert f"is {entry.size} bytes, but the metadata records {entry.size + delta}" in str(
        info.value
    )
    assert_names(info.value, s3_store, entry.key)


# Not "truncated": pyarrow's S3 reads past the end of an object shorter than the
# recorded size can come back filled with stale bytes of an earlier read (seen
# with pyarrow 26 and moto); the first read raises, later ones may not.
@pytest.mark.parametrize("damage", ["missing", "zero bytes", "garbage, same size", "corrupt page"])
def test_damaged_data_file_on_s3(s3_store, damage):
    build(s3_store)
    key = data_key(s3_store)
    do, error, fragment = FILE_DAMAGE[damage]
    do(s3_store, key)
    for reader in ("to_table", "to_batches", "head", "eager.read_table"):
        with pytest.raises(ka.KtkError) as info:
            READERS[reader](ka.dataset(s3_store, UUID))
        assert type(info.value) is error, reader
        assert fragment in str(info.value)
        assert_names(info.value, s3_store, key)


def test_missing_and_garbage_files_on_every_store(any_store):
    build(any_store)
    missing, garbage = data_key(any_store, "a"), data_key(any_store, "b")
    any_store.delete(missing)
    with pytest.raises(ka.StoreError) as info:
        ka.dataset(any_store, UUID).to_table()
    assert_names(info.value, any_store, missing)
    damage_garbage_same_size(any_store, garbage)
    with pytest.raises(ka.CorruptMetadataError, match="not a readable parquet") as info:
        ka.dataset(any_store, UUID).to_table(filter=[[("p", "==", "b")]])
    assert_names(info.value, any_store, garbage)


def test_store_failing_while_reading_is_a_store_error(faulty_s3_url_and_options):
    """A data file the store refuses to serve is a StoreError, not reported as damage."""
    url, options, proxy = faulty_s3_url_and_options
    store = build(ka.storage.resolve_store(url, options))
    ds = ka.dataset(store, UUID)
    proxy.add_fault("GET", r"/table/p%3Da/|/table/p=a/", "error_before", times=-1, status=503)
    with pytest.raises(ka.StoreError) as info:
        ds.to_table()
    assert not isinstance(info.value, ka.CorruptMetadataError)
    assert UUID in str(info.value)
    proxy.clear()
    assert ds.to_table().num_rows == 5


# -- index files --------------------------------------------------------------


@pytest.mark.parametrize(
    "damage,error,fragment",
    [
        (damage_missing, ka.StoreError, "is missing from"),
        (damage_garbage, ka.CorruptMetadataError, "is damaged"),
        (damage_zero, ka.CorruptMetadataError, "is damaged"),
    ],
)
def test_damaged_index_file_raises_when_planning_needs_it(store, damage, error, fragment):
    key = index_key(store)
    damage(store, key)
    assert ka.dataset(store, UUID).to_table().num_rows == 5  # no filter: the index is not read
    for read in (
        lambda: ka.dataset(store, UUID, filter=[[("s", "==", "u")]]),
        lambda: ka.dataset(store, UUID).to_table(filter=pc.field("s") == "u"),
        lambda: eager.read_table(UUID, store, predicates=[[("s", "in", ["u", "v"])]]),
    ):
        with pytest.raises(ka.KtkError) as info:
            read()
        assert type(info.value) is error
        assert fragment in str(info.value) and "column 's'" in str(info.value)
        assert repr(key) in str(info.value)
        assert f"ktk check {store.url} {UUID}" in str(info.value)


def test_index_of_another_type_is_corrupt(store):
    """An index file whose values do not cast to the column type."""
    from ktk_arrow.spec import index as spec_index

    key = index_key(store)
    store.put(key, spec_index.to_parquet("s", pa.string(), {"not-a-number": ["p=a/x"]}))
    rewrite_metadata(store, lambda d: None)  # unchanged metadata, schema says string

    def as_int(data):
        data["ktk_arrow"]["schema"] = _schema_b64(
            pa.schema([("p", pa.string()), ("x", pa.int64()), ("s", pa.int64())])
        )

    rewrite_metadata(store, as_int)
    with pytest.raises(ka.CorruptMetadataError, match="is damaged") as info:
        ka.dataset(store, UUID, filter=[[("s", "==", 1)]])
    assert repr(key) in str(info.value)


def _schema_b64(schema: pa.Schema) -> str:
    import base64

    return base64.b64encode(schema.serialize().to_pybytes()).decode()


# -- hostile metadata ---------------------------------------------------------


def test_duplicate_file_reference_in_the_view(store):
    meta = commit.load(store, UUID)
    (first, entry), (second, _) = sorted(meta.files.items())[:2]

    def duplicate(data):
        data["partitions"][second]["files"]["table"] = entry.key

    rewrite_metadata(store, duplicate)
    with pytest.raises(ka.CorruptMetadataError) as info:
        ka.dataset(store, UUID)
    message = str(info.value)
    assert repr(entry.key) in message and "twice" in message
    assert repr(first) in message and repr(second) in message
    assert keys.metadata_key(UUID) in message


def test_data_file_listed_as_index(store):
    key = data_key(store)
    rewrite_metadata(store, lambda data: data["indices"].update({"s": key}))
    with pytest.raises(ka.CorruptMetadataError, match="twice") as info:
        ka.dataset(store, UUID)
    assert repr(key) in str(info.value)


def test_view_copied_from_another_dataset(tmp_path):
    store = LocalStore(str(tmp_path / "store"))
    build(store)
    ka.write_dataset(frame(), store, "other")
    store.put(keys.metadata_key(UUID), store.get(keys.metadata_key("other")))
    with pytest.raises(ka.CorruptMetadataError) as info:
        ka.dataset(store, UUID)
    assert keys.metadata_key(UUID) in str(info.value)


def test_partition_label_that_contradicts_the_partition_keys(store):
    meta = commit.load(store, UUID)
    label = next(iter(meta.files))

    def rename(data):
        part = data["partitions"].pop(label)
        data["partitions"]["q=zz/" + label.split("/")[-1]] = part
        data["ktk_arrow"]["files"]["q=zz/" + label.split("/")[-1]] = data["ktk_arrow"]["files"].pop(
            label
        )

    rewrite_metadata(store, rename)
    with pytest.raises(ka.CorruptMetadataError, match="partition keys are \\['p'\\]"):
        ka.dataset(store, UUID).to_table()


# -- what is not ours to translate ------------------------------------------------


def test_arrow_scanner_of_a_damaged_dataset_raises_arrows_error(store):
    """``ds.scanner()`` hands out Arrow's own scanner; scanning it is Arrow's (documented)."""
    damage_garbage(store, data_key(store))
    scanner = ka.dataset(store, UUID).scanner()
    with pytest.raises(pa.ArrowInvalid):
        scanner.to_table()


def test_duckdb_raises_its_own_error_naming_the_file(store):
    key = data_key(store)
    damage_garbage(store, key)
    con = duckdb.connect()
    con.register("ds", ka.dataset(store, UUID))
    with pytest.raises(duckdb.Error, match=key.replace("=", ".")):
        con.sql("select sum(x) from ds").fetchall()


def test_polars_goes_through_to_table_and_gets_our_error(store):
    key = data_key(store)
    damage_garbage(store, key)
    lazy = pl.scan_pyarrow_dataset(ka.dataset(store, UUID))
    with pytest.raises(ka.CorruptMetadataError) as info:
        lazy.select(pl.col("x").sum()).collect()
    assert_names(info.value, store, key)


def test_read_planned_translates(store):
    """``arrow.read_planned``: the no-replanning read for callers that planned already."""
    key = data_key(store)
    damage_truncate(store, key)
    ds = ka.dataset(store, UUID)
    with pytest.raises(ka.CorruptMetadataError) as info:
        arrow.read_planned(ds, columns=["x"], filter=pc.field("x") > 0)
    assert_names(info.value, store, key)


def test_user_errors_pass_through(store):
    ds = ka.dataset(store, UUID)
    with pytest.raises(IndexError):
        ds.take([99])
    with pytest.raises(ka.InvalidArgumentError):
        ds.to_table(filter=[[("nope", "==", 1)]])
