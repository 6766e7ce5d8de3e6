"""The one exception tree of ktk-arrow.

Every error a user can cause or meet derives from :class:`KtkError`, so a
pipeline can catch one type.  Messages name the offending value and the fix;
none may contain a secret from ``storage_options`` (see :func:`redact`).

Each class also derives from the builtin exceptions kartothek/plateau raised
in the same case, so ``except RuntimeError`` / ``except KeyError`` / ... in a
pipeline written for them keeps working after the one-import switch
(``docs/errors.md`` lists the pairs; ``tests/test_kartothek_errors.py`` runs
each failing call through plateau and through ktk-arrow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class KtkError(Exception):
    """Base class of every ktk-arrow error."""

    def __str__(self) -> str:
        # KeyError (a base of some subclasses, for kartothek compatibility) would
        # print the message as a repr in quotes; OSError formats errno and filename
        if isinstance(self, OSError):
            return OSError.__str__(self)
        return Exception.__str__(self)


class InvalidArgumentError(KtkError, ValueError, TypeError, RuntimeError):
    """An argument is invalid: unknown column, bad uuid, bad mode, empty input.

    Also a ``TypeError`` and a ``RuntimeError``: kartothek raised those for
    some invalid arguments (an index on a missing column, a ``dispatch_by``
    that is not indexed, a store of the wrong type).
    """


class DatasetNotFoundError(KtkError, FileNotFoundError, KeyError):
    """The dataset (or the requested version of it) does not exist.

    Also a ``KeyError``, as kartothek raised for a missing dataset.
    """


class DatasetExistsError(KtkError, FileExistsError, RuntimeError):
    """A dataset was to be created, but one with that uuid already exists.

    Also a ``RuntimeError``, as kartothek raised in this case.
    """


class CommitConflictError(KtkError):
    """A concurrent commit changed what this commit depends on; nothing was made visible."""


class SchemaMismatchError(KtkError, ValueError):
    """New data does not match the dataset's schema."""


class InvalidPredicateError(InvalidArgumentError, KeyError, NotImplementedError):
    """A predicate is malformed, names an unknown column, or has a value of the wrong type.

    Also a ``KeyError`` (kartothek's error for an unknown column) and a
    ``NotImplementedError`` (its error for an unknown operator), besides the
    ``ValueError`` / ``TypeError`` of :class:`InvalidArgumentError`.
    """


class UnsupportedStoreError(KtkError, ValueError):
    """The store URL or filesystem cannot be used (unknown scheme, no conditional writes).

    Also a ``ValueError``, as kartothek raised for an unknown store scheme.
    """


class StoreError(KtkError, OSError, KeyError):
    """The store failed or was unreachable; the backend error is chained as ``__cause__``.

    Also a ``KeyError``, as kartothek raised for a data or index file missing
    from the store.
    """


class CommitInDoubtError(StoreError):
    """The store failed while a log entry was written, and reading it back failed too.

    The commit may or may not be in: its files are kept (garbage collection
    removes them if it is not), and ``ka.history()`` tells once the store answers.
    """


class CorruptMetadataError(KtkError, ValueError):
    """Stored metadata cannot be parsed or contradicts itself.

    Also a ``ValueError``, as kartothek raised for unparsable metadata
    (``json.JSONDecodeError``) and undecodable parquet (``ArrowInvalid``).
    """


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
