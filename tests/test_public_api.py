"""The public surface is locked: changing it must be a deliberate act."""

import ktk_arrow as ka

EXPECTED = {
    "AutoCompact",
    "CommitConflictError",
    "CommitInDoubtError",
    "CompactResult",
    "CorruptMetadataError",
    "DatasetExistsError",
    "DatasetList",
    "DatasetNotFoundError",
    "DeleteResult",
    "ExpireResult",
    "GcResult",
    "IndexResult",
    "InvalidArgumentError",
    "InvalidPredicateError",
    "KartothekDataset",
    "KartothekPartitioning",
    "KtkError",
    "SchemaMismatchError",
    "Snapshot",
    "Store",
    "StoreError",
    "UnsupportedStoreError",
    "VacuumResult",
    "build_index",
    "changes",
    "compact",
    "dataset",
    "delete_dataset",
    "delete_rows",
    "drop_index",
    "expire_snapshots",
    "garbage_collect",
    "history",
    "list_datasets",
    "resolve_store",
    "upsert",
    "vacuum",
    "write_dataset",
}


def test_all_is_locked():
    assert set(ka.__all__) == EXPECTED
    for name in ka.__all__:
        assert getattr(ka, name).__doc__, f"{name} needs a docstring"


def test_error_tree():
    for name in EXPECTED:
        obj = getattr(ka, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, ka.KtkError)
    assert issubclass(ka.InvalidArgumentError, ValueError)
    assert issubclass(ka.InvalidPredicateError, ka.InvalidArgumentError)


def test_dataset_is_an_arrow_dataset():
    import pyarrow.dataset as pds

    assert issubclass(ka.KartothekDataset, pds.FileSystemDataset)
