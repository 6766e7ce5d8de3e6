"""The only code that writes dataset metadata: the snapshot log and the view.

Protocol (details and failure cases in ``docs/format.md``):

1. A writer reads the latest state: the view ``<uuid>.by-dataset-metadata.json``
   says version N; one probe of ``<uuid>/_ktk/log/<N+1>.json`` confirms nothing
   newer exists (or rolls forward past a view that lags behind the log).
2. It builds the next state from that base (index files are written under
   fresh keys first) and creates log entry N+1 with put-if-absent.  That
   write is the linearisation point: exactly one writer wins version N+1.
3. A loser re-reads, checks whether the winner touched what it depends on
   (``CommitConflictError``), rebases, and retries with backoff.
4. The winner rewrites the view (and ``_common_metadata`` when the schema
   changed), then re-checks the log so a slower writer's stale view is
   always replaced by the newest one.

Log entries hold the full state, so any version is one read away.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import threading
import time
import uuid as uuidlib
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from .errors import (
    CommitConflictError,
    CommitInDoubtError,
    CorruptMetadataError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidArgumentError,
    KtkError,
    SchemaMismatchError,
    StoreError,
    ViewLagWarning,
)
from .spec import index as spec_index
from .spec import keys, manifest
from .spec.metadata import (
    EXTENSION_KEY,
    TOMBSTONE_OPERATION,
    CommitInfo,
    DatasetMetadata,
    FileEntry,
    IndexSegment,
    is_own_key,
)
from .spec.schema import (
    common_metadata_bytes,
    fits,
    merge_schemas,
    schema_from_common_metadata,
)
from .storage import Store

WRITER_ID = uuidlib.uuid4().hex[:12]
MAX_ATTEMPTS = 40


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a dataset.

    ``files_added`` / ``rows_added`` count the files the commit wrote and
    their rows, ``files_removed`` / ``rows_removed`` the files it dropped from
    the dataset and their rows (``None``: unknown, e.g. files plateau wrote
    without row counts, or snapshots committed before ``rows_removed`` was
    recorded).

    ``delete_scope`` works on whole files, as in kartothek: a scope on a
    partition column removes that partition's files, and a scope on a
    secondary-index column removes *every file that holds the value*, with
    all the other rows in those files.  ``rows_removed`` says how many rows
    went.  Compaction rewrites rows without changing them: it reports
    ``files_added`` new files, ``files_removed`` old ones, and
    ``rows_added == rows_removed == 0``.
    """

    version: int
    timestamp: datetime
    operation: str
    files_added: int
    files_removed: int
    rows_added: int | None
    rows_removed: int | None = None

    @classmethod
    def of(cls, info: CommitInfo) -> Snapshot:
        """The snapshot a commit record describes."""
        return cls(
            info.version,
            info.timestamp,
            info.operation,
            info.files_added,
            info.files_removed,
            info.rows_added,
            info.rows_removed,
        )


# -- reading --------------------------------------------------------------------


def _parse(raw: bytes, source: str, store: Store | None = None) -> DatasetMetadata:
    return DatasetMetadata.from_json(
        raw, source=source, loader=None if store is None else segment_loader(store)
    )


#: decoded manifest segments (immutable, so a process reads each once): (store url, key) -> table
_SEGMENTS: dict[tuple[str, str], pa.Table] = {}
_SEGMENT_CACHE_ROWS = 4_000_000
_SEGMENTS_LOCK = threading.Lock()


def read_segment(store: Store, segment: manifest.Segment) -> pa.Table:
    """The table of a manifest segment; a missing or damaged one names the key and the fix."""
    cache_key = (store.url, segment.key)
    with _SEGMENTS_LOCK:
        cached = _SEGMENTS.get(cache_key)
    if cached is not None:
        return cached
    try:
        raw = store.get(segment.key)
    except FileNotFoundError as exc:
        raise StoreError(
            f"manifest segment {segment.key!r} is missing from {store.url!r}; "
            f"{check_hint(store, segment.key.split('/', 1)[0])}"
        ) from exc
    table = manifest.decode(raw, segment.key)
    if table.num_rows != segment.files:
        raise CorruptMetadataError(
            f"manifest segment {segment.key!r} lists {table.num_rows} files, its root says "
            f"{segment.files}; {check_hint(store, segment.key.split('/', 1)[0])}"
        )
    with _SEGMENTS_LOCK:
        if sum(t.num_rows for t in _SEGMENTS.values()) + table.num_rows > _SEGMENT_CACHE_ROWS:
            _SEGMENTS.clear()
        _SEGMENTS[cache_key] = table
    return table


class SegmentLoader:
    """Reads a store's manifest segments: whole (cached), or only the row groups a filter needs."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, segment: manifest.Segment) -> pa.Table:
        return read_segment(self.store, segment)

    def part(self, segment: manifest.Segment, expression: Any) -> pa.Table:
        """The rows of ``segment`` matching ``expression`` (on its partition columns).

        A cached segment is filtered in memory; otherwise Arrow reads only the
        row groups whose statistics can match (ranged reads on object stores),
        which is what a selective read of a large dataset costs.
        """
        with _SEGMENTS_LOCK:
            cached = _SEGMENTS.get((self.store.url, segment.key))
        if cached is None and segment.files > manifest.ROW_GROUP:
            table = read_parquet_part(self.store, segment.key, expression)
            if table is not None:
                try:
                    manifest.check_table(table, segment.key)
                    return table
                except CorruptMetadataError:
                    pass  # the whole read names the damage
        return self(segment).filter(expression)


def read_parquet_part(store: Store, key: str, expression: Any) -> pa.Table | None:
    """The rows of parquet object ``key`` matching ``expression``, from the row groups whose
    statistics can match (ranged reads on object stores); ``None`` if that read fails (the
    caller reads the object whole, which names the damage)."""
    import pyarrow.dataset as ds

    try:
        source = ds.dataset(store.path(key), filesystem=store.arrow_filesystem(), format="parquet")
        return source.to_table(filter=expression)
    except (pa.ArrowException, OSError, ValueError, TypeError):
        return None


def segment_loader(store: Store) -> SegmentLoader:
    return SegmentLoader(store)


def load_view(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """The view as stored (JSON, else msgpack), without consulting the log."""
    raw = store.get_or_none(keys.metadata_key(dataset_uuid))
    if raw is not None:
        view = _parse(raw, keys.metadata_key(dataset_uuid), store)
    else:
        raw = store.get_or_none(keys.msgpack_metadata_key(dataset_uuid))
        if raw is None:
            return None
        view = DatasetMetadata.from_msgpack(raw, source=keys.msgpack_metadata_key(dataset_uuid))
    if view.uuid != dataset_uuid:
        raise CorruptMetadataError(
            f"the view {keys.metadata_key(dataset_uuid)!r} describes dataset {view.uuid!r}: it "
            f"was copied from another dataset; restore it or run `ktk check STORE {dataset_uuid}`"
        )
    return view


def parse_entry(
    raw: bytes, dataset_uuid: str, version: int, store: Store | None = None
) -> DatasetMetadata:
    """A log entry, checked against its key: a copied or misnumbered entry is corrupt.

    Rolling forward trusts that entry ``N`` holds version ``N``; an entry that
    says otherwise would make every reader loop or travel to the wrong state.
    """
    key = keys.log_key(dataset_uuid, version)
    meta = _parse(raw, key, store)
    if meta.uuid != dataset_uuid:
        raise CorruptMetadataError(
            f"log entry {key!r} belongs to dataset {meta.uuid!r}: it was copied from another "
            f"dataset; remove it (`ktk check STORE {dataset_uuid}` lists the damage)"
        )
    if not meta.managed or meta.version != version:
        raise CorruptMetadataError(
            f"log entry {key!r} records version {meta.version if meta.managed else None!r}, "
            f"not {version}; the log is damaged (`ktk check STORE {dataset_uuid}` lists it)"
        )
    return meta


def read_entry(store: Store, dataset_uuid: str, version: int) -> DatasetMetadata | None:
    """Log entry ``version``, or ``None`` if there is none."""
    raw = store.get_or_none(keys.log_key(dataset_uuid, version))
    return None if raw is None else parse_entry(raw, dataset_uuid, version, store)


def _check_follows(entry: DatasetMetadata, previous: DatasetMetadata) -> None:
    """Entry ``N+1`` must have been built on entry ``N``: else the log forked or has a gap."""
    parent, token = entry.commit.parent, previous.commit.token
    if parent and token and parent != token:
        key = keys.log_key(entry.uuid, entry.version)
        raise CorruptMetadataError(
            f"log entry {key!r} was not built on version {previous.version} of dataset "
            f"{entry.uuid!r}: the log has a gap or a fork (an entry was deleted or replaced); "
            f"run `ktk check STORE {entry.uuid}`"
        )


def load_latest(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """The newest committed state, or ``None`` if the dataset does not exist.

    Two reads in the common case: the view, and the probe for the next log entry.
    Existence is decided by the log: a committed entry is visible even when its
    writer died before the view was written.
    """
    keys.validate_uuid(dataset_uuid)
    started = time.monotonic()
    meta = _load_latest(store, dataset_uuid)
    return None if meta is None else replace(meta, loaded_at=started)


#: a reader first fetches this much of the view: all of a small (eager) one, or the
#: start of a large one, whose leading extension says whether the view is lazy
VIEW_PREFIX = 1024 * 1024


def _lazy_view_version(prefix: bytes) -> int | None:
    """The version of a lazy view, read from its first bytes; ``None``: not a lazy view."""
    lead = b'{"' + EXTENSION_KEY.encode() + b'":'
    if not prefix.startswith(lead):
        return None
    try:
        ext, _ = json.JSONDecoder().raw_decode(prefix.decode("utf-8", "replace"), len(lead))
        if isinstance(ext, dict) and ext.get("lazy") is True:
            return int(ext["commit"]["version"])
    except (ValueError, KeyError, TypeError):
        return None
    return None


def _fast_view(store: Store, dataset_uuid: str) -> DatasetMetadata | int | None:
    """The view, or the version of a lazy view (whose files the reader does not need)."""
    key = keys.metadata_key(dataset_uuid)
    prefix = store.get_prefix(key, VIEW_PREFIX)
    if prefix is None:
        return load_view(store, dataset_uuid)  # msgpack, or none
    lazy = _lazy_view_version(prefix)
    if lazy is not None:
        return lazy
    raw = prefix if len(prefix) < VIEW_PREFIX else store.get(key)
    view = _parse(raw, key, store)
    if view.uuid != dataset_uuid:
        return load_view(store, dataset_uuid)  # raises, naming the copy
    return view


def read_head(store: Store, dataset_uuid: str, at_least: int) -> DatasetMetadata | None:
    """The head (a copy of the newest root of a lazily viewed dataset), if not older.

    A head older than ``at_least`` (its write failed after a newer view was
    refreshed) or missing gives way to log entry ``at_least``; rolling
    forward from either finds the newest entry.
    """
    key = keys.head_key(dataset_uuid)
    raw = store.get_or_none(key)
    if raw is not None:
        head = _parse(raw, key, store)
        if head.uuid == dataset_uuid and head.managed and head.version >= at_least:
            return head
    return read_entry(store, dataset_uuid, at_least)


def _past_lazy_view(store: Store, dataset_uuid: str, view_version: int) -> DatasetMetadata | None:
    """The newest state of a dataset whose view is lazy (at ``view_version``)."""
    start = read_head(store, dataset_uuid, view_version)
    if start is None:
        return _load_from_log_only(store, dataset_uuid)
    latest = _roll_forward(store, dataset_uuid, start)
    return None if latest is None else replace(latest, view_version=view_version)


def _load_latest(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    view = _fast_view(store, dataset_uuid)
    if isinstance(view, int):
        return _past_lazy_view(store, dataset_uuid, view)
    if view is None:
        return _load_from_log_only(store, dataset_uuid)
    if view.managed:
        return _roll_forward(store, dataset_uuid, view)
    # a view without our extension: written by plateau/kartothek
    if not _has_log(store, dataset_uuid):
        return _with_schema(store, view)  # never managed by us: version 0
    return _reconcile_foreign_view(store, dataset_uuid, view)


def exists(store: Store, dataset_uuid: str) -> bool:
    """Whether the dataset exists: :func:`load_latest` would find a state.

    A dataset whose metadata is damaged exists (it is there to be repaired);
    one whose log ends in a tombstone does not.  A view plateau wrote always
    describes a dataset, so it costs one read; a view of ours, the read of the
    view and the probe of the next log entry.
    """
    keys.validate_uuid(dataset_uuid)
    try:
        view = _fast_view(store, dataset_uuid)
        if isinstance(view, int):
            return _past_lazy_view(store, dataset_uuid, view) is not None
        if view is None:
            return _load_from_log_only(store, dataset_uuid) is not None
        if not view.managed:
            return True
        return _roll_forward(store, dataset_uuid, view) is not None
    except CorruptMetadataError:
        return True


def _latest_logged(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """The newest log entry's state (``None``: no log, or the dataset was deleted)."""
    versions = log_versions(store, dataset_uuid)
    if not versions:
        return None
    top = read_entry(store, dataset_uuid, versions[-1])
    if top is None:  # expired or deleted since the listing: list again
        return _latest_logged(store, dataset_uuid)
    return _roll_forward(store, dataset_uuid, top)


def _next_stamp(previous: DatasetMetadata) -> datetime:
    """Commit timestamps strictly increase with the version (``as_of`` bisects them)."""
    return max(datetime.now(timezone.utc), previous.commit.timestamp + timedelta(microseconds=1))


def _new_token() -> str:
    return uuidlib.uuid4().hex


def _reconcile_foreign_view(
    store: Store, dataset_uuid: str, view: DatasetMetadata
) -> DatasetMetadata | None:
    """plateau rewrote the view of a dataset we manage: adopt it when that is safe.

    Safe means plateau's state keeps every file of our latest snapshot (it
    appended on top of it); the result is that state as the next version, which
    our next commit writes to the log.  Anything else could be a lost update of
    ours, so it is reported, not merged.
    """
    latest = _latest_logged(store, dataset_uuid)
    if latest is None:  # our log ends in a deletion: plateau's view is a new dataset
        return _with_schema(store, view)
    if set(view.files) == set(latest.files):
        return latest  # our commit died before it rewrote the view
    if set(view.files) >= set(latest.files):
        warnings.warn(
            f"dataset {dataset_uuid!r} was appended to by plateau/kartothek after ktk-arrow "
            f"version {latest.version}; its state is adopted as version {latest.version + 1}",
            stacklevel=3,
        )
        added = [label for label in view.files if label not in latest.files]
        files = {label: latest.files.get(label, entry) for label, entry in view.files.items()}
        return replace(
            view,
            files=files,
            schema=latest.schema,
            schema_evolved=latest.schema_evolved,
            commit=CommitInfo(
                latest.version + 1,
                _next_stamp(latest),
                "external",
                len(added),
                token=_new_token(),
                parent=latest.commit.token,
            ),
            managed=False,
        )
    raise CorruptMetadataError(
        f"dataset {dataset_uuid!r} was changed by plateau/kartothek after ktk-arrow version "
        f"{latest.version}, and that change dropped files of version {latest.version}: it may "
        "have lost a concurrent ktk-arrow commit. Inspect ka.history() and ka.dataset(version=N); "
        "to accept plateau's state as the newest version call "
        "ktk_arrow.commit.adopt_view(store, uuid)"
    )


def adopt_view(store: Store, dataset_uuid: str) -> Snapshot:
    """Commit the view plateau/kartothek last wrote as the newest version, as it is."""
    view = load_view(store, dataset_uuid)
    if view is None:
        raise DatasetNotFoundError(f"dataset {dataset_uuid!r} has no metadata view to adopt")
    latest = _latest_logged(store, dataset_uuid)
    if view.managed or latest is None:
        return Snapshot.of(load(store, dataset_uuid).commit)
    adopted = replace(
        _with_schema(store, view),
        commit=CommitInfo(
            latest.version + 1,
            _next_stamp(latest),
            "adopt",
            token=_new_token(),
            parent=latest.commit.token,
        ),
        managed=True,
    )
    raw = adopted.to_json()
    if not put_entry(store, keys.log_key(dataset_uuid, adopted.version), raw):
        raise CommitConflictError(f"dataset {dataset_uuid!r} changed while adopting; retry")
    _publish(store, dataset_uuid, adopted, latest, raw)
    return Snapshot.of(adopted.commit)


def _roll_forward(store: Store, dataset_uuid: str, meta: DatasetMetadata) -> DatasetMetadata | None:
    """The newest state at or after ``meta``; ``None`` if the log ends in a deletion."""
    while True:
        if meta.commit.is_tombstone:
            return None
        entry = read_entry(store, dataset_uuid, meta.version + 1)
        if entry is None:
            return _with_schema(store, meta)
        _check_follows(entry, meta)
        meta = replace(entry, view_current=False)


def _load_from_log_only(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """No view: the log alone says whether the dataset exists (its creator may have died).

    One exception: plateau's ``delete_dataset`` removes the view and every
    file it lists but not our log.  A latest entry whose first file is gone was
    deleted that way (our writers never delete a file an entry references).
    """
    meta = _latest_logged(store, dataset_uuid)
    if meta is None:
        return None
    if meta.files:
        # a file of the dataset's own prefix if there is one: another dataset's
        # file may have been deleted by that dataset's maintenance
        own = [label for label, e in meta.files.items() if is_own_key(dataset_uuid, e.key)]
        first = meta.files[min(own or meta.files)].key
        if not store.exists(first):
            return None
    return replace(meta, view_current=False)


def _with_schema(store: Store, meta: DatasetMetadata) -> DatasetMetadata:
    """Datasets written by plateau carry no schema in their metadata: read ``_common_metadata``."""
    if meta.schema is not None:
        return meta
    key = keys.common_metadata_key(meta.uuid, meta.table)
    raw = store.get_or_none(key)
    if raw is None and not meta.files and meta.table == keys.TABLE:
        # plateau names the table of a dataset without files nowhere but in the
        # path of its schema file: one listing finds it, as plateau does
        for info in store.list(f"{meta.uuid}/"):
            parts = info.key.split("/")
            if len(parts) == 3 and parts[2] == keys.COMMON_METADATA and parts[1] != keys.TABLE:
                meta, key = replace(meta, table=parts[1]), info.key
                raw = store.get_or_none(key)
                break
    if raw is None:
        if meta.files:
            raise CorruptMetadataError(
                f"dataset {meta.uuid!r} has data files but no schema file {key!r}"
            )
        return meta
    return replace(meta, schema=schema_from_common_metadata(raw, source=key))


def log_versions(store: Store, dataset_uuid: str) -> list[int]:
    prefix = f"{dataset_uuid}/{keys.LOG_DIR}"
    versions = []
    for info in store.list(prefix):
        name = info.key.rsplit("/", 1)[-1]
        if name.endswith(".json") and name[:-5].isdigit():
            versions.append(int(name[:-5]))
    return sorted(versions)


def load_version(store: Store, dataset_uuid: str, version: int) -> DatasetMetadata:
    """The state as of snapshot ``version``: one read."""
    keys.validate_uuid(dataset_uuid)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidArgumentError(f"version must be a non-negative int, got {version!r}")
    entry = read_entry(store, dataset_uuid, version)
    if entry is None or entry.commit.is_tombstone:
        latest = load_latest(store, dataset_uuid)
        if latest is None:
            raise DatasetNotFoundError(f"dataset {dataset_uuid!r} does not exist in {store.url!r}")
        if latest.version == version:
            return latest
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} has no version {version} (latest is {latest.version}; "
            "it may have been expired); ka.history() lists the versions kept"
        )
    return _with_schema(store, entry)


def load_as_of(store: Store, dataset_uuid: str, as_of: datetime) -> DatasetMetadata:
    """The newest state committed at or before ``as_of``."""
    if not isinstance(as_of, datetime):
        raise InvalidArgumentError(f"as_of must be a datetime, got {as_of!r}")
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    latest = load_latest(store, dataset_uuid)
    if latest is None:
        raise DatasetNotFoundError(f"dataset {dataset_uuid!r} does not exist in {store.url!r}")
    if latest.commit.timestamp <= as_of:
        return latest
    versions = log_versions(store, dataset_uuid)
    # commit timestamps strictly increase with the version, so bisect
    lo, hi, best = 0, len(versions) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        meta = load_version(store, dataset_uuid, versions[mid])
        if meta.commit.timestamp <= as_of:
            best, lo = meta, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise _nothing_as_of(store, dataset_uuid, as_of, versions)
    return best


def load(
    store: Store,
    dataset_uuid: str,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
) -> DatasetMetadata:
    """The requested state of a dataset; ``DatasetNotFoundError`` if there is none."""
    keys.validate_uuid(dataset_uuid)
    if version is not None and as_of is not None:
        raise InvalidArgumentError("pass either version= or as_of=, not both")
    if version is not None:
        return load_version(store, dataset_uuid, version)
    if as_of is not None:
        return load_as_of(store, dataset_uuid, as_of)
    meta = load_latest(store, dataset_uuid)
    if meta is None:
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} does not exist in {store.url!r}; check the uuid and store"
        )
    return meta


def history(store: Store, dataset_uuid: str) -> list[Snapshot]:
    """Every retained snapshot, oldest first."""
    latest = load(store, dataset_uuid)
    versions = log_versions(store, dataset_uuid)
    if not versions:
        return [Snapshot.of(latest.commit)]
    # readers stop at the first missing entry: newer ones beyond a gap are unreachable
    gaps = sorted(set(range(latest.version + 1, versions[-1])) - set(versions))
    if gaps:
        missing = gaps[0]
        raise CorruptMetadataError(
            f"log entry {keys.log_key(dataset_uuid, missing)!r} of dataset {dataset_uuid!r} is "
            f"missing, so versions {missing + 1}..{versions[-1]} are unreachable (readers see "
            f"version {latest.version}); run `ktk check STORE {dataset_uuid}`"
        )

    def read(v: int) -> Snapshot | None:
        entry = read_entry(store, dataset_uuid, v)  # None: expired since the listing
        return None if entry is None else Snapshot.of(entry.commit)

    with ThreadPoolExecutor(max_workers=8) as pool:
        snaps = [s for s in pool.map(read, versions) if s is not None]
    # a deleted and re-created dataset starts after its tombstone
    tombstones = [s.version for s in snaps if s.operation == TOMBSTONE_OPERATION]
    start = tombstones[-1] if tombstones else -1
    return [s for s in snaps if start < s.version <= latest.version]


# -- writing --------------------------------------------------------------------


@dataclass
class Change:
    """What a writer wants to commit; resolved against the newest state at commit time."""

    operation: str
    add: Sequence[FileEntry] = ()
    #: labels to remove, computed from the state the commit is applied to
    remove: Callable[[DatasetMetadata], Collection[str]] | None = None
    #: index values of the added files: column -> value -> labels
    index_delta: Mapping[str, spec_index.IndexMap] = field(default_factory=dict)
    #: complete new indices (index builds), valid only for the files of ``read_version``
    index_full: Mapping[str, spec_index.IndexMap] = field(default_factory=dict)
    schema: pa.Schema | None = None
    partition_keys: Sequence[str] | None = None
    user_metadata: Mapping[str, Any] | None = None
    #: the dataset may be created by this change (it did not exist when the writer read it)
    create: bool = False
    #: the dataset must not exist (``mode="create"``): a concurrent create wins, this fails
    exclusive: bool = False
    #: the version the writer read; None for a blind append
    read_version: int | None = None
    #: labels this change depends on; a concurrent change to them is a conflict
    depends_on: Callable[[DatasetMetadata], Collection[str]] | None = None
    #: columns whose secondary index this change removes (their index files stay for gc)
    drop_indices: Collection[str] = ()
    #: the added files hold exactly the rows of the removed ones (compaction):
    #: the snapshot reports ``rows_added = rows_removed = 0``
    rewrite: bool = False
    #: the table name of a dataset this change creates (``None``: kartothek's
    #: ``"table"``); an existing dataset keeps its own
    table: str | None = None
    #: dataset settings to set (merged into the current ones; a value of None unsets)
    settings: Mapping[str, Any] | None = None
    #: ``(rows_added, rows_removed)`` when they are not the files' row counts: a
    #: row-level rewrite (delete_rows, upsert) copies kept rows into new files, and
    #: reports only the rows it inserted and the rows it deleted or replaced
    row_counts: tuple[int, int] | None = None
    #: ``"merge"``: ``schema`` evolves the dataset's (added columns, widened types),
    #: merged with the newest schema at commit time; ``None``: it must fit the newest
    schema_mode: str | None = None


_UNKNOWN: Any = object()
_IN_DOUBT = "_ktk_commit_in_doubt"


def mark_in_doubt(exc: BaseException) -> None:
    """Record that ``exc`` struck after a commit may have happened: its files must stay."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _IN_DOUBT, True)


def may_discard(exc: BaseException) -> bool:
    """Whether a write that failed with ``exc`` may delete its files.

    Only when its commit provably did not happen: after the log entry's PUT
    was sent, a failure (an error, a lost answer, Ctrl-C) leaves the entry
    possibly written, and deleting its files would break the dataset.
    """
    return not (isinstance(exc, CommitInDoubtError) or getattr(exc, _IN_DOUBT, False))


def commit(store: Store, dataset_uuid: str, change: Change, *, base: Any = _UNKNOWN) -> Snapshot:
    """Commit ``change`` as the next snapshot, retrying on concurrent appends.

    ``base`` is the state the writer already read (``None``: no dataset yet).
    The first attempt builds on it without reading again; the put-if-absent of
    the log entry tells whether it was still the newest.  If this raises,
    ``may_discard(exc)`` says whether the caller may delete the change's files.
    """
    keys.validate_uuid(dataset_uuid)
    if base is not _UNKNOWN and base is not None and _too_old(base):
        base = _UNKNOWN
    read_state: DatasetMetadata | None = None
    if change.read_version is not None and change.depends_on is not None:
        if base is not _UNKNOWN and base is not None and base.version == change.read_version:
            read_state = base
        else:
            read_state = load_version(store, dataset_uuid, change.read_version)
    planned_create = change.create and (base is _UNKNOWN or base is None)
    delay = 0.005
    written: list[str] = []  # index files of this commit, protected from gc meanwhile
    # the index segments of the change's own files, written once for every attempt
    reuse: dict[str, IndexSegment] = {}
    try:
        for _attempt in range(MAX_ATTEMPTS):
            create_at = 0
            if base is _UNKNOWN or base is None:
                # "no dataset" is only believed as of a listing taken before it: the
                # new dataset takes the version after every entry seen then
                # (a deleted dataset's log may remain), so a create racing it
                # competes for the same key
                logged = log_versions(store, dataset_uuid)
                create_at = logged[-1] + 1 if logged else 0
                base = load_latest(store, dataset_uuid)
            _check_preconditions(dataset_uuid, base, change, read_state, store, planned_create)
            new = _apply(store, dataset_uuid, base, change, written, create_at, reuse)
            if base is not None and _is_noop(base, new, change):
                # nothing to add, remove or change: no version is committed for it
                _discard_index_files(store, base, new, reuse)
                return Snapshot.of(base.commit)
            raw = new.to_json()
            try:
                won = _enter_base(store, dataset_uuid, base) and put_entry(
                    store, keys.log_key(dataset_uuid, new.version), raw
                )
                if won:
                    _publish(store, dataset_uuid, new, base, raw)
                    return Snapshot.of(new.commit)
            except BaseException as exc:
                mark_in_doubt(exc)
                raise
            # proven: the entry at that version is another writer's
            _discard_index_files(store, base, new, reuse)
            base = _UNKNOWN
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
    finally:
        IN_FLIGHT.discard(store, written)
    raise CommitConflictError(
        f"gave up committing {change.operation!r} to dataset {dataset_uuid!r} after "
        f"{MAX_ATTEMPTS} attempts: other writers keep winning; retry later"
    )


def _is_noop(base: DatasetMetadata, new: DatasetMetadata, change: Change) -> bool:
    """Whether ``new`` is ``base`` unchanged: no file, index, schema or metadata differs.

    Such a change (an empty append, a ``delete_scope`` that matches nothing,
    dropping an index that is gone) commits no version.
    """
    same_schema = new.schema is base.schema or (
        new.schema is not None
        and base.schema is not None
        and new.schema.equals(base.schema, check_metadata=True)
    )
    return (
        not change.add
        and len(new.files) == len(base.files)  # nothing added: equal sizes, nothing removed
        and dict(new.indices) == dict(base.indices)
        and new.partition_keys == base.partition_keys
        and dict(new.user_metadata) == dict(base.user_metadata)
        and dict(new.settings) == dict(base.settings)
        and same_schema
    )


def _row_sum(rows: Sequence[int | None]) -> int | None:
    """The total of row counts; ``None`` if any is unknown."""
    return None if any(r is None for r in rows) else sum(r or 0 for r in rows)


#: a base read longer ago is read again before it is committed on (see ``_too_old``)
BASE_MAX_AGE = 60.0


def _too_old(base: DatasetMetadata) -> bool:
    """Whether ``base`` may predate entries that expiry has deleted since.

    Expiry never deletes an entry committed within its grace period.  A base
    read less than that ago therefore has no expired successor, and entry
    ``N+1``, if absent, was never written.  A long write (a Dask job of
    hours) would otherwise create an ``N+1`` that expiry deleted, behind the
    view: a fork that readers never see, reported as a success.
    """
    return time.monotonic() - base.loaded_at > BASE_MAX_AGE


def _enter_base(store: Store, dataset_uuid: str, base: DatasetMetadata | None) -> bool:
    """A state plateau wrote (version 0, or an adopted append) enters the log first.

    ``False`` when another writer logged a different state at that version:
    the base is stale, and the commit must be rebuilt on the newest state.
    """
    if base is None or base.managed:
        return True
    return put_entry(store, keys.log_key(dataset_uuid, base.version), base.to_json())


PUT_ATTEMPTS = 5


def put_entry(store: Store, key: str, raw: bytes) -> bool:
    """Create log entry ``key``: ``True`` if the stored entry is ours, ``False`` if another's.

    A put-if-absent can fail after the store applied it (a 500 or a dropped
    connection after the write; the client's retry then gets 412/409), so a
    refusal or an error is settled by reading the entry back: the commit token
    inside ``raw`` makes it ours byte for byte.  If the store keeps failing,
    ``CommitInDoubtError``: the outcome is unknown and nothing may be deleted.
    """
    error: BaseException | None = None
    sent = False  # an earlier attempt failed and may still have been applied
    delay = 0.05
    for attempt in range(PUT_ATTEMPTS):
        if attempt:
            time.sleep(delay * (1 + random.random()))
            delay *= 2
        try:
            if store.put_if_absent(key, raw):
                return True
            refused = True
        except StoreError as exc:
            error, refused = exc, False
        try:
            found = store.get_or_none(key)
        except StoreError as exc:
            error, sent = exc, True
            continue
        if found is not None:
            return found == raw
        if refused and not sent:
            # another writer's entry was there and is gone (expired since): writing
            # one now would fork the log behind the view; rebuild on the newest state
            return False
        if refused:
            break  # refused by an entry that vanished, after an attempt of ours failed
        sent = True  # failed, and absent: not applied (or not yet); try again
    raise CommitInDoubtError(
        f"store {store.url!r} failed while log entry {key!r} was written, and reading it back "
        f"failed too ({error}); the commit may or may not be in: its files are kept "
        "(gc removes them if it is not); check ka.history() once the store answers"
    ) from error


def _check_preconditions(
    dataset_uuid: str,
    base: DatasetMetadata | None,
    change: Change,
    read_state: DatasetMetadata | None,
    store: Store,
    planned_create: bool = False,
) -> None:
    if change.exclusive and base is not None:
        raise DatasetExistsError(
            f"dataset {dataset_uuid!r} already exists in {store.url!r}; use mode='append' "
            "or mode='overwrite', or pick another dataset_uuid"
        )
    if not change.create and base is None:
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} does not exist in {store.url!r}; create it first"
        )
    if planned_create and base is not None and change.remove is None:
        _check_joins_created(dataset_uuid, base, change)
    if change.read_version is not None and base is not None and base.version != change.read_version:
        if change.depends_on is None or read_state is None:
            raise CommitConflictError(
                f"dataset {dataset_uuid!r} changed from version {change.read_version} to "
                f"{base.version} while {change.operation!r} was running; nothing was committed, "
                "retry the operation"
            )
        before = set(change.depends_on(read_state))
        now = set(change.depends_on(base))
        if before != now:
            raise CommitConflictError(
                f"a concurrent commit (version {base.version}) changed files that "
                f"{change.operation!r} on dataset {dataset_uuid!r} depends on "
                f"({len(before ^ now)} files differ); nothing was committed, retry the operation"
            )
    appending = change.remove is None and not change.index_full
    ours, theirs = change.schema, base.schema if base is not None else None
    if ours is None or theirs is None or ours.equals(theirs, check_metadata=False):
        return
    assert base is not None
    if change.schema_mode == "merge":
        try:
            merge_schemas(theirs, ours, base.partition_keys, what="the data written")
        except SchemaMismatchError as exc:
            raise CommitConflictError(
                f"the schema of dataset {dataset_uuid!r} changed (version {base.version}) while "
                f"{change.operation!r} evolved it, and the two no longer merge: {exc}; nothing "
                "was committed"
            ) from exc
        return
    if appending and not fits(ours, theirs, base.partition_keys):
        # files of an older schema fit an evolved one (they read added columns as null)
        raise CommitConflictError(
            f"the schema of dataset {dataset_uuid!r} changed (a concurrent overwrite?) while "
            "data was appended; nothing was committed, retry the append"
        )


def _check_joins_created(dataset_uuid: str, base: DatasetMetadata, change: Change) -> None:
    """An append planned as a create finds the dataset created concurrently: rebase or conflict.

    Its files join the other writer's dataset only if they are laid out and
    indexed the same way; an index the dataset lacks would miss the other
    writer's files, so that, too, is a conflict rather than a silent gap.
    """
    problems = []
    if change.partition_keys is not None and tuple(change.partition_keys) != base.partition_keys:
        problems.append(
            f"partition_on {list(change.partition_keys)} vs {list(base.partition_keys)}"
        )
    if set(change.index_delta) != set(base.indices):
        problems.append(f"secondary_indices {sorted(change.index_delta)} vs {sorted(base.indices)}")
    if (change.table or keys.TABLE) != base.table:
        problems.append(f"table {change.table or keys.TABLE!r} vs {base.table!r}")
    if problems:
        raise CommitConflictError(
            f"dataset {dataset_uuid!r} was created by a concurrent writer with other settings "
            f"({'; '.join(problems)}); nothing was committed, retry with the dataset's settings"
        )


def _apply(
    store: Store,
    dataset_uuid: str,
    base: DatasetMetadata | None,
    change: Change,
    written: list[str],
    create_at: int,
    reuse: dict[str, IndexSegment] | None = None,
) -> DatasetMetadata:
    now = datetime.now(timezone.utc)
    if base is None:
        if change.schema is None:
            raise InvalidArgumentError("creating a dataset needs a schema")
        base = DatasetMetadata(
            uuid=dataset_uuid,
            partition_keys=tuple(change.partition_keys or ()),
            user_metadata={"creation_time": now.isoformat()},
            commit=CommitInfo(create_at - 1, datetime(1970, 1, 1, tzinfo=timezone.utc), "none"),
            schema=change.schema,
            table=change.table or keys.TABLE,
        )
    if base.commit.timestamp >= now:  # keep timestamps strictly increasing for as_of
        now = base.commit.timestamp + timedelta(microseconds=1)
    removed = set(change.remove(base)) if change.remove is not None else set()
    full_overwrite = change.schema is not None and bool(removed) and len(removed) == len(base.files)
    schema = base.schema
    partition_keys = base.partition_keys
    if change.schema_mode == "merge" and change.schema is not None and base.schema is not None:
        schema = merge_schemas(base.schema, change.schema, base.partition_keys)
    elif (
        change.schema is not None
        and (not base.files or full_overwrite)
        and not (
            # an append of files of an older schema keeps the evolved one
            change.remove is None
            and base.schema is not None
            and fits(change.schema, base.schema, base.partition_keys)
        )
    ):
        schema = change.schema
        if change.partition_keys is not None:
            partition_keys = tuple(change.partition_keys)
    evolved = _files_may_differ(base, change, removed, schema)
    version = base.version + 1
    files: Mapping[str, FileEntry]
    if _lazy_after(base, change):
        files = _lazy_files(
            store, dataset_uuid, base, change, removed, version, written, partition_keys, schema
        )
        indices, index_tail, index_pairs = _lazy_indices(
            store,
            dataset_uuid,
            base,
            change,
            removed,
            files,
            version,
            written,
            schema,
            now,
            {} if reuse is None else reuse,
            full_overwrite,
        )
    else:
        files = {label: entry for label, entry in base.files.items() if label not in removed}
        clash = [e.label for e in change.add if e.label in files]
        if clash:
            raise CorruptMetadataError(f"file labels {clash[:3]} already exist in {dataset_uuid!r}")
        for entry in change.add:
            files[entry.label] = entry
        indices, index_pairs = _new_indices(
            store, dataset_uuid, base, change, removed, files, now, written, schema
        )
        index_tail = {}
    user_metadata = dict(base.user_metadata)
    if change.user_metadata:
        user_metadata.update(change.user_metadata)
    settings = _merged_settings(base.settings, change.settings)
    rows_added = _row_sum([e.rows for e in change.add])
    rows_removed = _row_sum([base.files[label].rows for label in sorted(removed)])
    if change.rewrite:  # compaction: the same rows in other files
        rows_added = rows_removed = 0
    if change.row_counts is not None:
        rows_added, rows_removed = change.row_counts
    info = CommitInfo(
        version=base.version + 1,
        timestamp=now,
        operation=change.operation,
        files_added=len(change.add),
        files_removed=len(removed),
        rows_added=rows_added,
        writer=f"{WRITER_ID}:{os.getpid()}",
        token=_new_token(),
        parent=base.commit.token,
        rows_removed=rows_removed,
    )
    return DatasetMetadata(
        uuid=dataset_uuid,
        partition_keys=partition_keys,
        files=files,
        indices=indices,
        user_metadata=user_metadata,
        table=base.table,
        schema=schema,
        commit=info,
        managed=True,
        settings=settings,
        index_tail=index_tail,
        index_pairs=index_pairs,
        schema_evolved=evolved,
    )


def _files_may_differ(
    base: DatasetMetadata, change: Change, removed: set[str], schema: pa.Schema | None
) -> bool:
    """Whether files of the new state may hold fewer columns or narrower types than ``schema``.

    True once the schema evolved under kept files, or files of an older schema
    joined; false again once no file of before is left.  Engines that take
    one file's schema for all (DuckDB's ``read_parquet``) then unify by name.
    """
    if schema is None:
        return False
    kept = len(removed) < len(base.files)
    if kept and (
        base.schema_evolved or (base.schema is not None and not base.schema.equals(schema))
    ):
        return True
    return bool(change.add) and change.schema is not None and not change.schema.equals(schema)


def _merged_settings(
    current: Mapping[str, Any], changes: Mapping[str, Any] | None
) -> dict[str, Any]:
    settings = dict(current)
    for name, value in (changes or {}).items():
        if value is None:
            settings.pop(name, None)
        else:
            settings[name] = value
    return settings


#: beyond these a dataset's view is refreshed lazily and its roots use segments
EAGER_MAX_FILES = 1000
EAGER_MAX_PAIRS = 100_000
#: a lazy view is refreshed once its cost per commit since the last refresh drops below this
VIEW_BYTES_PER_COMMIT = 64 * 1024
#: about the bytes one file takes in a view, and one (value, file) pair in its indices
VIEW_BYTES_PER_FILE = 250
VIEW_BYTES_PER_PAIR = 10
VIEW_MODES = ("auto", "eager", "lazy")


def _index_pair_count(meta: DatasetMetadata) -> int:
    tails = sum(t.pairs or 0 for tail in meta.index_tail.values() for t in tail)
    return sum(meta.index_pairs.values()) + tails


def is_lazy(meta: DatasetMetadata, extra_files: int = 0, extra_pairs: int = 0) -> bool:
    """Whether the dataset's view is refreshed lazily (and its roots point at segments)."""
    mode = meta.settings.get("view", "auto")
    if mode == "eager":
        return False
    if mode == "lazy":
        return True
    return (
        len(meta.files) + extra_files > EAGER_MAX_FILES
        or _index_pair_count(meta) + extra_pairs > EAGER_MAX_PAIRS
    )


def _lazy_after(base: DatasetMetadata, change: Change) -> bool:
    settings = _merged_settings(base.settings, change.settings)
    probe = replace(base, settings=settings)
    pairs = sum(spec_index.as_index(d).pairs.num_rows for d in change.index_delta.values())
    pairs += sum(spec_index.as_index(d).pairs.num_rows for d in change.index_full.values())
    return is_lazy(probe, len(change.add), pairs)


def _segment_table_of(
    entries: Sequence[FileEntry],
    dataset_uuid: str,
    partition_keys: tuple[str, ...],
    schema: pa.Schema | None,
    table: str,
) -> pa.Table:
    shape = DatasetMetadata(uuid=dataset_uuid, partition_keys=partition_keys, schema=schema)
    return manifest.to_table(
        entries,
        partition_keys,
        schema,
        shape.partition_values,
        keys.table_prefix(dataset_uuid, table) + "/",
    )


def _write_segment(
    store: Store,
    dataset_uuid: str,
    version: int,
    table: pa.Table,
    level: int,
    partition_keys: tuple[str, ...],
    written: list[str],
) -> manifest.Segment:
    key = keys.segment_key(dataset_uuid, version, uuidlib.uuid4().hex[:8])
    IN_FLIGHT.add(store, [key])
    written.append(key)
    store.put(key, manifest.encode(table))
    rows = table.column(manifest.ROWS)
    total = None if rows.null_count else int(pa.compute.sum(rows).as_py() or 0)
    segment = manifest.Segment(
        key, table.num_rows, total, level, manifest.bounds_of(table, partition_keys)
    )
    with _SEGMENTS_LOCK:
        _SEGMENTS[(store.url, key)] = table
    return segment


def _lazy_files(
    store: Store,
    dataset_uuid: str,
    base: DatasetMetadata,
    change: Change,
    removed: set[str],
    version: int,
    written: list[str],
    partition_keys: tuple[str, ...],
    schema: pa.Schema | None,
) -> manifest.LazyFiles:
    """The new snapshot's files as inline ones and segments, writing only what changed.

    An append adds inline files (and, past ``INLINE_MAX``, one segment of
    them); a removal rewrites only the segments that held removed files;
    ``FANIN`` segments of one level are merged into one of the next.
    """
    inline = {label: e for label, e in base.inline_files.items() if label not in removed}
    segments: list[manifest.Segment] = []
    if partition_keys != base.partition_keys:
        # a full overwrite with other partition keys: no segment survives it
        gone = set(base.files) - removed
        if gone:
            raise CorruptMetadataError(
                f"partition keys changed while files {sorted(gone)[:3]} stay"
            )
    else:
        in_segments = removed - set(base.inline_files)
        for segment in base.segments:
            if not in_segments:
                segments.append(segment)
                continue
            table = read_segment(store, segment)
            hit = pa.compute.is_in(
                table.column(manifest.LABEL), value_set=pa.array(sorted(in_segments), pa.string())
            )
            if not pa.compute.any(hit).as_py():
                segments.append(segment)
                continue
            rest = table.filter(pa.compute.invert(hit))
            if rest.num_rows:
                segments.append(
                    _write_segment(
                        store,
                        dataset_uuid,
                        version,
                        rest,
                        manifest.level_of(rest.num_rows),
                        partition_keys,
                        written,
                    )
                )
    for entry in change.add:
        if entry.label in inline:
            raise CorruptMetadataError(
                f"file label {entry.label!r} already exists in {dataset_uuid!r}"
            )
        inline[entry.label] = entry
    if len(inline) > _inline_max(base, change):
        table = _segment_table_of(
            list(inline.values()), dataset_uuid, partition_keys, schema, base.table
        )
        segments.append(
            _write_segment(
                store,
                dataset_uuid,
                version,
                table,
                manifest.level_of(table.num_rows),
                partition_keys,
                written,
            )
        )
        inline = {}

    def merge(group: list[manifest.Segment], floor: int) -> manifest.Segment:
        parts = [read_segment(store, segment) for segment in group]
        merged = manifest.concat(parts, partition_keys, schema)
        level = max(manifest.level_of(merged.num_rows), floor)
        return _write_segment(store, dataset_uuid, version, merged, level, partition_keys, written)

    segments = manifest.merge_tiers(segments, lambda segment: segment.level, merge)
    return manifest.LazyFiles(
        inline, segments, segment_loader(store), keys.table_prefix(dataset_uuid, base.table) + "/"
    )


def _inline_max(base: DatasetMetadata, change: Change) -> int:
    """Files a root lists inline: ``manifest.INLINE_MAX``, or the dataset's ``inline_max``."""
    value = _merged_settings(base.settings, change.settings).get("inline_max")
    if type(value) is int and value >= 0:
        return value
    return manifest.INLINE_MAX


#: index pairs an index segment of level 0 holds at most, divided by ``FANIN``
INDEX_UNIT = 4096


def _index_level(pairs: int) -> int:
    return manifest.level_of(pairs * manifest.INLINE_MAX // INDEX_UNIT)


def _put_index(
    store: Store,
    key: str,
    column: str,
    schema: pa.Schema | None,
    index: spec_index.IndexMap,
    written: list[str],
) -> int:
    value_type = schema.field(column).type if schema is not None else pa.string()
    IN_FLIGHT.add(store, [key])
    written.append(key)
    store.put(key, spec_index.to_parquet(column, value_type, index))
    return int(spec_index.as_index(index).pairs.num_rows)


def _lazy_indices(
    store: Store,
    dataset_uuid: str,
    base: DatasetMetadata,
    change: Change,
    removed: set[str],
    files: manifest.LazyFiles,
    version: int,
    written: list[str],
    schema: pa.Schema | None,
    now: datetime,
    reuse: dict[str, IndexSegment],
    full_overwrite: bool,
) -> tuple[
    dict[str, str | Mapping[Any, list[str]]], dict[str, tuple[IndexSegment, ...]], dict[str, int]
]:
    """Index changes as new segments: a commit writes the index of its own files only.

    Removed files stay in older index segments; lookups intersect with the
    snapshot's files, and a view refresh writes whole, exact indices.
    """
    dropped = set(change.drop_indices)
    indices: dict[str, str | Mapping[Any, list[str]]] = {}
    tails: dict[str, tuple[IndexSegment, ...]] = {}
    pairs: dict[str, int] = {}
    if not full_overwrite:
        indices = {c: r for c, r in base.indices.items() if c not in dropped}
        tails = {c: t for c, t in base.index_tail.items() if c in indices}
        pairs = {c: n for c, n in base.index_pairs.items() if c in indices}
    kept = len(base.files) - len(removed) if not full_overwrite else 0
    columns = (set(indices) | set(change.index_delta) | set(change.index_full)) - dropped
    if not len(files):
        # no file left: every index stays defined, as an empty index file
        empty: dict[str, str | Mapping[Any, list[str]]] = {}
        for column in sorted(columns):
            if column not in indices and column not in change.index_full and kept:
                continue
            if column in indices and not removed and not tails.get(column):
                empty[column] = indices[column]  # empty before, and nothing changed
                continue
            key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
            empty[column] = key
            pairs[column] = _put_index(store, key, column, schema, spec_index.Index(), written)
        return empty, {}, {c: pairs[c] for c in empty if c in pairs}
    for column in sorted(columns):
        if column in change.index_full:
            if change.read_version is not None and change.read_version != base.version:
                raise CommitConflictError(
                    f"dataset {dataset_uuid!r} changed while the index on {column!r} was built"
                )
            full = spec_index.as_index(change.index_full[column]).only_labels(list(files))
            key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
            indices[column] = key
            pairs[column] = _put_index(store, key, column, schema, full, written)
            tails.pop(column, None)
            continue
        if column not in indices and kept:
            continue  # dropped concurrently (see _new_indices)
        if column not in change.index_delta and change.add:
            raise InvalidArgumentError(
                f"dataset {dataset_uuid!r} has a secondary index on {column!r}; "
                "the new data must be indexed on it too"
            )
        delta = spec_index.as_index(change.index_delta.get(column, {}))
        if not delta and column in indices:
            continue
        if column not in indices:  # new to the dataset: written even if empty (all null)
            key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
            indices[column] = key
            pairs[column] = _put_index(store, key, column, schema, delta, written)
            continue
        own = reuse.get(column)
        if own is None:  # an attempt that lost the race keeps it for the next one
            key = keys.index_segment_key(dataset_uuid, column, version, uuidlib.uuid4().hex[:8])
            count = _put_index(store, key, column, schema, delta, written)
            own = reuse[column] = IndexSegment(key, count, _index_level(count))

        def merge(group: list[IndexSegment], floor: int, column: str = column) -> IndexSegment:
            merged = spec_index.Index()
            for segment in group:
                merged = spec_index.merge(
                    merged, _read_index_file(store, base, column, segment.key)
                )
            key = keys.index_segment_key(dataset_uuid, column, version, uuidlib.uuid4().hex[:8])
            count = _put_index(store, key, column, schema, merged, written)
            return IndexSegment(key, count, max(_index_level(count), floor))

        tail = [*tails.get(column, ()), own]
        tails[column] = tuple(manifest.merge_tiers(tail, lambda segment: segment.level, merge))
    return indices, {c: t for c, t in tails.items() if t}, pairs


def _new_indices(
    store: Store,
    dataset_uuid: str,
    base: DatasetMetadata,
    change: Change,
    removed: set[str],
    files: Mapping[str, FileEntry],
    now: datetime,
    written: list[str],
    schema: pa.Schema | None,
) -> tuple[dict[str, str | Mapping[Any, list[str]]], dict[str, int]]:
    """Write the index files this commit needs: the new ``indices``, and their pair counts.

    An index stays defined while the dataset has no file, or no indexed value
    (all null): its index file is then empty, and later appends add to it.
    """
    dropped = set(change.drop_indices)
    out: dict[str, str | Mapping[Any, list[str]]] = {
        column: ref for column, ref in base.indices.items() if column not in dropped
    }
    columns = (set(base.indices) | set(change.index_delta) | set(change.index_full)) - dropped
    if change.schema is not None and removed and removed == set(base.files):
        # a full overwrite defines the dataset anew: old indices go with the old files
        columns = (set(change.index_delta) | set(change.index_full)) - dropped
        out = {}
    kept = set(base.files) - removed  # files of the base that stay
    pairs = {c: n for c, n in base.index_pairs.items() if c in out and not base.index_tail.get(c)}
    for column in sorted(columns):
        if column in change.index_full:
            if change.read_version is not None and change.read_version != base.version:
                raise CommitConflictError(
                    f"dataset {dataset_uuid!r} changed while the index on {column!r} was built"
                )
            merged = spec_index.as_index(change.index_full[column])
        else:
            if column not in base.indices and kept:
                # the dataset has no index on it (dropped concurrently): an index of
                # the new files alone would hide the other files' rows from filters
                continue
            delta = spec_index.as_index(change.index_delta.get(column, {}))
            if column in out and not removed and not delta and not base.index_tail.get(column):
                continue  # unchanged (an index new to the dataset is written even if empty)
            if column in base.indices and (not removed or removed != set(base.files)):
                current = read_index(store, base, column)
            else:
                current = spec_index.Index()
            if column not in change.index_delta and change.add:
                # new files were written without this index: it would silently miss them
                raise InvalidArgumentError(
                    f"dataset {dataset_uuid!r} has a secondary index on {column!r}; "
                    "the new data must be indexed on it too"
                )
            merged = spec_index.merge(spec_index.remove_labels(current, removed), delta)
        merged = spec_index.as_index(merged).only_labels(list(files))
        key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
        pairs[column] = _put_index(store, key, column, schema, merged, written)
        out[column] = key
    return out, {c: n for c, n in pairs.items() if c in out}


def check_hint(store: Store, dataset_uuid: str) -> str:
    """The advice every damaged-storage error ends with."""
    return f"run `ktk check {store.url} {dataset_uuid}` to list every damaged object"


def read_index(store: Store, meta: DatasetMetadata, column: str) -> spec_index.IndexMap:
    """The secondary index of ``column`` in state ``meta``: its base and tail, exact.

    A missing index file is a ``StoreError`` (an ``OSError``, as for a missing
    data file); one that is unreadable, or not an index of the column's type,
    a ``CorruptMetadataError``.  Both name the key and ``ktk check``.
    """
    ref = meta.indices.get(column)
    if ref is None:
        raise InvalidArgumentError(f"dataset {meta.uuid!r} has no secondary index on {column!r}")
    index = _read_index_file(store, meta, column, ref)
    tail = meta.index_tail.get(column, ())
    if not tail:
        return index
    for segment in tail:
        index = spec_index.merge(index, _read_index_file(store, meta, column, segment.key))
    # older segments still name files removed since: only the snapshot's files count
    return spec_index.as_index(index).only_labels(list(meta.files))


def read_index_for(
    store: Store, meta: DatasetMetadata, column: str, expression: Any = None
) -> spec_index.IndexMap:
    """The index pairs of ``column`` that may satisfy ``expression``, for planning.

    Reads only the row groups of each index file whose value range can match
    (ranged reads on object stores).  Pairs may name files removed since an
    index segment was written: callers intersect with the snapshot's files.
    """
    ref = meta.indices.get(column)
    if ref is None:
        raise InvalidArgumentError(f"dataset {meta.uuid!r} has no secondary index on {column!r}")
    refs = [ref, *(t.key for t in meta.index_tail.get(column, ()))]
    out = spec_index.Index()
    for one in refs:
        out = spec_index.merge(out, _read_index_file(store, meta, column, one, expression))
    return out


def _read_index_file(
    store: Store,
    meta: DatasetMetadata,
    column: str,
    ref: str | Mapping[Any, list[str]],
    expression: Any = None,
) -> spec_index.IndexMap:
    value_type = meta.schema.field(column).type if meta.schema is not None else None
    if expression is not None and isinstance(ref, str):
        part = _read_index_part(store, column, ref, expression, value_type)
        if part is not None:
            return part
    what = f"index file {ref!r}" if isinstance(ref, str) else "the embedded index"
    what = f"{what} of column {column!r} of dataset {meta.uuid!r} (version {meta.version})"
    hint = f"{check_hint(store, meta.uuid)}; `ktk index` rebuilds it"
    try:
        if isinstance(ref, str):
            return spec_index.from_parquet(column, store.get(ref), value_type)
        return spec_index.from_embedded(ref, value_type or pa.string())
    except CorruptMetadataError as exc:
        if isinstance(ref, str) and ref in str(exc):
            raise
        raise CorruptMetadataError(f"{what} is damaged: {exc}; {hint}") from exc
    except KtkError:
        raise
    except FileNotFoundError as exc:
        raise StoreError(f"{what} is missing from {store.url!r}; {hint}") from exc
    except (pa.ArrowException, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptMetadataError(
            f"{what} is damaged ({type(exc).__name__}: {exc}); {hint}"
        ) from exc


def _read_index_part(
    store: Store, column: str, key: str, expression: Any, value_type: pa.DataType | None
) -> spec_index.IndexMap | None:
    """The pairs of the row groups of index file ``key`` that may match; None: read it whole."""
    table = read_parquet_part(store, key, expression)
    if table is None:
        return None
    try:
        return spec_index.from_table(column, table, value_type)
    except CorruptMetadataError:
        return None


def _discard_index_files(
    store: Store,
    base: DatasetMetadata | None,
    lost: DatasetMetadata,
    reuse: Mapping[str, IndexSegment] | None = None,
) -> None:
    """Index files written for a commit that provably lost the race are garbage: drop them now.

    Not the segments ``reuse`` keeps for the next attempt.
    """
    old = metadata_keys(base) if base is not None else set()
    old |= {segment.key for segment in (reuse or {}).values()}
    with contextlib.suppress(StoreError):  # gc removes what is left
        store.delete_many(sorted(metadata_keys(lost) - old))


VIEW_ATTEMPTS = 3


def _retrying(call: Callable[[], Any]) -> Any:
    """``call()``, retried with backoff on store errors (the last one is raised)."""
    delay = 0.05
    for attempt in range(VIEW_ATTEMPTS):
        try:
            return call()
        except StoreError:
            if attempt == VIEW_ATTEMPTS - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay *= 2


def _write_view(
    store: Store, dataset_uuid: str, meta: DatasetMetadata, base: DatasetMetadata | None, raw: bytes
) -> None:
    schema = meta.schema
    if schema is not None and (
        base is None
        or not base.view_current
        or base.schema is None
        or not schema.equals(base.schema)
    ):
        body = common_metadata_bytes(schema, meta.partition_keys)
        key = keys.common_metadata_key(dataset_uuid, meta.table)
        _retrying(lambda: store.put(key, body))
    _retrying(lambda: store.put(keys.metadata_key(dataset_uuid), raw))


def _publish(
    store: Store,
    dataset_uuid: str,
    new: DatasetMetadata,
    base: DatasetMetadata | None,
    raw: bytes | None = None,
    *,
    strict: bool = False,
) -> None:
    """Publish a won commit (the view, or the head of a lazily viewed dataset), never regressing.

    After writing view (or head) ``N`` it probes log entry ``N+1``: a slower
    writer's stale one is thus always replaced by the newest one.  The commit
    is in whatever happens here, so a store failure is retried and then
    reported as a ``ViewLagWarning`` (``strict``: raised), never as a failed
    commit.  A newer entry that was not built on the one just published
    means the log is damaged: ``CorruptMetadataError``.  ``raw`` is ``new``
    serialised already.
    """
    current, body = new, raw or new.to_json()
    view_version = base.view_version if base is not None else -1
    while True:
        if current.commit.is_tombstone:
            return  # deleted meanwhile: no view to write
        next_key = keys.log_key(dataset_uuid, current.version + 1)

        def probe(key: str = next_key) -> bytes | None:
            return store.get_or_none(key)

        try:
            if is_lazy(current):
                _retrying(functools.partial(store.put, keys.head_key(dataset_uuid), body))
                if _view_due(current, base, view_version):
                    write_lazy_view(store, dataset_uuid, current)
                    view_version = current.version
            else:
                _write_view(store, dataset_uuid, current, base, body)
            found: bytes | None = _retrying(probe)
        except StoreError as exc:
            if strict:
                raise
            warnings.warn(
                ViewLagWarning(
                    f"version {new.version} of dataset {dataset_uuid!r} is committed, but its "
                    f"metadata view could not be written ({exc}); ktk-arrow readers see it, "
                    "plateau/kartothek readers see an older version until the next commit or "
                    f"`ktk check --repair STORE {dataset_uuid}`"
                ),
                stacklevel=3,
            )
            return
        if found is None:
            return
        entry = parse_entry(found, dataset_uuid, current.version + 1, store)
        _check_follows(entry, current)
        base, current, body = current, entry, found


def _view_due(meta: DatasetMetadata, base: DatasetMetadata | None, view_version: int) -> bool:
    """Whether a lazy view is refreshed with ``meta``: amortised over the commits since the last.

    The view must hold every file and whole indices, so refreshing it costs
    O(files + index pairs); doing so once its lag times
    ``VIEW_BYTES_PER_COMMIT`` exceeds that size keeps the cost per commit
    bounded.  A view not yet lazy (the dataset just grew past the eager
    limits) and a changed schema (plateau reads ``_common_metadata`` with the
    view) are refreshed at once; ``view="lazy"`` only then.
    """
    if view_version < 0 or base is None:
        return True
    if base.schema is not None and meta.schema is not None and not meta.schema.equals(base.schema):
        return True
    if meta.settings.get("view") == "lazy":
        return False
    lag = meta.version - view_version
    size = len(meta.files) * VIEW_BYTES_PER_FILE + _index_pair_count(meta) * VIEW_BYTES_PER_PAIR
    return lag * VIEW_BYTES_PER_COMMIT >= size


def write_lazy_view(store: Store, dataset_uuid: str, meta: DatasetMetadata) -> None:
    """Write the full kartothek view of ``meta``, with whole, exact index files.

    The view's index files are written for it alone (the snapshot keeps its
    segments); gc keeps whatever the view references.  plateau reads the
    view; our readers see from its first bytes that it is lazy and read the
    head instead.
    """
    now = datetime.now(timezone.utc)
    indices: dict[str, str | Mapping[Any, list[str]]] = {}
    labels = list(meta.files)
    written: list[str] = []
    try:
        for column, ref in meta.indices.items():
            # older index segments may name files removed since: the view's index is exact
            merged = spec_index.as_index(read_index(store, meta, column))
            if not meta.index_tail.get(column):  # read_index filters base and tail only
                base = merged
                merged = base.only_labels(labels)
                if isinstance(ref, str) and merged.pairs.num_rows == base.pairs.num_rows:
                    indices[column] = ref  # the base alone, and exact: plateau reads it as is
                    continue
            key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
            _put_index(store, key, column, meta.schema, merged, written)
            indices[column] = key
    finally:
        IN_FLIGHT.discard(store, written)
    view = replace(meta, indices=indices, index_tail={})
    if meta.schema is not None:
        body = common_metadata_bytes(meta.schema, meta.partition_keys)
        key = keys.common_metadata_key(dataset_uuid, meta.table)
        _retrying(lambda: store.put(key, body))
    raw = view.to_json(view=True, lazy_view=True)
    _retrying(lambda: store.put(keys.metadata_key(dataset_uuid), raw))


def configure(store: Store, dataset_uuid: str, **settings: Any) -> Snapshot:
    """Change dataset settings (``view="auto"|"eager"|"lazy"``, ...) as a commit of their own."""
    view = settings.get("view")
    if view is not None and view not in VIEW_MODES:
        raise InvalidArgumentError(
            f"view={view!r} is not a view mode; use one of {', '.join(map(repr, VIEW_MODES))}"
        )
    inline = settings.get("inline_max")
    if inline is not None and (type(inline) is not int or inline < 0):
        raise InvalidArgumentError(
            f"inline_max={inline!r} must be a non-negative int (files a root lists inline "
            f"before they go to a manifest segment; default {manifest.INLINE_MAX})"
        )
    return commit(store, dataset_uuid, Change(operation="configure", settings=settings))


def refresh_view(store: Store, dataset_uuid: str) -> DatasetMetadata:
    """Bring the view up to the newest committed state (writers killed before theirs).

    Returns the newest state; a store failure raises (``StoreError``).
    """
    latest = load(store, dataset_uuid)
    if latest.managed and is_lazy(latest):
        if latest.view_version != latest.version:
            _retrying(lambda: store.put(keys.head_key(dataset_uuid), latest.to_json()))
            write_lazy_view(store, dataset_uuid, latest)
        return replace(latest, view_version=latest.version)
    if not latest.view_current and latest.managed:
        _publish(store, dataset_uuid, latest, None, strict=True)
    return latest


@dataclass(frozen=True)
class DeleteOutcome:
    """What :func:`delete_dataset` did."""

    #: the version of the tombstone entry (the deletion's linearisation point)
    version: int
    #: deleted objects under ``<uuid>/`` (neither the views nor the log entries)
    deleted: list[str]
    #: unreferenced data files younger than gc's grace period (a write creating the
    #: dataset anew may be committing them), and files a write of this process holds
    kept: list[str]
    #: referenced files outside ``<uuid>/`` (another dataset's), never deleted
    foreign: list[str]


def delete_dataset(store: Store, dataset_uuid: str) -> DeleteOutcome:
    """Remove a dataset: a tombstone entry first (the linearisation point), then its objects.

    Readers and writers treat a log that ends in a tombstone as no dataset, so
    a deletion killed part-way never brings back an old version.  Only objects
    under ``<uuid>/`` (and the views) are deleted: files the dataset references
    under another dataset's prefix stay.
    """
    keys.validate_uuid(dataset_uuid)
    delay = 0.005
    for _attempt in range(MAX_ATTEMPTS):
        latest = load_latest(store, dataset_uuid)
        if latest is None:
            raise DatasetNotFoundError(f"dataset {dataset_uuid!r} does not exist in {store.url!r}")
        if not _enter_base(store, dataset_uuid, latest):
            continue
        tombstone = replace(
            latest,
            files={},
            indices={},
            commit=CommitInfo(
                latest.version + 1,
                _next_stamp(latest),
                TOMBSTONE_OPERATION,
                files_removed=len(latest.files),
                writer=f"{WRITER_ID}:{os.getpid()}",
                token=_new_token(),
                parent=latest.commit.token,
                rows_removed=latest.total_rows,
            ),
            managed=True,
        )
        if put_entry(store, keys.log_key(dataset_uuid, tombstone.version), tombstone.to_json()):
            break
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)
    else:
        raise CommitConflictError(
            f"gave up deleting dataset {dataset_uuid!r}: other writers keep committing; retry"
        )
    views = [keys.metadata_key(dataset_uuid), keys.msgpack_metadata_key(dataset_uuid)]
    store.delete_many(views)
    log_prefix = f"{dataset_uuid}/{keys.LOG_DIR}/"
    log = [info.key for info in store.list(log_prefix)]
    tomb_key = keys.log_key(dataset_uuid, tombstone.version)
    # young data files no entry references may belong to a write in flight that
    # will create the dataset anew: they stay (gc's grace period, for data files)
    referenced = referenced_keys(latest) | _keys_of_versions(
        store, dataset_uuid, log_versions(store, dataset_uuid)
    )
    cutoff = datetime.now(timezone.utc) - DEFAULT_GC_GRACE
    others: list[str] = []
    kept: list[str] = []
    for info in store.list(f"{dataset_uuid}/"):
        if info.key.startswith(log_prefix):
            continue
        if (
            info.key in referenced
            or not info.key.startswith(f"{dataset_uuid}/{latest.table}/")
            or info.key.endswith(keys.COMMON_METADATA)
            or info.mtime is None
            or info.mtime <= cutoff
        ) and not IN_FLIGHT.holds(store, info.key):
            others.append(info.key)
        else:
            kept.append(info.key)
    _delete_own(store, dataset_uuid, others, dry_run=False)
    temporary = [info.key for info in store.list_temporary(f"{dataset_uuid}/")]
    _delete_own(store, dataset_uuid, temporary, dry_run=False)
    # the log last, the tombstone after every other entry, so no crash revives a version
    store.delete_many([k for k in log if k != tomb_key])
    store.delete_many(views)  # a slow writer may have republished one meanwhile
    store.delete(tomb_key)
    foreign = sorted(key for key in referenced if not is_own_key(dataset_uuid, key))
    return DeleteOutcome(tombstone.version, others, kept, foreign)


DEFAULT_GC_GRACE = timedelta(hours=1)


def metadata_keys(meta: DatasetMetadata) -> set[str]:
    """The index files and manifest segments a snapshot references (not its data files)."""
    out = {ref for ref in meta.indices.values() if isinstance(ref, str)}
    out |= {t.key for tail in meta.index_tail.values() for t in tail}
    out |= {s.key for s in meta.segments}
    return out


def referenced_keys(meta: DatasetMetadata) -> set[str]:
    """Every object a snapshot needs."""
    return {e.key for e in meta.files.values()} | metadata_keys(meta)


#: below this, gc could delete the files of a write still in flight (``force=True`` allows it)
MIN_SAFE_GC_GRACE = timedelta(minutes=1)


def _gc_prefixes(dataset_uuid: str, table: str) -> tuple[str, ...]:
    """Where a dataset's data, index files and manifest segments live."""
    return (
        f"{dataset_uuid}/{table}/",
        f"{dataset_uuid}/indices/",
        f"{dataset_uuid}/{keys.SEGMENT_DIR}/",
        f"{dataset_uuid}/{keys.INDEX_SEGMENT_DIR}/",
    )


def _is_data_or_index(dataset_uuid: str, table: str, key: str) -> bool:
    return (
        is_own_key(dataset_uuid, key)
        and key.startswith(_gc_prefixes(dataset_uuid, table))
        and not key.endswith(keys.COMMON_METADATA)
    )


@dataclass(frozen=True)
class GcOutcome:
    """What :func:`collect_garbage` did, and what it kept although no snapshot uses it."""

    #: deleted keys (with ``dry_run``: the keys that would be deleted)
    deleted: list[str]
    #: unreferenced files younger than the grace period (a write may be committing them)
    kept_young: list[str]
    #: unreferenced files of snapshots expired within the grace period (readers may read them)
    kept_for_readers: list[str]
    #: unreferenced files a write of this process is producing
    kept_in_flight: list[str]
    #: the latest version, whose view gc brought up to date
    version: int


def garbage_collect(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    now: datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> list[str]:
    """Delete data and index files that no retained snapshot references.

    Files younger than ``grace_period`` are kept even if unreferenced: they may
    belong to a commit still in flight (a grace period under a minute needs
    ``force=True``), and files a commit of this process is writing are always
    kept.  The view is brought up to date first, so plateau never reads a
    state whose files are gone.  Only objects under ``<uuid>/`` are ever
    deleted: files a snapshot references under another prefix are never
    touched.  Returns the deleted keys (with ``dry_run``, the keys that would
    be deleted, and nothing is deleted or written).
    """
    return collect_garbage(
        store, dataset_uuid, grace_period=grace_period, now=now, dry_run=dry_run, force=force
    ).deleted


def collect_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    now: datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> GcOutcome:
    """:func:`garbage_collect`, reporting also what it kept and why."""
    if not isinstance(grace_period, timedelta) or grace_period < timedelta(0):
        raise InvalidArgumentError(
            f"grace_period must be a non-negative timedelta, got {grace_period!r}"
        )
    if grace_period < MIN_SAFE_GC_GRACE and not force:
        raise InvalidArgumentError(
            f"grace_period={grace_period!r} is shorter than {MIN_SAFE_GC_GRACE}: gc could delete "
            "the files of a write still running in another process before it commits; use the "
            "default (1 hour), or pass force=True if no writer is running"
        )
    latest = load(store, dataset_uuid) if dry_run else refresh_view(store, dataset_uuid)
    live = referenced_keys(latest)
    live |= _keys_of_versions(
        store, dataset_uuid, [v for v in log_versions(store, dataset_uuid) if v != latest.version]
    )
    view = load_view(store, dataset_uuid)
    if view is not None:  # what plateau reads must stay readable
        live |= referenced_keys(view)
    cutoff = (now or datetime.now(timezone.utc)) - grace_period
    for_readers = _recently_expired_keys(store, dataset_uuid, cutoff, dry_run=dry_run)
    doomed: list[str] = []
    young: list[str] = []
    reading: list[str] = []
    in_flight: list[str] = []
    for prefix in _gc_prefixes(dataset_uuid, latest.table):
        for info in store.list(prefix):
            if info.key in live or not _is_data_or_index(dataset_uuid, latest.table, info.key):
                continue
            if info.key in for_readers:
                reading.append(info.key)
            elif info.mtime is not None and info.mtime > cutoff:
                young.append(info.key)
            elif IN_FLIGHT.holds(store, info.key):
                in_flight.append(info.key)
            else:
                doomed.append(info.key)
    for info in store.list_temporary(f"{dataset_uuid}/"):  # left by crashed puts
        if info.mtime is not None and info.mtime <= cutoff:
            doomed.append(info.key)
    _delete_own(store, dataset_uuid, doomed, dry_run=dry_run)
    return GcOutcome(doomed, young, reading, in_flight, latest.version)


def _delete_own(store: Store, dataset_uuid: str, doomed: Sequence[str], *, dry_run: bool) -> None:
    """Delete ``doomed``, all of which must lie under ``<uuid>/`` (a guard, never expected)."""
    foreign = [key for key in doomed if not is_own_key(dataset_uuid, key)]
    if foreign:
        raise CorruptMetadataError(
            f"refusing to delete {foreign[0]!r} while cleaning up dataset {dataset_uuid!r}: it "
            f"lies outside the dataset's prefix {dataset_uuid + '/'!r}; nothing was deleted"
        )
    if not dry_run:
        store.delete_many(doomed)


class InFlight:
    """Keys of files that writes of this process are producing: gc and deletion keep them.

    Other processes are protected by the grace period; this closes the gap
    for a long write in the same process as a maintenance job.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, store: Store, keys_: Sequence[str]) -> None:
        with self._lock:
            for key in keys_:
                ref = (store.url, key)
                self._counts[ref] = self._counts.get(ref, 0) + 1

    def discard(self, store: Store, keys_: Sequence[str]) -> None:
        with self._lock:
            for key in keys_:
                ref = (store.url, key)
                left = self._counts.get(ref, 0) - 1
                if left > 0:
                    self._counts[ref] = left
                else:
                    self._counts.pop(ref, None)

    def holds(self, store: Store, key: str) -> bool:
        with self._lock:
            return (store.url, key) in self._counts


IN_FLIGHT = InFlight()


# -- retention --------------------------------------------------------------------

EXPIRED_DIR = "_ktk/expired"
_EXPIRY_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class ExpiryOutcome:
    """What :func:`expire` did, and which versions it kept although asked to expire them."""

    #: expired versions, oldest first (with ``dry_run``: those that would be)
    expired: list[int]
    #: versions ``older_than`` / ``keep_last`` select but committed within the grace period
    kept_by_grace: list[int]
    #: versions kept because readers roll forward from the view through them, or
    #: because they are the newest log entry (see "Retention" in docs/format.md)
    kept_for_view: list[int]
    #: the retained versions after expiry, oldest first
    retained: list[int]
    #: the latest version
    version: int
    #: keys the expiry record lists: files only the expired snapshots used
    orphaned: list[str]


def expire_snapshots(
    store: Store,
    dataset_uuid: str,
    *,
    older_than: datetime | timedelta | None = None,
    keep_last: int | None = None,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    dry_run: bool = False,
) -> list[int]:
    """Forget old snapshots, so that ``garbage_collect`` can free the files only they use.

    A version expires when it was committed before ``older_than`` (a UTC
    datetime, or an age) *and* is not among the newest ``keep_last``.  Never
    expired: the latest version, the newest log entry, and versions committed
    within ``grace_period``, whose log entries a writer still publishing an
    older view relies on (``docs/format.md``, "Retention").  Files of expired
    snapshots survive until gc's grace period has passed since the expiry, so
    a reader already reading them finishes.  Returns the expired versions,
    oldest first (with ``dry_run`` those that would be, and nothing changes).
    :func:`expire` also says what was kept and why.
    """
    return expire(
        store,
        dataset_uuid,
        older_than=older_than,
        keep_last=keep_last,
        grace_period=grace_period,
        dry_run=dry_run,
    ).expired


def expire(
    store: Store,
    dataset_uuid: str,
    *,
    older_than: datetime | timedelta | None = None,
    keep_last: int | None = None,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    dry_run: bool = False,
) -> ExpiryOutcome:
    """:func:`expire_snapshots`, reporting also what was kept and why."""
    keys.validate_uuid(dataset_uuid)
    now = datetime.now(timezone.utc)
    limit = _expiry_limit(now, older_than, keep_last, grace_period)
    asked = _expiry_limit(now, older_than, keep_last, timedelta(0))
    # readers roll forward from the view: it is brought up to date first, and
    # no entry from its version on is expired (else they would silently fall
    # back to it, and the next commit would fork the log)
    latest = load(store, dataset_uuid) if dry_run else refresh_view(store, dataset_uuid)
    view = load_view(store, dataset_uuid)
    floor = view.version if view is not None and view.managed else latest.version
    logged = [v for v in log_versions(store, dataset_uuid) if v <= latest.version]
    missing = sorted(set(range(floor + 1, latest.version + 1)) - set(logged))
    if missing and latest.managed:
        raise CorruptMetadataError(
            f"log entry {keys.log_key(dataset_uuid, missing[0])!r} of dataset {dataset_uuid!r} "
            f"is missing although the view (version {floor}) needs it to reach version "
            f"{latest.version}; nothing was expired. Run `ktk check STORE {dataset_uuid}`"
        )
    # the newest log entry starts every roll forward
    selected = sorted({*logged, latest.version})
    if keep_last is not None:
        selected = selected[:-keep_last]
    in_log = set(logged)
    newest_entry = logged[-1] if logged else None
    candidates = [v for v in selected if v in in_log and v < floor and v != newest_entry]
    # commit timestamps increase with the version: the expired ones are a prefix
    stamps: dict[int, datetime] = {}

    def prefix(cutoff: datetime, versions: list[int]) -> list[int]:
        lo, hi = 0, len(versions)
        while lo < hi:
            mid = (lo + hi) // 2
            v = versions[mid]
            if v not in stamps:
                stamps[v] = _committed_at(store, dataset_uuid, v)
            if stamps[v] < cutoff:
                lo = mid + 1
            else:
                hi = mid
        return versions[:lo]

    expired = prefix(limit, candidates)
    kept_by_grace = prefix(asked, candidates)[len(expired) :]
    # what the settings select that the view or the newest entry keep
    is_candidate = set(candidates)
    kept_for_view = [
        v
        for v in prefix(asked, [v for v in selected if v in in_log and v != latest.version])
        if v not in is_candidate
    ]
    gone = set(expired)
    retained = [v for v in logged if v not in gone]
    outcome = ExpiryOutcome(expired, kept_by_grace, kept_for_view, retained, latest.version, [])
    if not expired:
        return outcome
    orphaned = _keys_of_versions(store, dataset_uuid, expired) - referenced_keys(latest)
    outcome = replace(outcome, orphaned=sorted(orphaned))
    if dry_run:
        return outcome
    if orphaned:
        # written before the log entries go, so a concurrent gc sees either the
        # entries or this record (it reads the log first, then the records)
        stamp = datetime.now(timezone.utc)
        record = {"expired_at": stamp.isoformat(), "versions": expired, "keys": sorted(orphaned)}
        name = f"{stamp.strftime(_EXPIRY_STAMP)}-{uuidlib.uuid4().hex[:8]}.json"
        store.put(f"{dataset_uuid}/{EXPIRED_DIR}/{name}", json.dumps(record).encode())
    store.delete_many([keys.log_key(dataset_uuid, v) for v in expired])
    return outcome


def _expiry_limit(
    now: datetime,
    older_than: datetime | timedelta | None,
    keep_last: int | None,
    grace_period: timedelta,
) -> datetime:
    """Validate the retention settings; versions committed before the result may expire."""
    if older_than is None and keep_last is None:
        raise InvalidArgumentError(
            "expire_snapshots needs older_than= (a datetime or timedelta), keep_last= "
            "(a positive int) or both; nothing was expired"
        )
    if keep_last is not None and (
        not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1
    ):
        raise InvalidArgumentError(
            f"keep_last must be a positive int (the latest version is always kept), got "
            f"{keep_last!r}"
        )
    if not isinstance(grace_period, timedelta) or grace_period < timedelta(0):
        raise InvalidArgumentError(
            f"grace_period must be a non-negative timedelta, got {grace_period!r}"
        )
    limit = now - grace_period
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidArgumentError(
                f"older_than must not be a negative timedelta, got {older_than!r}"
            )
        return min(limit, now - older_than)
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=timezone.utc)
        return min(limit, older_than)
    if older_than is not None:
        raise InvalidArgumentError(
            f"older_than must be a datetime or a timedelta, got {older_than!r}"
        )
    return limit


def _committed_at(store: Store, dataset_uuid: str, version: int) -> datetime:
    entry = read_entry(store, dataset_uuid, version)
    if entry is None:  # expired meanwhile by someone else
        return datetime.min.replace(tzinfo=timezone.utc)
    return entry.commit.timestamp


def _keys_of_versions(store: Store, dataset_uuid: str, versions: Sequence[int]) -> set[str]:
    """Every object the given snapshots reference (a missing entry references nothing)."""

    def read(version: int) -> set[str]:
        entry = read_entry(store, dataset_uuid, version)
        return set() if entry is None else referenced_keys(entry)

    out: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for found in pool.map(read, versions):
            out |= found
    return out


def _recently_expired_keys(
    store: Store, dataset_uuid: str, cutoff: datetime, *, dry_run: bool
) -> set[str]:
    """Keys of snapshots expired after ``cutoff``: readers may still be reading them.

    Expiry records from before ``cutoff`` protect nothing any more and are
    deleted (unless ``dry_run``).
    """
    live: set[str] = set()
    stale = []
    for info in store.list(f"{dataset_uuid}/{EXPIRED_DIR}"):
        name = info.key.rsplit("/", 1)[-1]
        try:
            stamp = datetime.strptime(name.split("-", 1)[0], _EXPIRY_STAMP)
        except ValueError:
            continue  # not a record of ours
        if stamp.replace(tzinfo=timezone.utc) <= cutoff:
            stale.append(info.key)
            continue
        raw = store.get_or_none(info.key)
        if raw is not None:
            live.update(json.loads(raw).get("keys", ()))
    if not dry_run:
        store.delete_many(stale)
    return live


def _has_log(store: Store, dataset_uuid: str) -> bool:
    """Whether ktk-arrow ever committed to the dataset (entry 0 may have been expired)."""
    if store.get_or_none(keys.log_key(dataset_uuid, 0)) is not None:
        return True
    return bool(log_versions(store, dataset_uuid))


def _nothing_as_of(
    store: Store, dataset_uuid: str, as_of: datetime, versions: Sequence[int]
) -> DatasetNotFoundError:
    """The error for an ``as_of`` before the oldest retained snapshot."""
    oldest = load_version(store, dataset_uuid, versions[0]) if versions else None
    kept = (
        f"; the oldest version kept is {oldest.version}, committed at "
        f"{oldest.commit.timestamp.isoformat()} (older versions were expired or never existed)"
        if oldest is not None
        else ""
    )
    return DatasetNotFoundError(
        f"dataset {dataset_uuid!r} has no version committed at or before "
        f"{as_of.isoformat()}{kept}; ka.history() lists the versions kept"
    )
