"""ktk-arrow: kartothek datasets on object stores, served as Arrow datasets.

The public surface is this module; everything else is private and may change.
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
from .storage import Store, resolve_store
from .write import write_dataset

__version__ = "0.1.0"

__all__ = [
    "CommitConflictError",
    "CommitInDoubtError",
    "CorruptMetadataError",
    "DatasetExistsError",
    "DatasetNotFoundError",
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
    "dataset",
    "history",
    "resolve_store",
    "write_dataset",
]
