"""Hostile or broken metadata never escapes the dataset and never crashes untyped."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow.spec.metadata import DatasetMetadata
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
        {"partitions": {"f": {"files": {"table": "other/table/f.parquet"}}}},
        {"partitions": {"f": {"files": {"table": "ds/table/../../x.parquet"}}}},
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
    with pytest.raises(ka.CorruptMetadataError, match="not an object of dataset"):
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
    for entry in meta.files.values():
        assert entry.key.startswith("ds/")
