"""Hostile or broken metadata never escapes the store and never crashes untyped."""

from __future__ import annotations

import base64
import json

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import planning
from ktk_arrow.spec.metadata import DatasetMetadata, is_store_key
from ktk_arrow.storage import LocalStore

VALID = {
    "dataset_metadata_version": 4,
    "dataset_uuid": "ds",
    "metadata": {},
    "partitions": {"p=a/f": {"files": {"table": "ds/table/p=a/f.parquet"}}},
    "partition_keys": ["p"],
    "indices": {},
}


@pytest.mark.parametrize(
    "patch",
    [
        {"partitions": {"f": {"files": {"table": "../../etc/passwd"}}}},
        {"partitions": {"f": {"files": {"table": "ds/table/../../x.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "/ds/table/f.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "ds//table/f.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "ds/./table/f.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "ds\\..\\..\\x.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "s3://bucket/x.parquet"}}}},
        {"partitions": {"f": {"files": {"table": ""}}}},
        {"partitions": {"f": {"files": {"table": 7}}}},
        {"indices": {"x": "/abs/path.parquet"}},
        {"dataset_uuid": "../ds"},
        {"partitions": ["not", "a", "dict"]},
        {"partitions": {"f": "nope"}},
        {"partition_keys": 5},
        {"ktk_arrow": {"files": {"p=a/f": "x"}, "commit": {"version": "one"}}},
        {"ktk_arrow": {"schema": "!!not base64!!"}},
        {"dataset_metadata_version": 3},
    ],
)
def test_malformed_or_escaping_metadata_is_corrupt(patch):
    with pytest.raises(ka.CorruptMetadataError):
        DatasetMetadata.from_dict({**VALID, **patch})


@pytest.mark.parametrize(
    "key", ["other/table/f.parquet", "other/table/p=a/f.parquet", "shared-files/f.parquet"]
)
def test_references_into_another_prefix_of_the_store_are_legal(key):
    """plateau datasets may reference files under another uuid of the same store: read them."""
    partitions = {"p=a/f": {"files": {"table": key}}}
    meta = DatasetMetadata.from_dict({**VALID, "partitions": partitions})
    assert meta.files["p=a/f"].key == key
    assert DatasetMetadata.from_json(meta.to_json()).files["p=a/f"].key == key


def test_escaping_metadata_in_a_store_reads_nothing_outside(tmp_path):
    store = LocalStore(str(tmp_path / "store"))
    ka.write_dataset(pd.DataFrame({"p": ["a"], "x": [1]}), store, "ds", partition_on=["p"])
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"secret")
    hostile = {
        **VALID,
        "partitions": {"f": {"files": {"table": "ds/table/../../../secret.parquet"}}},
    }
    store.put("ds.by-dataset-metadata.json", json.dumps(hostile).encode())
    with pytest.raises(ka.CorruptMetadataError, match="not an object of the store"):
        ka.dataset(store, "ds", version=None)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from([*sorted(VALID), "ktk_arrow"]),
    value=JSONISH,
)
def test_fuzzed_metadata_parses_or_is_corrupt(key, value):
    try:
        meta = DatasetMetadata.from_dict({**VALID, key: value})
    except ka.CorruptMetadataError:
        return
    for entry in meta.files.values():  # inside the store: no escape
        assert is_store_key(entry.key)
        assert not entry.key.startswith("/") and ".." not in entry.key.split("/")


# -- file facts, statistics and duplicate references --------------------------

SCHEMA = pa.schema([("p", pa.string()), ("x", pa.int64()), ("t", pa.timestamp("us"))])
TWO_FILES = {
    **VALID,
    "partitions": {
        "p=a/f": {"files": {"table": "ds/table/p=a/f.parquet"}},
        "p=a/g": {"files": {"table": "ds/table/p=a/g.parquet"}},
    },
}


def with_facts(facts, partitions=None):
    """VALID with our extension: the schema above and ``facts`` for label ``p=a/f``."""
    return {
        **VALID,
        **({"partitions": partitions} if partitions is not None else {}),
        "ktk_arrow": {
            "format": 1,
            "files": {"p=a/f": facts},
            "schema": base64.b64encode(SCHEMA.serialize().to_pybytes()).decode(),
        },
    }


@pytest.mark.parametrize(
    "partitions,key",
    [
        (
            {
                "p=a/f": {"files": {"table": "ds/table/p=a/f.parquet"}},
                "p=a/g": {"files": {"table": "ds/table/p=a/f.parquet"}},
            },
            "ds/table/p=a/f.parquet",
        ),
    ],
)
def test_two_labels_referencing_one_file_are_corrupt(partitions, key):
    with pytest.raises(ka.CorruptMetadataError) as info:
        DatasetMetadata.from_dict({**VALID, "partitions": partitions}, source="ds.json")
    message = str(info.value)
    assert "ds.json" in message and repr(key) in message and "twice" in message
    assert "'p=a/f'" in message and "'p=a/g'" in message


def test_a_key_as_data_and_index_is_corrupt():
    hostile = {**VALID, "indices": {"x": "ds/table/p=a/f.parquet"}}
    with pytest.raises(ka.CorruptMetadataError, match=r"'ds/table/p=a/f\.parquet' twice") as info:
        DatasetMetadata.from_dict(hostile, source="ds/_ktk/log/00000000000000000003.json")
    assert "ds/_ktk/log/00000000000000000003.json" in str(info.value)
    assert "index of column 'x'" in str(info.value)


def test_two_indices_sharing_a_file_are_corrupt():
    ref = "ds/indices/x/a.by-dataset-index.parquet"
    with pytest.raises(ka.CorruptMetadataError, match="twice"):
        DatasetMetadata.from_dict({**VALID, "indices": {"x": ref, "y": ref}})


@pytest.mark.parametrize(
    "facts",
    [
        [-1, 3],
        [10, -3],
        ["10", 3],
        [10.5, 3],
        [True, 3],
        [10, False],
        [10, [3]],
        [10],
        [10, 3, {}, 4],
        "10,3",
        {"size": 10},
        [10, 3, "stats"],
        [10, 3, {"x": [1, 2]}],
        [10, 3, {"x": [1, 2, -1]}],
        [10, 3, {"x": [1, 2, 4]}],  # more nulls than rows
        [10, 3, {"x": [1, 2, 1.5]}],
        [10, 3, {"x": [5, 1, 0]}],  # min above max
        [10, 3, {"x": [1, None, 0]}],  # one bound only
        [10, 3, {"x": [[1], [2], 0]}],
        [10, 3, {"x": [{"a": 1}, 2, 0]}],
        [10, 3, {"x": [1, "z", 0]}],
    ],
)
def test_malformed_file_facts_are_corrupt(facts):
    with pytest.raises(ka.CorruptMetadataError, match="p=a/f") as info:
        DatasetMetadata.from_dict(with_facts(facts), source="ds.by-dataset-metadata.json")
    assert "ds.by-dataset-metadata.json" in str(info.value)


@pytest.mark.parametrize(
    "facts", [[None, None], [0, 0], [10, 3, None], [10, 3, {"x": [1, 1, 0], "t": [None, None, 3]}]]
)
def test_well_formed_file_facts_parse(facts):
    entry = DatasetMetadata.from_dict(with_facts(facts)).files["p=a/f"]
    assert [entry.size, entry.rows] == facts[:2]


@pytest.mark.parametrize(
    "bounds",
    [["not a time", "2020-01-01T00:00:00"], ["2021-01-01T00:00:00", "2020-01-01T00:00:00"]],
)
def test_bad_timestamp_statistics_are_corrupt_when_planning(bounds):
    meta = DatasetMetadata.from_dict(with_facts([10, 3, {"t": [*bounds, 0]}]))
    scan_filter = planning.make_filter([[("t", ">", pd.Timestamp("2020-06-01"))]], SCHEMA)
    with pytest.raises(ka.CorruptMetadataError, match=r"'ds/table/p=a/f\.parquet'") as info:
        planning.plan(meta, scan_filter)
    assert "column 't'" in str(info.value) and "ktk check" in str(info.value)


@pytest.mark.parametrize(
    "label,partition_keys",
    [("q=a/f", ["p"]), ("f", ["p"]), ("p=a/q=b/f", ["p"]), ("p=a/f", ["p", "q"]), ("a/b/f", ["p"])],
)
def test_labels_that_do_not_match_the_partition_keys_are_corrupt(label, partition_keys):
    data = {
        **VALID,
        "partitions": {label: {"files": {"table": f"ds/table/{label}.parquet"}}},
        "partition_keys": partition_keys,
    }
    meta = DatasetMetadata.from_dict(data)
    with pytest.raises(ka.CorruptMetadataError, match=repr(label)):
        planning.plan(meta)


def test_partition_keys_must_be_a_list_of_names():
    with pytest.raises(ka.CorruptMetadataError, match="partition_keys"):
        DatasetMetadata.from_dict({**VALID, "partition_keys": "p"})


SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=4)
FACTS = st.lists(
    st.one_of(
        SCALARS,
        st.dictionaries(
            st.sampled_from(["x", "t", "p", "zz"]),
            st.lists(SCALARS, max_size=4) | SCALARS,
            max_size=3,
        ),
    ),
    max_size=4,
)
FILTERS = [
    [[("x", ">", 1)]],
    [[("x", "==", 2)], [("x", "is distinct from", None)]],
    [[("t", "<", pd.Timestamp("2020-01-01"))]],
    [[("p", "==", "a"), ("x", "in", [1, 2])]],
]


@settings(max_examples=300, deadline=None)
@given(facts=FACTS | JSONISH, filter_=st.sampled_from(FILTERS))
def test_fuzzed_file_facts_parse_and_plan_or_are_corrupt(facts, filter_):
    """Whatever the facts, parsing and planning with them succeed or say CorruptMetadataError."""
    try:
        meta = DatasetMetadata.from_dict(with_facts(facts))
        tasks = planning.plan(meta, planning.make_filter(filter_, SCHEMA))
    except ka.CorruptMetadataError:
        return
    assert all(t.size is None or (type(t.size) is int and t.size >= 0) for t in tasks)
    assert all(t.rows is None or (type(t.rows) is int and t.rows >= 0) for t in tasks)


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["p=a/f", "p=a/g", "p=b/f", "f"]), min_size=1, max_size=3),
    keys=st.lists(
        st.sampled_from(["ds/table/p=a/f.parquet", "ds/table/p=a/g.parquet", "ds/i/x.parquet"]),
        min_size=1,
        max_size=3,
    ),
    index=st.none() | st.sampled_from(["ds/table/p=a/f.parquet", "ds/i/x.parquet"]),
)
def test_fuzzed_references_are_unique_or_corrupt(labels, keys, index):
    partitions = {
        label: {"files": {"table": key}} for label, key in zip(labels, keys, strict=False)
    }
    data = {**VALID, "partitions": partitions, "indices": {"x": index} if index else {}}
    refs = [p["files"]["table"] for p in partitions.values()] + ([index] if index else [])
    try:
        DatasetMetadata.from_dict(data)
    except ka.CorruptMetadataError as exc:
        assert len(set(refs)) < len(refs)
        assert "twice" in str(exc)
        return
    assert len(set(refs)) == len(refs)


def test_the_table_name_of_a_dataset_without_files_round_trips():
    meta = DatasetMetadata.from_dict({**VALID, "partitions": {}, "ktk_arrow": {"table": "foo"}})
    assert meta.table == "foo"
    assert DatasetMetadata.from_json(meta.to_json()).table == "foo"
    default = DatasetMetadata.from_dict({**VALID, "partitions": {}})
    assert "table" not in default.to_dict()["ktk_arrow"]  # the default stays implicit


@pytest.mark.parametrize("table", ["", "a/b", "..", 5, None])
def test_invalid_table_names_in_the_extension_are_corrupt(table):
    with pytest.raises(ka.CorruptMetadataError, match="table name"):
        DatasetMetadata.from_dict({**VALID, "partitions": {}, "ktk_arrow": {"table": table}})
