"""Public maintenance: compaction, retention, garbage collection, deletion, indices, listing.

A thin layer over the code that does the work (``commit.py`` for retention,
gc and deletion, ``compact.py``, ``write.py`` for index builds).  Every
function takes any store form (URL, local path, ``(fs, root)``, ``ka.Store``,
store factory; ``storage_options=``) and returns a small frozen result that
says what it did and, when it did nothing or less than asked, why
(``reason``).  Exported as ``ka.compact``, ``ka.garbage_collect``,
``ka.expire_snapshots``, ``ka.vacuum``, ``ka.delete_dataset``,
``ka.build_index``, ``ka.drop_index`` and ``ka.list_datasets``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, overload

from . import commit as committer
from . import write
from .commit import DEFAULT_GC_GRACE, Change, Snapshot
from .compact import Progress, run_compaction
from .errors import DatasetNotFoundError, InvalidArgumentError
from .spec import keys
from .storage import Store, StoreLike, resolve_store
from .write import DEFAULT_MAX_ROWS_PER_FILE

__all__ = [
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
]

#: ``ka.vacuum``'s default retention: snapshots current within the last 7 days stay
DEFAULT_RETENTION = timedelta(days=7)


# -- results ------------------------------------------------------------------


@dataclass(frozen=True)
class CompactResult:
    """What :func:`compact` did.

    ``snapshot`` is the new ``"compact"`` snapshot, or the current one when
    nothing was committed (``committed`` false; ``reason`` says why).
    Compaction adds no rows and removes none: the snapshot reports
    ``rows_added == rows_removed == 0``.
    """

    dataset_uuid: str
    snapshot: Snapshot
    committed: bool
    dry_run: bool
    #: partitions whose small files were (with ``dry_run``: would be) merged
    partitions: int
    #: files the merge removed from the dataset, and the files it wrote
    files_removed: int
    files_added: int
    files_before: int
    files_after: int
    reason: str | None = None


@dataclass(frozen=True)
class GcResult:
    """What :func:`garbage_collect` deleted, and the unreferenced files it kept (with why)."""

    dataset_uuid: str
    #: the latest version; gc brought the view up to it first
    version: int
    #: deleted keys (with ``dry_run``: those that would be deleted)
    deleted: tuple[str, ...]
    #: unreferenced files younger than the grace period (a write may be committing them)
    kept_young: tuple[str, ...]
    #: files of snapshots expired within the grace period (readers may still read them)
    kept_for_readers: tuple[str, ...]
    #: files a write of this process is producing
    kept_in_flight: tuple[str, ...]
    grace_period: timedelta
    dry_run: bool
    reason: str | None = None


@dataclass(frozen=True)
class ExpireResult:
    """Which snapshots :func:`expire_snapshots` expired, and which it kept although asked to.

    ``kept_by_grace`` are versions ``older_than`` / ``keep_last`` select that
    were committed within the grace period; ``kept_for_view`` versions the
    metadata view still needs (readers roll forward from the view through
    them) or the newest log entry.
    """

    dataset_uuid: str
    #: the latest version (never expired)
    version: int
    expired: tuple[int, ...]
    kept_by_grace: tuple[int, ...]
    kept_for_view: tuple[int, ...]
    #: the versions retained afterwards, oldest first
    retained: tuple[int, ...]
    #: files only the expired snapshots use: gc frees them once the grace period has passed
    orphaned: tuple[str, ...]
    grace_period: timedelta
    dry_run: bool
    reason: str | None = None


@dataclass(frozen=True)
class VacuumResult:
    """What :func:`vacuum` did: the expiry, then the garbage collection."""

    dataset_uuid: str
    retention: timedelta
    expire: ExpireResult
    gc: GcResult
    dry_run: bool
    reason: str | None = None

    @property
    def deleted(self) -> tuple[str, ...]:
        """The files deleted (``dry_run``: that would be)."""
        return self.gc.deleted


@dataclass(frozen=True)
class DeleteResult:
    """What :func:`delete_dataset` deleted, and what it left (with why)."""

    dataset_uuid: str
    #: the version of the tombstone entry the deletion committed first
    version: int
    #: deleted objects under ``<uuid>/`` (besides the views and the log)
    deleted: tuple[str, ...]
    #: unreferenced data files younger than gc's grace period, left for a write
    #: that may be creating the dataset anew
    kept: tuple[str, ...]
    #: referenced files under other datasets' prefixes: theirs, never deleted
    foreign: tuple[str, ...]
    reason: str | None = None


@dataclass(frozen=True)
class IndexResult:
    """What :func:`build_index` or :func:`drop_index` committed."""

    dataset_uuid: str
    columns: tuple[str, ...]
    #: the new snapshot, or the current one when nothing was committed
    snapshot: Snapshot
    committed: bool
    reason: str | None = None


@dataclass(frozen=True)
class DatasetList(Sequence[str]):
    """The datasets of a store (:func:`list_datasets`); iterates over their uuids.

    ``without_view`` are datasets only the snapshot log holds (their creator
    died before writing the view: plateau cannot see them yet); ``deleted``
    names whose metadata remains but whose dataset was deleted (skipped).
    """

    uuids: tuple[str, ...]
    without_view: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self.uuids[index]

    def __len__(self) -> int:
        return len(self.uuids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.uuids)

    def __contains__(self, value: object) -> bool:
        return value in self.uuids


# -- compaction ----------------------------------------------------------------


def compact(
    store: StoreLike,
    dataset_uuid: str,
    *,
    partitions: Any = None,
    target_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    dry_run: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> CompactResult:
    """Merge the small files of each partition into few large ones, as one commit.

    ``partitions`` restricts the work to partitions matching a kartothek DNF
    predicate (or Arrow expression) on partition columns; files with at
    least ``target_rows_per_file`` rows are left alone.  A concurrent append
    never conflicts; a concurrent delete of a merged file raises
    ``CommitConflictError``.  The old files stay for time travel until gc.
    ``dry_run`` only plans.
    """
    resolved = resolve_store(store, storage_options)
    done = run_compaction(
        resolved,
        dataset_uuid,
        partitions=partitions,
        target_rows_per_file=target_rows_per_file,
        progress=progress,
        dry_run=dry_run,
    )
    before = len(done.before.files)
    if done.committed:
        removed, added = done.snapshot.files_removed, done.snapshot.files_added
    else:  # planned only: the files that would go; new files are known after writing
        removed = sum(len(g.files) for g in done.groups)
        added = sum(_files_for(g.rows, target_rows_per_file) for g in done.groups)
    reason = None
    if not done.groups:
        reason = _nothing_to_compact(done.before, partitions, target_rows_per_file)
    elif dry_run:
        reason = "dry run: nothing was written or committed"
    return CompactResult(
        dataset_uuid=dataset_uuid,
        snapshot=done.snapshot,
        committed=done.committed,
        dry_run=dry_run,
        partitions=len(done.groups),
        files_removed=removed if done.groups else 0,
        files_added=added if done.groups else 0,
        files_before=before,
        files_after=before - removed + added if done.groups else before,
        reason=reason,
    )


def _files_for(rows: int | None, target: int) -> int:
    return 1 if rows is None else max(1, -(-rows // target))


def _nothing_to_compact(meta: Any, partitions: Any, target: int) -> str:
    small: dict[str, int] = {}
    for entry in meta.files.values():
        if entry.rows is None or entry.rows < target:
            small[entry.partition_dir] = small.get(entry.partition_dir, 0) + 1
    if not meta.files:
        return f"dataset {meta.uuid!r} has no files (version {meta.version})"
    where = " among the partitions partitions= selects" if partitions is not None else ""
    if not small:
        return f"every file{where} has at least target_rows_per_file={target} rows"
    return (
        f"no partition{where} has small files that merging would turn into fewer files "
        f"({sum(small.values())} files below {target} rows in {len(small)} partitions, at most "
        f"{max(small.values())} per partition)"
    )


# -- retention and garbage collection -------------------------------------------


def garbage_collect(
    store: StoreLike,
    dataset_uuid: str,
    *,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    dry_run: bool = False,
    force: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> GcResult:
    """Delete the data and index files no retained snapshot references.

    Files younger than ``grace_period`` (default one hour) are kept: they may
    belong to a commit still in flight, so the grace period must be longer
    than the longest write; under one minute it needs ``force=True`` (no
    writer running).  Files of snapshots expired within the grace period are
    kept for readers still reading them.  Only objects under ``<uuid>/`` are
    ever deleted.  Snapshots are not expired here: see
    :func:`expire_snapshots`, or :func:`vacuum` for both.
    """
    resolved = resolve_store(store, storage_options)
    keys.validate_uuid(dataset_uuid)
    done = committer.collect_garbage(
        resolved, dataset_uuid, grace_period=grace_period, dry_run=dry_run, force=force
    )
    parts = []
    if done.kept_young:
        parts.append(
            f"{_count(done.kept_young, 'unreferenced file')} younger than the "
            f"{_duration(grace_period)} grace period (a write may be committing "
            f"{'it' if len(done.kept_young) == 1 else 'them'}) kept"
        )
    if done.kept_for_readers:
        parts.append(
            f"{_count(done.kept_for_readers, 'file')} of snapshots expired within the last "
            f"{_duration(grace_period)} kept for readers that may still read them"
        )
    if done.kept_in_flight:
        parts.append(f"{_count(done.kept_in_flight, 'file')} a write of this process holds kept")
    if not done.deleted and not parts:
        parts.append(
            "every data and index file is referenced by a retained snapshot; expire old "
            "snapshots first (ka.expire_snapshots, or ka.vacuum for both steps) to free theirs"
        )
    return GcResult(
        dataset_uuid=dataset_uuid,
        version=done.version,
        deleted=tuple(done.deleted),
        kept_young=tuple(done.kept_young),
        kept_for_readers=tuple(done.kept_for_readers),
        kept_in_flight=tuple(done.kept_in_flight),
        grace_period=grace_period,
        dry_run=dry_run,
        reason="; ".join(parts) if parts else None,
    )


def expire_snapshots(
    store: StoreLike,
    dataset_uuid: str,
    *,
    older_than: datetime | timedelta | None = None,
    keep_last: int | None = None,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    dry_run: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> ExpireResult:
    """Forget old snapshots, so that gc can free the files only they use.

    A version expires when it was committed before ``older_than`` (a
    datetime, naive means UTC, or an age) *and* is not among the newest
    ``keep_last``; at least one is required.  Never expired: the latest
    version, the versions readers reach the latest through, and versions
    committed within ``grace_period`` (default one hour: a writer that is
    still publishing may rely on them; ``timedelta(0)`` only when no writer
    runs).  The result lists what was kept for these reasons.
    """
    resolved = resolve_store(store, storage_options)
    done = committer.expire(
        resolved,
        dataset_uuid,
        older_than=older_than,
        keep_last=keep_last,
        grace_period=grace_period,
        dry_run=dry_run,
    )
    return _expire_result(dataset_uuid, done, older_than, keep_last, grace_period, dry_run)


def _expire_result(
    dataset_uuid: str,
    done: committer.ExpiryOutcome,
    older_than: datetime | timedelta | None,
    keep_last: int | None,
    grace_period: timedelta,
    dry_run: bool,
) -> ExpireResult:
    parts = []
    if done.kept_by_grace:
        n = len(done.kept_by_grace)
        parts.append(
            f"{_versions(done.kept_by_grace)} {'is' if n == 1 else 'are'} younger than the "
            f"{_duration(grace_period)} grace period and kept (a writer still publishing may "
            "need them; pass grace_period=timedelta(0) only if no writer is running)"
        )
    if done.kept_for_view:
        parts.append(
            f"{_versions(done.kept_for_view)} kept: readers reach the latest version through "
            "them (the metadata view is behind), or it is the newest log entry"
        )
    if not done.expired and not parts:
        others = [v for v in done.retained if v != done.version]
        if not others:
            parts.append(f"only the latest version ({done.version}) is retained")
        elif keep_last is not None and keep_last > len(others):
            parts.append(f"keep_last={keep_last} keeps all {len(done.retained)} retained versions")
        else:
            parts.append(f"no retained version was committed before {_cutoff_text(older_than)}")
    return ExpireResult(
        dataset_uuid=dataset_uuid,
        version=done.version,
        expired=tuple(done.expired),
        kept_by_grace=tuple(done.kept_by_grace),
        kept_for_view=tuple(done.kept_for_view),
        retained=tuple(done.retained),
        orphaned=tuple(done.orphaned),
        grace_period=grace_period,
        dry_run=dry_run,
        reason="; ".join(parts) if parts else None,
    )


def vacuum(
    store: StoreLike,
    dataset_uuid: str,
    *,
    retention: timedelta = DEFAULT_RETENTION,
    keep_last: int | None = None,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    dry_run: bool = False,
    force: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> VacuumResult:
    """Expire the snapshots older than ``retention``, then delete the files nobody needs.

    One setting: every snapshot that was the latest at some moment within
    the last ``retention`` (default 7 days) stays, so ``as_of=`` time travel
    within that window keeps working; older ones are expired (``keep_last``
    keeps more), then gc deletes the files no retained snapshot references.
    ``grace_period`` (default one hour) protects, in both steps, writes still
    committing and readers still reading: the files of the snapshots expired
    by this call are deleted by the next vacuum or gc once it has passed
    (``VacuumResult.expire.orphaned`` lists them).
    """
    if not isinstance(retention, timedelta) or retention < timedelta(0):
        raise InvalidArgumentError(f"retention must be a non-negative timedelta, got {retention!r}")
    resolved = resolve_store(store, storage_options)
    keys.validate_uuid(dataset_uuid)
    cutoff = datetime.now(timezone.utc) - retention
    if committer.load_latest(resolved, dataset_uuid) is None:
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} does not exist in {resolved.url!r}; nothing to vacuum"
        )
    try:  # the snapshot current at the cutoff stays: as_of(cutoff) keeps working
        older_than = committer.load_as_of(resolved, dataset_uuid, cutoff).commit.timestamp
    except DatasetNotFoundError:  # every retained snapshot is younger than the cutoff
        older_than = cutoff
    expired = committer.expire(
        resolved,
        dataset_uuid,
        older_than=older_than,
        keep_last=keep_last,
        grace_period=grace_period,
        dry_run=dry_run,
    )
    expire_result = _expire_result(
        dataset_uuid, expired, older_than, keep_last, grace_period, dry_run
    )
    gc_result = garbage_collect(
        resolved, dataset_uuid, grace_period=grace_period, dry_run=dry_run, force=force
    )
    # files only the expired snapshots use: the expiry record keeps them for the grace
    # period (readers may still read them); without one, this gc deletes them
    if dry_run and grace_period > timedelta(0):
        pending: tuple[str, ...] = expire_result.orphaned
    elif dry_run:  # the log still holds the entries a real run expires first
        extra = tuple(k for k in expire_result.orphaned if k not in set(gc_result.deleted))
        gc_result = dataclasses.replace(gc_result, deleted=gc_result.deleted + extra)
        pending = ()
    else:
        pending = gc_result.kept_for_readers
    parts = []
    if pending:
        parts.append(
            f"{_count(pending, 'file')} of the snapshots "
            f"{'that would be ' if dry_run else ''}expired "
            f"{'is' if len(pending) == 1 else 'are'} deleted by the next vacuum or gc after "
            f"the {_duration(grace_period)} grace period (readers may still read them)"
        )
    if not expire_result.expired and expire_result.reason:
        parts.append(f"expiry: {expire_result.reason}")
    if not gc_result.deleted and gc_result.reason and not pending:
        parts.append(f"gc: {gc_result.reason}")
    return VacuumResult(
        dataset_uuid=dataset_uuid,
        retention=retention,
        expire=expire_result,
        gc=gc_result,
        dry_run=dry_run,
        reason="; ".join(parts) if parts else None,
    )


# -- deletion -----------------------------------------------------------------


def delete_dataset(
    store: StoreLike, dataset_uuid: str, *, storage_options: dict[str, Any] | None = None
) -> DeleteResult:
    """Delete a dataset: every snapshot, its metadata and its files.

    A tombstone log entry is committed first (readers stop seeing the
    dataset at once; a deletion killed part-way never revives a version),
    then the objects under ``<uuid>/`` and the views go.  Files the dataset
    references under another dataset's prefix stay (they are that
    dataset's), and so do unreferenced data files younger than gc's grace
    period (a write may be creating the dataset anew).  Raises
    ``DatasetNotFoundError`` if there is no such dataset.
    """
    resolved = resolve_store(store, storage_options)
    done = committer.delete_dataset(resolved, dataset_uuid)
    parts = []
    if done.kept:
        parts.append(
            f"{_count(done.kept, 'unreferenced data file')} younger than the "
            f"{_duration(DEFAULT_GC_GRACE)} grace period left (a write may be creating the "
            "dataset anew); gc of a new dataset of that name removes them"
        )
    if done.foreign:
        parts.append(
            f"{_count(done.foreign, 'referenced file')} under other datasets' prefixes left "
            "(they belong to those datasets)"
        )
    return DeleteResult(
        dataset_uuid=dataset_uuid,
        version=done.version,
        deleted=tuple(done.deleted),
        kept=tuple(done.kept),
        foreign=tuple(done.foreign),
        reason="; ".join(parts) if parts else None,
    )


# -- indices ------------------------------------------------------------------


def build_index(
    store: StoreLike,
    dataset_uuid: str,
    columns: str | Sequence[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> IndexResult:
    """Build secondary indices on ``columns`` over every file, as one commit.

    An existing index on a column is rebuilt.  Reads each data file's
    columns once; a concurrent commit makes it raise ``CommitConflictError``
    (rerun it).  Later writes keep the index up to date.
    """
    resolved = resolve_store(store, storage_options)
    cols = _columns(columns)
    snapshot = write.build_indices(resolved, dataset_uuid, list(cols))
    return IndexResult(dataset_uuid, cols, snapshot, committed=True)


def drop_index(
    store: StoreLike,
    dataset_uuid: str,
    columns: str | Sequence[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> IndexResult:
    """Remove the secondary indices of ``columns``, as one commit.

    Filters on the columns still work (by file statistics and reading),
    but no longer prune by the index, and ``delete_scope`` can no longer
    name them.  The index files stay for older snapshots until gc.  A column
    without an index commits nothing (``reason`` says so); a column the
    dataset does not have is an ``InvalidArgumentError``.
    """
    resolved = resolve_store(store, storage_options)
    cols = _columns(columns)
    base = committer.load(resolved, dataset_uuid)
    names = base.schema.names if base.schema is not None else []
    unknown = [c for c in cols if c not in names]
    if unknown:
        raise InvalidArgumentError(
            f"dataset {dataset_uuid!r} has no columns {unknown}; its columns: {names}"
        )
    indexed = [c for c in cols if c in base.indices]
    if not indexed:
        return IndexResult(
            dataset_uuid,
            cols,
            Snapshot.of(base.commit),
            committed=False,
            reason=f"dataset {dataset_uuid!r} has no secondary index on {list(cols)} "
            f"(its indices: {sorted(base.indices)})",
        )
    change = Change(operation="drop_index", drop_indices=indexed)
    snapshot = committer.commit(resolved, dataset_uuid, change, base=base)
    committed = snapshot.version > base.version and snapshot.operation == "drop_index"
    missing = [c for c in cols if c not in indexed]
    reason = None
    if not committed:
        reason = f"the indices on {indexed} were dropped concurrently; nothing was committed"
    elif missing:
        reason = f"{missing} had no index"
    return IndexResult(dataset_uuid, cols, snapshot, committed=committed, reason=reason)


def _columns(columns: str | Sequence[str]) -> tuple[str, ...]:
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    if not cols or not all(isinstance(c, str) for c in cols):
        raise InvalidArgumentError(
            f"columns must be a column name or a non-empty list of names, got {columns!r}"
        )
    return cols


# -- listing ------------------------------------------------------------------


def list_datasets(
    store: StoreLike, *, storage_options: dict[str, Any] | None = None
) -> DatasetList:
    """The uuids of the datasets in a store, sorted.

    Found by one listing of the store root: every view
    (``<uuid>.by-dataset-metadata.json`` or ``.msgpack.zstd``), and every
    ``<uuid>/`` directory with a snapshot log but no view (its creator died
    before writing the view: the dataset exists).  Deleted datasets are
    skipped, even when a deletion killed part-way left objects.  Costs one
    LIST of the root, one LIST per directory without a view, and the reads
    that tell existence (the view, and the probe of the next log entry).
    """
    resolved = resolve_store(store, storage_options)
    views, directories = _top_level(resolved)
    found: set[str] = set()
    for name in views:
        for suffix in (keys.METADATA_SUFFIX, keys.MSGPACK_SUFFIX):
            uuid = name[: -len(suffix)]
            if name.endswith(suffix) and uuid and keys.UUID_RE.fullmatch(uuid):
                found.add(uuid)
    without_view = sorted(
        d
        for d in directories
        if d not in found and keys.UUID_RE.fullmatch(d) and committer.log_versions(resolved, d)
    )
    candidates = sorted(found | set(without_view))
    with ThreadPoolExecutor(max_workers=8) as pool:
        live = dict(zip(candidates, pool.map(lambda u: committer.exists(resolved, u), candidates)))
    return DatasetList(
        uuids=tuple(u for u in candidates if live[u]),
        without_view=tuple(u for u in without_view if live[u]),
        deleted=tuple(u for u in candidates if not live[u]),
    )


def _top_level(store: Store) -> tuple[list[str], list[str]]:
    """Names of the objects and of the directories directly under the store root."""
    fs, root = store.fs, store.root
    with store._translate(""):  # backend errors become StoreError, without secrets
        try:
            fs.invalidate_cache(root)
            entries = fs.ls(root, detail=True)
        except FileNotFoundError:
            return [], []
    objects, directories = [], []
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "directory":
            directories.append(name)
        else:
            objects.append(name)
    return objects, directories


# -- wording ------------------------------------------------------------------


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _versions(versions: Sequence[int]) -> str:
    shown = ", ".join(map(str, versions[:5])) + (", ..." if len(versions) > 5 else "")
    return f"version {shown}" if len(versions) == 1 else f"{len(versions)} versions ({shown})"


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{span.total_seconds():g} s"


def _cutoff_text(older_than: datetime | timedelta | None) -> str:
    if isinstance(older_than, timedelta):
        return f"{_duration(older_than)} ago"
    if isinstance(older_than, datetime):
        stamp = older_than if older_than.tzinfo else older_than.replace(tzinfo=timezone.utc)
        return stamp.isoformat()
    return "now"
