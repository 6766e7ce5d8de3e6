"""ktk-arrow: kartothek datasets on object stores, served as Arrow datasets.

The public surface is this module; everything else is private and may change.
(``ka.compact`` and ``ka.changes`` are functions; the modules of the same names
are internal and reachable as ``sys.modules["ktk_arrow.compact"]`` and so on.)
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

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

# Loaded on first use (PEP 562), so that `import ktk_arrow` (and every `ktk`
# command, `ktk --help` included) does not pay for pyarrow and pandas upfront.
_LAZY = {
    "KartothekDataset": "arrow",
    "KartothekPartitioning": "arrow",
    "dataset": "arrow",
    "history": "arrow",
    "Snapshot": "commit",
    "Store": "storage",
    "resolve_store": "storage",
    "write_dataset": "write",
    "delete_rows": "rows",
    "upsert": "rows",
    "changes": "changes",
    "AutoCompact": "write",
    **dict.fromkeys(
        [
            "CompactResult",
            "DatasetList",
            "DeleteResult",
            "ExpireResult",
            "GcResult",
            "IndexResult",
            "VacuumResult",
            "build_index",
            "compact",
            "delete_dataset",
            "drop_index",
            "expire_snapshots",
            "garbage_collect",
            "list_datasets",
            "vacuum",
        ],
        "maintenance",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ktk_arrow' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # not setattr: see _Package
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Importing the internal module ``ktk_arrow.compact`` must not hide ``ka.compact``.

    The import system binds a loaded submodule as an attribute of its package;
    for ``compact`` that binding is dropped (the module stays in ``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
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
]
