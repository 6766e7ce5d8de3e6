"""ktk-arrow: kartothek datasets on object stores, served as Arrow datasets.

The public surface is this module; everything else is private and may change.
(``ka.compact`` is the maintenance function; the module of the same name is
internal and reachable as ``sys.modules["ktk_arrow.compact"]``.)
"""

from __future__ import annotations

from .arrow import KartothekDataset, KartothekPartitioning, dataset, history
from .commit import Snapshot
from .errors import (
    CommitConflictError,
    CommitInDoubtError,
    CorruptMetadataError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidArgumentError,
    InvalidPredicateError,
    KtkError,
    SchemaMismatchError,
    StoreError,
    UnsupportedStoreError,
)
from .maintenance import (
    CompactResult,
    DatasetList,
    DeleteResult,
    ExpireResult,
    GcResult,
    IndexResult,
    VacuumResult,
    build_index,
    compact,
    delete_dataset,
    drop_index,
    expire_snapshots,
    garbage_collect,
    list_datasets,
    vacuum,
)
from .storage import Store, resolve_store
from .write import write_dataset

__version__ = "0.1.0"

__all__ = [
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
    "compact",
    "dataset",
    "delete_dataset",
    "drop_index",
    "expire_snapshots",
    "garbage_collect",
    "history",
    "list_datasets",
    "resolve_store",
    "vacuum",
    "write_dataset",
]
