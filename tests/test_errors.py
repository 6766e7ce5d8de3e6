"""Every bad input raises the right KtkError, names the value, and writes nothing.

Each case here is a row of docs/errors.md.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager
from ktk_arrow.storage import LocalStore


def df() -> pd.DataFrame:
    return pd.DataFrame({"country": ["DE", "FR"], "customer": [1, 2], "amount": [1.0, 2.0]})


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(str(tmp_path / "store"))


@pytest.fixture
def existing(store) -> LocalStore:
    ka.write_dataset(df(), store, "sales", partition_on=["country"], secondary_indices=["customer"])
    return store


def snapshot_of(store: LocalStore) -> set[str]:
    return {(i.key, i.size) for i in store.list("")}


WRITE_CASES = [
    # (kwargs, error, message fragment)
    ({"dataset_uuid": "../x"}, ka.InvalidArgumentError, "'../x'"),
    ({"dataset_uuid": "a/b"}, ka.InvalidArgumentError, "'a/b'"),
    ({"dataset_uuid": ""}, ka.InvalidArgumentError, "invalid dataset_uuid"),
    ({"partition_on": ["nope"]}, ka.InvalidArgumentError, "nope"),
    ({"secondary_indices": ["nope"]}, ka.InvalidArgumentError, "nope"),
    ({"partition_on": ["country", "country"]}, ka.InvalidArgumentError, "twice"),
    (
        {"partition_on": ["country"], "secondary_indices": ["country"]},
        ka.InvalidArgumentError,
        "country",
    ),
    ({"partition_on": ["country", "customer", "amount"]}, ka.InvalidArgumentError, "every column"),
    ({"mode": "upsert"}, ka.InvalidArgumentError, "upsert"),
    (
        {"mode": "append", "delete_scope": [{"country": "DE"}]},
        ka.InvalidArgumentError,
        "delete_scope needs mode='overwrite'",
    ),
    ({"row_group_size": 0}, ka.InvalidArgumentError, "row_group_size"),
    ({"max_rows_per_file": -1}, ka.InvalidArgumentError, "max_rows_per_file"),
    ({"timestamp_unit": "ms"}, ka.InvalidArgumentError, "'ms'"),
    ({"data": []}, ka.InvalidArgumentError, "empty"),
    ({"data": None}, ka.InvalidArgumentError, "None"),
    ({"data": {"a": [1]}}, ka.InvalidArgumentError, "dict"),
    ({"data": "text"}, ka.InvalidArgumentError, "str"),
    ({"data": pd.DataFrame([[1, 2]], columns=["a", "a"])}, ka.InvalidArgumentError, "duplicate"),
    ({"data": pa.table({"a": [1]}).rename_columns([""])}, ka.InvalidArgumentError, "non-empty"),
    (
        {"data": pd.DataFrame({"t": pd.to_datetime(["2020-01-01 00:00:00.000000001"]), "x": [1]})},
        ka.InvalidArgumentError,
        "sub-microsecond",
    ),
    (
        {"data": pd.DataFrame({"b": [b"x"], "x": [1]}), "partition_on": ["b"]},
        ka.InvalidArgumentError,
        "cannot partition",
    ),
]


@pytest.mark.parametrize(
    "kwargs,error,fragment", WRITE_CASES, ids=[str(c[0])[:60] for c in WRITE_CASES]
)
def test_bad_write_arguments(store, kwargs, error, fragment):
    args = {"data": df(), "dataset_uuid": "sales"} | kwargs
    data = args.pop("data")
    uuid = args.pop("dataset_uuid")
    with pytest.raises(error) as info:
        ka.write_dataset(data, store, uuid, **args)
    assert fragment in str(info.value)
    assert snapshot_of(store) == set()


def test_create_existing_dataset(existing):
    before = snapshot_of(existing)
    with pytest.raises(ka.DatasetExistsError, match="'sales' already exists"):
        ka.write_dataset(df(), existing, "sales")
    with pytest.raises(ka.DatasetExistsError):
        eager.store_dataframes_as_dataset(existing, "sales", [df()])
    assert snapshot_of(existing) == before


def test_missing_dataset(store):
    with pytest.raises(ka.DatasetNotFoundError, match="'nope' does not exist"):
        ka.dataset(store, "nope")
    with pytest.raises(ka.DatasetNotFoundError):
        eager.read_table("nope", store)
    with pytest.raises(ka.DatasetNotFoundError):
        eager.delete_dataset("nope", store)


@pytest.mark.parametrize(
    "scope,fragment",
    [
        ([{"amount": 1.0}], "amount"),  # not a partition key nor indexed: never "delete all"
        ([{"nope": 1}], "nope"),
        ([{}], "non-empty"),
        ({"country": "DE"}, "list of"),
    ],
)
def test_bad_delete_scope_deletes_nothing(existing, scope, fragment):
    before = snapshot_of(existing)
    with pytest.raises(ka.InvalidArgumentError, match=fragment):
        ka.write_dataset(df(), existing, "sales", mode="overwrite", delete_scope=scope)
    with pytest.raises(ka.InvalidArgumentError, match=fragment):
        eager.update_dataset_from_dataframes(
            [], store=existing, dataset_uuid="sales", delete_scope=scope
        )
    assert snapshot_of(existing) == before
    assert ka.dataset(existing, "sales").count_rows() == 2


@pytest.mark.parametrize(
    "predicates,fragment",
    [
        ([[("nope", "==", 1)]], "nope"),
        ([[("customer", "~=", 1)]], "~="),
        ([[("customer", "==", "1")]], "'1'"),
        ([[("customer", "in", 5)]], "customer"),
        ([[("customer", "==")]], "customer"),
        ([[]], "empty"),
        ([("customer", "==", 1)], "list"),
    ],
)
def test_bad_predicates(existing, predicates, fragment):
    with pytest.raises(ka.InvalidPredicateError) as info:
        eager.read_table("sales", existing, predicates=predicates)
    assert fragment in str(info.value)
    with pytest.raises(ka.InvalidPredicateError):
        ka.dataset(existing, "sales").to_table(filter=predicates)


WRONG_SHAPES = [
    # (predicates, what the message must quote)
    (("customer", "==", 1), "('customer', '==', 1)"),
    ([("customer", "==", 1)], "('customer', '==', 1)"),
    ([("customer", "==")], "('customer', '==')"),
    ([[("customer", "==")]], "('customer', '==')"),
    ([[("customer", "==", 1, 2)]], "('customer', '==', 1, 2)"),
    ([["customer"]], "['customer']"),
    ([[None]], "[None]"),
    (["customer", "==", "x", 1], "['customer', '==', 'x', 1]"),
    ([[("customer", "==", 1)], "x"], "'x'"),
]


@pytest.mark.parametrize(
    "predicates,given", WRONG_SHAPES, ids=[repr(p)[:40] for p, _ in WRONG_SHAPES]
)
def test_predicates_of_the_wrong_shape_are_quoted(existing, predicates, given):
    for read in (
        lambda: eager.read_table("sales", existing, predicates=predicates),
        lambda: ka.dataset(existing, "sales").to_table(filter=predicates),
    ):
        with pytest.raises(ka.InvalidPredicateError) as info:
            read()
        assert given in str(info.value), str(info.value)


@pytest.mark.parametrize("given", ["customer == 1", {"customer": 1}, 42])
def test_filters_that_are_neither_expression_nor_list_are_quoted(existing, given):
    with pytest.raises(ka.InvalidPredicateError) as info:
        ka.dataset(existing, "sales").to_table(filter=given)
    assert repr(given) in str(info.value)


def test_unknown_columns_on_read(existing):
    with pytest.raises(ka.InvalidArgumentError, match="nope"):
        eager.read_table("sales", existing, columns=["nope"])


def test_schema_mismatch_names_columns(existing):
    before = snapshot_of(existing)
    extra = df().assign(extra=1)
    with pytest.raises(ka.SchemaMismatchError, match="extra"):
        ka.write_dataset(extra, existing, "sales", mode="append")
    missing = df().drop(columns=["amount"])
    with pytest.raises(ka.SchemaMismatchError, match="amount"):
        ka.write_dataset(missing, existing, "sales", mode="append")
    assert snapshot_of(existing) == before


def test_partition_on_must_match_existing(existing):
    with pytest.raises(ka.InvalidArgumentError, match="partition keys"):
        ka.write_dataset(df(), existing, "sales", mode="append", partition_on=["customer"])


def test_unknown_store_scheme():
    with pytest.raises(ka.UnsupportedStoreError, match="nosuch"):
        ka.dataset("nosuch://host/path", "sales")


def test_bad_store_object():
    with pytest.raises(ka.InvalidArgumentError, match="cannot use"):
        ka.dataset(42, "sales")


def test_corrupt_metadata_is_reported(existing):
    existing.put("sales.by-dataset-metadata.json", b"{not json")
    with pytest.raises(ka.CorruptMetadataError, match="not valid JSON"):
        ka.dataset(existing, "sales")


def test_bad_version_arguments(existing):
    with pytest.raises(ka.InvalidArgumentError):
        ka.dataset(existing, "sales", version="1")
    with pytest.raises(ka.InvalidArgumentError, match="as_of"):
        ka.dataset(existing, "sales", as_of="yesterday")
