"""The one exception tree of ktk-arrow.

Every error a user can cause or meet derives from :class:`KtkError`, so a
pipeline can catch one type.  Messages name the offending value and the fix;
none may contain a secret from ``storage_options`` (see :func:`redact`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class KtkError(Exception):
    """Base class of every ktk-arrow error."""


class InvalidArgumentError(KtkError, ValueError):
    """An argument is invalid: unknown column, bad uuid, bad mode, empty input."""


class DatasetNotFoundError(KtkError, FileNotFoundError):
    """The dataset (or the requested version of it) does not exist."""


class DatasetExistsError(KtkError, FileExistsError):
    """A dataset was to be created, but one with that uuid already exists."""


class CommitConflictError(KtkError):
    """A concurrent commit changed what this commit depends on; nothing was made visible."""


class SchemaMismatchError(KtkError, ValueError):
    """New data does not match the dataset's schema."""


class InvalidPredicateError(InvalidArgumentError):
    """A predicate is malformed, names an unknown column, or has a value of the wrong type."""


class UnsupportedStoreError(KtkError):
    """The store URL or filesystem cannot be used (unknown scheme, no conditional writes)."""


class StoreError(KtkError, OSError):
    """The store failed or was unreachable; the backend error is chained as ``__cause__``."""


class CommitInDoubtError(StoreError):
    """The store failed while a log entry was written, and reading it back failed too.

    The commit may or may not be in: its files are kept (garbage collection
    removes them if it is not), and ``ka.history()`` tells once the store answers.
    """


class CorruptMetadataError(KtkError):
    """Stored metadata cannot be parsed or contradicts itself."""


class ViewLagWarning(UserWarning):
    """A commit is in, but its metadata view could not be rewritten.

    ktk-arrow readers roll forward past a lagging view; plateau/kartothek
    readers see the previous state until the next commit (or ``ktk check``,
    expiry or gc) refreshes it.
    """


_SECRET_HINTS = ("key", "secret", "token", "password", "credential", "sas", "connection")


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``options`` with every value that may be a secret replaced by ``***``."""
    if not options:
        return {}
    out: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            out[name] = redact(value)
        elif any(hint in name.lower() for hint in _SECRET_HINTS):
            out[name] = "***"
        else:
            out[name] = value
    return out
