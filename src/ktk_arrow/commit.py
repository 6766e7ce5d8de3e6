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

import json
import os
import random
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
    CorruptMetadataError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidArgumentError,
    KtkError,
)
from .spec import index as spec_index
from .spec import keys
from .spec.metadata import CommitInfo, DatasetMetadata, FileEntry
from .spec.schema import common_metadata_bytes, schema_from_common_metadata
from .storage import Store

WRITER_ID = uuidlib.uuid4().hex[:12]
MAX_ATTEMPTS = 40


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a dataset."""

    version: int
    timestamp: datetime
    operation: str
    files_added: int
    files_removed: int
    rows_added: int | None

    @classmethod
    def of(cls, info: CommitInfo) -> Snapshot:
        return cls(
            info.version,
            info.timestamp,
            info.operation,
            info.files_added,
            info.files_removed,
            info.rows_added,
        )


# -- reading --------------------------------------------------------------------


def _parse(raw: bytes, source: str) -> DatasetMetadata:
    return DatasetMetadata.from_json(raw, source=source)


def load_view(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """The view as stored (JSON, else msgpack), without consulting the log."""
    raw = store.get_or_none(keys.metadata_key(dataset_uuid))
    if raw is not None:
        return _parse(raw, keys.metadata_key(dataset_uuid))
    raw = store.get_or_none(keys.msgpack_metadata_key(dataset_uuid))
    if raw is not None:
        return DatasetMetadata.from_msgpack(raw, source=keys.msgpack_metadata_key(dataset_uuid))
    return None


def load_latest(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """The newest committed state, or ``None`` if the dataset does not exist.

    Two reads in the common case: the view, and the probe for the next log entry.
    """
    keys.validate_uuid(dataset_uuid)
    view = load_view(store, dataset_uuid)
    if view is None:
        return _load_from_log_only(store, dataset_uuid)
    if view.managed:
        return _roll_forward(store, dataset_uuid, view)
    # a view without our extension: written by plateau/kartothek
    if not _has_log(store, dataset_uuid):
        return _with_schema(store, view)  # never managed by us: version 0
    return _reconcile_foreign_view(store, dataset_uuid, view)


def _latest_logged(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    versions = log_versions(store, dataset_uuid)
    if not versions:
        return None
    key = keys.log_key(dataset_uuid, versions[-1])
    return _roll_forward(store, dataset_uuid, _parse(store.get(key), key))


def _next_stamp(previous: DatasetMetadata) -> datetime:
    """Commit timestamps strictly increase with the version (``as_of`` bisects them)."""
    return max(datetime.now(timezone.utc), previous.commit.timestamp + timedelta(microseconds=1))


def _reconcile_foreign_view(
    store: Store, dataset_uuid: str, view: DatasetMetadata
) -> DatasetMetadata:
    """plateau rewrote the view of a dataset we manage: adopt it when that is safe.

    Safe means plateau's state keeps every file of our latest snapshot (it
    appended on top of it); the result is that state as the next version, which
    our next commit writes to the log.  Anything else could be a lost update of
    ours, so it is reported, not merged.
    """
    latest = _latest_logged(store, dataset_uuid)
    assert latest is not None
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
            commit=CommitInfo(latest.version + 1, _next_stamp(latest), "external", len(added)),
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
        commit=CommitInfo(latest.version + 1, _next_stamp(latest), "adopt"),
        managed=True,
    )
    if not store.put_if_absent(keys.log_key(dataset_uuid, adopted.version), adopted.to_json()):
        raise CommitConflictError(f"dataset {dataset_uuid!r} changed while adopting; retry")
    _publish(store, dataset_uuid, adopted, latest)
    return Snapshot.of(adopted.commit)


def _roll_forward(store: Store, dataset_uuid: str, meta: DatasetMetadata) -> DatasetMetadata:
    while True:
        key = keys.log_key(dataset_uuid, meta.version + 1)
        raw = store.get_or_none(key)
        if raw is None:
            return _with_schema(store, meta)
        meta = _parse(raw, key)


def _load_from_log_only(store: Store, dataset_uuid: str) -> DatasetMetadata | None:
    """A dataset whose creator died between its log entry and its view.

    Log entries left behind by a deletion that kept them (plateau's
    ``delete_dataset`` removes only what it knows) do not bring a dataset back:
    without its ``_common_metadata`` the dataset is gone.
    """
    meta = _latest_logged(store, dataset_uuid)
    if meta is None or not store.exists(keys.common_metadata_key(dataset_uuid, meta.table)):
        return None
    return meta


def _with_schema(store: Store, meta: DatasetMetadata) -> DatasetMetadata:
    """Datasets written by plateau carry no schema in their metadata: read ``_common_metadata``."""
    if meta.schema is not None:
        return meta
    key = keys.common_metadata_key(meta.uuid, meta.table)
    raw = store.get_or_none(key)
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
    raw = store.get_or_none(keys.log_key(dataset_uuid, version))
    if raw is None:
        latest = load_latest(store, dataset_uuid)
        if latest is None:
            raise DatasetNotFoundError(f"dataset {dataset_uuid!r} does not exist in {store.url!r}")
        if latest.version == version:
            return latest
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} has no version {version} (latest is {latest.version}; "
            "it may have been expired); ka.history() lists the versions kept"
        )
    return _with_schema(store, _parse(raw, keys.log_key(dataset_uuid, version)))


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

    def read(v: int) -> Snapshot:
        key = keys.log_key(dataset_uuid, v)
        return Snapshot.of(_parse(store.get(key), key).commit)

    with ThreadPoolExecutor(max_workers=8) as pool:
        snaps = list(pool.map(read, versions))
    return [s for s in snaps if s.version <= latest.version]


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
    create: bool = False
    #: the version the writer read; None for a blind append
    read_version: int | None = None
    #: labels this change depends on; a concurrent change to them is a conflict
    depends_on: Callable[[DatasetMetadata], Collection[str]] | None = None


_UNKNOWN: Any = object()


def commit(store: Store, dataset_uuid: str, change: Change, *, base: Any = _UNKNOWN) -> Snapshot:
    """Commit ``change`` as the next snapshot, retrying on concurrent appends.

    ``base`` is the state the writer already read (``None``: no dataset yet).
    The first attempt builds on it without reading again; the put-if-absent of
    the log entry tells whether it was still the newest.
    """
    keys.validate_uuid(dataset_uuid)
    read_state: DatasetMetadata | None = None
    if change.read_version is not None and change.depends_on is not None:
        if base is not _UNKNOWN and base is not None and base.version == change.read_version:
            read_state = base
        else:
            read_state = load_version(store, dataset_uuid, change.read_version)
    delay = 0.005
    for _attempt in range(MAX_ATTEMPTS):
        if base is _UNKNOWN:
            base = load_latest(store, dataset_uuid)
        _check_preconditions(dataset_uuid, base, change, read_state, store)
        new = _apply(store, dataset_uuid, base, change)
        if base is not None and not base.managed:
            # a state plateau wrote (version 0, or an adopted append) enters the log first
            store.put_if_absent(keys.log_key(dataset_uuid, base.version), base.to_json())
        raw = new.to_json()
        if store.put_if_absent(keys.log_key(dataset_uuid, new.version), raw):
            _publish(store, dataset_uuid, new, base, raw)
            return Snapshot.of(new.commit)
        _discard_index_files(store, base, new)
        base = _UNKNOWN
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)
    raise CommitConflictError(
        f"gave up committing {change.operation!r} to dataset {dataset_uuid!r} after "
        f"{MAX_ATTEMPTS} attempts: other writers keep winning; retry later"
    )


def _check_preconditions(
    dataset_uuid: str,
    base: DatasetMetadata | None,
    change: Change,
    read_state: DatasetMetadata | None,
    store: Store,
) -> None:
    if change.create and base is not None:
        raise DatasetExistsError(
            f"dataset {dataset_uuid!r} already exists in {store.url!r}; use mode='append' "
            "or mode='overwrite', or pick another dataset_uuid"
        )
    if not change.create and base is None:
        raise DatasetNotFoundError(
            f"dataset {dataset_uuid!r} does not exist in {store.url!r}; create it first"
        )
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
    if (
        appending
        and ours is not None
        and theirs is not None
        and not ours.equals(theirs, check_metadata=False)
    ):
        raise CommitConflictError(
            f"the schema of dataset {dataset_uuid!r} changed (a concurrent overwrite?) while "
            "data was appended; nothing was committed, retry the append"
        )


def _apply(
    store: Store, dataset_uuid: str, base: DatasetMetadata | None, change: Change
) -> DatasetMetadata:
    now = datetime.now(timezone.utc)
    if base is None:
        if change.schema is None:
            raise InvalidArgumentError("creating a dataset needs a schema")
        # log entries of a deleted dataset may remain (plateau deletes only what it
        # knows): number the new dataset's versions after them
        stale = log_versions(store, dataset_uuid)
        base = DatasetMetadata(
            uuid=dataset_uuid,
            partition_keys=tuple(change.partition_keys or ()),
            user_metadata={"creation_time": now.isoformat()},
            commit=CommitInfo(
                stale[-1] if stale else -1, datetime(1970, 1, 1, tzinfo=timezone.utc), "none"
            ),
            schema=change.schema,
        )
    if base.commit.timestamp >= now:  # keep timestamps strictly increasing for as_of
        now = base.commit.timestamp + timedelta(microseconds=1)
    removed = set(change.remove(base)) if change.remove is not None else set()
    files = {label: entry for label, entry in base.files.items() if label not in removed}
    clash = [e.label for e in change.add if e.label in files]
    if clash:
        raise CorruptMetadataError(f"file labels {clash[:3]} already exist in {dataset_uuid!r}")
    for entry in change.add:
        files[entry.label] = entry
    indices = _new_indices(store, dataset_uuid, base, change, removed, files, now)
    user_metadata = dict(base.user_metadata)
    if change.user_metadata:
        user_metadata.update(change.user_metadata)
    partition_keys = base.partition_keys
    schema = base.schema
    if change.schema is not None and (not base.files or removed == set(base.files)):
        schema = change.schema
        if change.partition_keys is not None:
            partition_keys = tuple(change.partition_keys)
    rows = [e.rows for e in change.add]
    info = CommitInfo(
        version=base.version + 1,
        timestamp=now,
        operation=change.operation,
        files_added=len(change.add),
        files_removed=len(removed),
        rows_added=None if any(r is None for r in rows) else sum(r or 0 for r in rows),
        writer=f"{WRITER_ID}:{os.getpid()}",
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
    )


def _new_indices(
    store: Store,
    dataset_uuid: str,
    base: DatasetMetadata,
    change: Change,
    removed: set[str],
    files: Mapping[str, FileEntry],
    now: datetime,
) -> dict[str, str | Mapping[Any, list[str]]]:
    """Write the index files this commit needs and return the new ``indices`` mapping."""
    out: dict[str, str | Mapping[Any, list[str]]] = dict(base.indices)
    columns = set(base.indices) | set(change.index_delta) | set(change.index_full)
    if change.schema is not None and removed and removed == set(base.files):
        # a full overwrite defines the dataset anew: old indices go with the old files
        columns = set(change.index_delta) | set(change.index_full)
        out = {}
    if not files:
        return {}
    schema = change.schema if change.schema is not None else base.schema
    for column in sorted(columns):
        if column in change.index_full:
            if change.read_version is not None and change.read_version != base.version:
                raise CommitConflictError(
                    f"dataset {dataset_uuid!r} changed while the index on {column!r} was built"
                )
            merged = spec_index.as_index(change.index_full[column])
        else:
            delta = spec_index.as_index(change.index_delta.get(column, {}))
            if not removed and not delta:
                continue
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
        value_type = schema.field(column).type if schema is not None else pa.string()
        key = keys.index_key(dataset_uuid, column, now, uuidlib.uuid4().hex[:8])
        store.put(key, spec_index.to_parquet(column, value_type, merged))
        out[column] = key
    return out


def read_index(store: Store, meta: DatasetMetadata, column: str) -> spec_index.IndexMap:
    """The secondary index of ``column`` in state ``meta``."""
    ref = meta.indices.get(column)
    if ref is None:
        raise InvalidArgumentError(f"dataset {meta.uuid!r} has no secondary index on {column!r}")
    value_type = meta.schema.field(column).type if meta.schema is not None else None
    if isinstance(ref, str):
        return spec_index.from_parquet(column, store.get(ref), value_type)
    return spec_index.from_embedded(ref, value_type or pa.string())


def _discard_index_files(store: Store, base: DatasetMetadata | None, lost: DatasetMetadata) -> None:
    """Index files written for a commit that lost the race are garbage: drop them now."""
    old = set(base.indices.values()) if base is not None else set()
    store.delete_many(
        [ref for ref in lost.indices.values() if isinstance(ref, str) and ref not in old]
    )


def _publish(
    store: Store,
    dataset_uuid: str,
    new: DatasetMetadata,
    base: DatasetMetadata | None,
    raw: bytes | None = None,
) -> None:
    """Rewrite the view after a won commit, and keep it from regressing.

    ``raw`` is ``new`` serialised already (the bytes of its log entry).
    """
    try:
        current = new
        while True:
            if current.schema is not None and (
                base is None or base.schema is None or not current.schema.equals(base.schema)
            ):
                store.put(
                    keys.common_metadata_key(dataset_uuid, current.table),
                    common_metadata_bytes(current.schema, current.partition_keys),
                )
            store.put(keys.metadata_key(dataset_uuid), raw or current.to_json())
            key = keys.log_key(dataset_uuid, current.version + 1)
            raw = store.get_or_none(key)
            if raw is None:
                return
            base = current
            current = _parse(raw, key)
    except KtkError:
        # the commit is in; a lagging view is repaired by the next reader or writer
        return
    except OSError:
        return


def delete_dataset(store: Store, dataset_uuid: str) -> None:
    """Remove a dataset: first the views (readers stop seeing it), then every object."""
    keys.validate_uuid(dataset_uuid)
    if load_latest(store, dataset_uuid) is None:
        raise DatasetNotFoundError(f"dataset {dataset_uuid!r} does not exist in {store.url!r}")
    store.delete(keys.metadata_key(dataset_uuid))
    store.delete(keys.msgpack_metadata_key(dataset_uuid))
    # the log next, so a crash part-way cannot bring the dataset back from it
    store.delete_many([info.key for info in store.list(f"{dataset_uuid}/{keys.LOG_DIR}")])
    store.delete_many([info.key for info in store.list(f"{dataset_uuid}/")])
    store.delete_many([info.key for info in store.list_temporary(f"{dataset_uuid}/")])


DEFAULT_GC_GRACE = timedelta(hours=1)


def referenced_keys(meta: DatasetMetadata) -> set[str]:
    """Every object a snapshot needs."""
    out = {e.key for e in meta.files.values()}
    out |= {ref for ref in meta.indices.values() if isinstance(ref, str)}
    return out


def garbage_collect(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: timedelta = DEFAULT_GC_GRACE,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete data and index files that no retained snapshot references.

    Files younger than ``grace_period`` are kept even if unreferenced: they may
    belong to a commit still in flight.  Returns the deleted keys (with
    ``dry_run``, the keys that would be deleted, and nothing is deleted).
    """
    if grace_period < timedelta(0):
        raise InvalidArgumentError(f"grace_period must not be negative, got {grace_period!r}")
    latest = load(store, dataset_uuid)
    live = referenced_keys(latest)
    for version in log_versions(store, dataset_uuid):
        if version != latest.version:
            live |= referenced_keys(load_version(store, dataset_uuid, version))
    cutoff = (now or datetime.now(timezone.utc)) - grace_period
    live |= _recently_expired_keys(store, dataset_uuid, cutoff, dry_run=dry_run)
    doomed = []
    for prefix in (f"{dataset_uuid}/{latest.table}/", f"{dataset_uuid}/indices/"):
        for info in store.list(prefix):
            if info.key in live or info.key.endswith(keys.COMMON_METADATA):
                continue
            if info.mtime is not None and info.mtime > cutoff:
                continue
            doomed.append(info.key)
    for info in store.list_temporary(f"{dataset_uuid}/"):  # left by crashed puts
        if info.mtime is not None and info.mtime <= cutoff:
            doomed.append(info.key)
    if not dry_run:
        store.delete_many(doomed)
    return doomed


# -- retention --------------------------------------------------------------------

EXPIRED_DIR = "_ktk/expired"
_EXPIRY_STAMP = "%Y%m%dT%H%M%S%fZ"


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
    """
    keys.validate_uuid(dataset_uuid)
    now = datetime.now(timezone.utc)
    limit = _expiry_limit(now, older_than, keep_last, grace_period)
    latest = load(store, dataset_uuid)
    logged = [v for v in log_versions(store, dataset_uuid) if v <= latest.version]
    candidates = logged[:-1]  # the newest log entry starts every roll forward
    if keep_last is not None:
        newest = sorted({*logged, latest.version})[-keep_last:]
        candidates = [v for v in candidates if v < newest[0]]
    # commit timestamps increase with the version: the expired ones are a prefix
    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi) // 2
        if _committed_at(store, dataset_uuid, candidates[mid]) < limit:
            lo = mid + 1
        else:
            hi = mid
    expired = candidates[:lo]
    if dry_run or not expired:
        return expired
    orphaned = _keys_of_versions(store, dataset_uuid, expired) - referenced_keys(latest)
    if orphaned:
        # written before the log entries go, so a concurrent gc sees either the
        # entries or this record (it reads the log first, then the records)
        stamp = datetime.now(timezone.utc)
        record = {"expired_at": stamp.isoformat(), "versions": expired, "keys": sorted(orphaned)}
        name = f"{stamp.strftime(_EXPIRY_STAMP)}-{uuidlib.uuid4().hex[:8]}.json"
        store.put(f"{dataset_uuid}/{EXPIRED_DIR}/{name}", json.dumps(record).encode())
    store.delete_many([keys.log_key(dataset_uuid, v) for v in expired])
    return expired


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
    key = keys.log_key(dataset_uuid, version)
    raw = store.get_or_none(key)
    if raw is None:  # expired meanwhile by someone else
        return datetime.min.replace(tzinfo=timezone.utc)
    return _parse(raw, key).commit.timestamp


def _keys_of_versions(store: Store, dataset_uuid: str, versions: Sequence[int]) -> set[str]:
    """Every object the given snapshots reference (a missing entry references nothing)."""

    def read(version: int) -> set[str]:
        key = keys.log_key(dataset_uuid, version)
        raw = store.get_or_none(key)
        return set() if raw is None else referenced_keys(_parse(raw, key))

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
