"""``ktk check``: verify that a dataset's metadata and its objects on storage agree.

Readers trust the metadata (no listing, no HEAD, no footer read), so damage
to the storage shows only when a read hits it, and some (a wrong row count,
statistics narrower than the data) never shows.  :func:`check_dataset` looks
for all of it at once and reports problems instead of raising:

- the latest state loads;
- every data and index file referenced by the latest snapshot and by every
  retained log entry exists, with the recorded byte size (one listing of the
  dataset's prefix, no request per file; a file referenced under another
  dataset's prefix, as plateau datasets may do, costs one HEAD);
- log entries parse, each holds the version its key says and this dataset's
  uuid, versions are contiguous, and each entry's ``parent`` is the previous
  entry's ``token``; no directory blocks a log key;
- the view is not newer than the log and holds the files of its log entry;
- every label an index references is a live file of the latest snapshot;
- with ``deep=True``, every data file's parquet footer parses and records the
  row count of the metadata, and the recorded statistics contain the footer's.

Problems of the kinds in :data:`WARNINGS` (a view lagging behind the log, a
missing or plateau-written view) are states the next commit repairs by
itself; they do not make the report fail.  Every other kind is damage.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import arrow, commit
from .errors import CorruptMetadataError, DatasetNotFoundError, KtkError, StoreError
from .spec import keys
from .spec.metadata import DatasetMetadata, FileEntry, is_own_key
from .storage import Store

_LOG_NAME = re.compile(r"\d+\.json")

#: kinds that describe a state the next commit repairs, not damage
WARNINGS = frozenset({"view_lags", "view_missing", "view_foreign"})

#: every kind of problem, with what it means (docs/cli.md has the same table)
KINDS: Mapping[str, str] = {
    "load_failed": "the latest state cannot be loaded; readers and writers fail",
    "log_entry_corrupt": "a log entry cannot be parsed",
    "log_entry_mismatch": "a log entry holds another version or another dataset than its key",
    "log_gap": "log versions are not contiguous: entries were deleted",
    "log_fork": "a log entry was not built on the entry before it",
    "log_blocked": "a directory (or other non-object) sits at a log key",
    "view_corrupt": "the view cannot be parsed or describes another dataset",
    "view_ahead": "the view claims a version the log does not hold",
    "view_mismatch": "the view's files differ from the log entry of its version",
    "view_lags": "warning: the view is behind the log (readers roll forward)",
    "view_missing": "warning: no view, the log holds the dataset (plateau cannot see it)",
    "view_foreign": "warning: plateau/kartothek rewrote the view; the next commit adopts it",
    "missing_file": "a referenced data, index, schema or manifest segment file does not exist",
    "segment_unreadable": "a snapshot's manifest segment cannot be read (its files are unknown)",
    "size_mismatch": "a data file's size differs from the size the metadata records",
    "index_unreadable": "an index file cannot be read",
    "index_dangling": "an index references a label that is not a file of the snapshot",
    "unreadable_file": "(--deep) a data file's parquet footer does not parse",
    "row_count_mismatch": "(--deep) a data file holds another number of rows than recorded",
    "stats_mismatch": "(--deep) recorded statistics are narrower than the file's",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, at one key."""

    kind: str
    key: str
    detail: str

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNINGS else "error"

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "key": self.key,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class CheckReport:
    """The outcome of :func:`check_dataset`."""

    dataset_uuid: str
    #: the latest version, ``None`` when the latest state does not load
    version: int | None
    problems: list[Problem] = field(default_factory=list)
    #: distinct data, index and schema files whose existence (and size) was checked
    files_checked: int = 0
    deep: bool = False
    #: what ``repair=True`` fixed before checking
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damage: warnings only, or nothing at all."""
        return all(p.severity == "warning" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_uuid": self.dataset_uuid,
            "version": self.version,
            "ok": self.ok,
            "deep": self.deep,
            "files_checked": self.files_checked,
            "repaired": list(self.repaired),
            "problems": [p.to_json() for p in self.problems],
        }


def check_dataset(
    store: Store, dataset_uuid: str, *, deep: bool = False, repair: bool = False
) -> CheckReport:
    """Verify a dataset; every finding is a :class:`Problem`.

    ``repair=True`` first rewrites a lagging or missing view from the log
    (``commit.refresh_view``), the one repair that needs no guess: damage to
    files or to the log is only reported.  Raises ``DatasetNotFoundError``
    when there is no dataset to check, and ``StoreError`` when the store
    cannot be listed.  Cost: one LIST of the dataset prefix and one of its
    log, one GET per log entry, the view and each index file; ``deep`` adds
    one footer read per data file.
    """
    keys.validate_uuid(dataset_uuid)
    repaired = _refresh_view(store, dataset_uuid) if repair else []
    report = _Checker(store, dataset_uuid).run(deep)
    return replace(report, repaired=repaired)


def _refresh_view(store: Store, dataset_uuid: str) -> list[str]:
    """Bring a lagging or missing view up to the log; what was done, for the report."""
    key = keys.metadata_key(dataset_uuid)
    try:
        before = commit.load_view(store, dataset_uuid)
        latest = commit.refresh_view(store, dataset_uuid)
        after = commit.load_view(store, dataset_uuid)
    except KtkError:
        return []  # the check reports why
    if after is None or (before is not None and before.version == after.version):
        return []
    was = "missing" if before is None else f"version {before.version}"
    return [f"rewrote the view {key!r} ({was}) from log entry version {latest.version}"]


@dataclass
class _Ref:
    """A referenced object: what the newest state referencing it records."""

    key: str
    versions: list[int]
    entry: FileEntry | None  # None for index and schema files (no size recorded)
    recorded_by: int | None = None


class _Checker:
    def __init__(self, store: Store, dataset_uuid: str) -> None:
        self.store = store
        self.uuid = dataset_uuid
        self.problems: list[Problem] = []
        self.listed: dict[str, int] = {}

    def problem(self, kind: str, key: str, detail: str) -> None:
        self.problems.append(Problem(kind, key, detail))

    def run(self, deep: bool) -> CheckReport:
        self.listed = {info.key: info.size for info in self.store.list(f"{self.uuid}/")}
        latest = self._load()
        entries = self._log_entries()
        self._check_view(latest, entries)
        states = ([latest] if latest is not None else []) + [
            e for e in reversed(entries) if latest is None or e.version != latest.version
        ]
        refs = self._references(states, latest)
        self._stat_foreign(refs)
        self._check_files(refs)
        if latest is not None:
            self._check_indices(latest)
        if deep:
            self._check_footers(refs)
        problems = sorted(self.problems, key=lambda p: (p.severity == "warning", p.kind, p.key))
        return CheckReport(
            dataset_uuid=self.uuid,
            version=None if latest is None else latest.version,
            problems=problems,
            files_checked=len(refs),
            deep=deep,
        )

    # -- the latest state ---------------------------------------------------
    def _load(self) -> DatasetMetadata | None:
        try:
            return commit.load(self.store, self.uuid)
        except DatasetNotFoundError:
            if self.listed or self._view_exists():
                # something is stored under the uuid, yet no state loads
                self.problem(
                    "load_failed",
                    keys.metadata_key(self.uuid),
                    f"objects are stored under {self.uuid + '/'!r}, but the dataset does not "
                    "load (deleted without its files, or its view and log are lost)",
                )
                return None
            raise
        except KtkError as exc:
            self.problem("load_failed", _key_in(str(exc), keys.metadata_key(self.uuid)), str(exc))
            return None

    def _view_exists(self) -> bool:
        return any(
            self.store.exists(k)
            for k in (keys.metadata_key(self.uuid), keys.msgpack_metadata_key(self.uuid))
        )

    # -- the log ------------------------------------------------------------
    def _log_entries(self) -> list[DatasetMetadata]:
        """The retained entries that parse, oldest first, after the last deletion."""
        log_dir = f"{self.uuid}/{keys.LOG_DIR}/"
        blocked: dict[str, str] = {}  # a log key -> an object below it
        for key in self.listed:
            name, _, below = key[len(log_dir) :].partition("/")
            if key.startswith(log_dir) and below and _LOG_NAME.fullmatch(name):
                blocked.setdefault(log_dir + name, key)
        for key, inside in blocked.items():
            self.problem(
                "log_blocked",
                key,
                f"{key!r} is a directory (it holds {inside!r}): no commit can create this log "
                "entry; move the directory away",
            )
        versions = commit.log_versions(self.store, self.uuid)
        with ThreadPoolExecutor(max_workers=8) as pool:
            raws = list(pool.map(self._get_entry, versions))
        entries: list[DatasetMetadata] = []
        for version, raw in zip(versions, raws, strict=True):
            key = keys.log_key(self.uuid, version)
            if raw is None:  # expired since the listing
                continue
            try:
                entry = DatasetMetadata.from_json(
                    raw, source=key, loader=commit.segment_loader(self.store)
                )
            except CorruptMetadataError as exc:
                self.problem("log_entry_corrupt", key, str(exc))
                continue
            if entry.uuid != self.uuid:
                self.problem(
                    "log_entry_mismatch",
                    key,
                    f"the entry describes dataset {entry.uuid!r}: it was copied from another "
                    "dataset",
                )
                continue
            if not entry.managed or entry.version != version:
                found = entry.version if entry.managed else "no ktk_arrow version"
                self.problem(
                    "log_entry_mismatch", key, f"the entry records version {found}, not {version}"
                )
                continue
            entries.append(entry)
        self._probe_next(versions)
        tombstones = [e.version for e in entries if e.commit.is_tombstone]
        if tombstones:  # earlier entries belong to a deleted dataset of the same name
            entries = [e for e in entries if e.version > tombstones[-1]]
            versions = [v for v in versions if v > tombstones[-1]]
        self._check_gaps(versions)
        self._check_chain(entries)
        return [e for e in entries if not e.commit.is_tombstone]

    def _get_entry(self, version: int) -> bytes | None:
        key = keys.log_key(self.uuid, version)
        try:
            return self.store.get_or_none(key)
        except StoreError as exc:
            self.problem("log_blocked", key, f"the entry cannot be read: {exc}")
            return None

    def _probe_next(self, versions: list[int]) -> None:
        """The key after the newest entry must be free or an object (a directory blocks it)."""
        if not versions:
            return
        key = keys.log_key(self.uuid, versions[-1] + 1)
        try:
            self.store.get_or_none(key)
        except StoreError as exc:
            if not any(p.kind == "log_blocked" and p.key == key for p in self.problems):
                self.problem("log_blocked", key, f"the next log key cannot be read: {exc}")

    def _check_gaps(self, versions: list[int]) -> None:
        """Retained entries are contiguous (expiry removes a prefix, nothing else removes any)."""
        for previous, version in itertools.pairwise(versions):
            if version != previous + 1:
                missing = (
                    f"version {previous + 1} is"
                    if version == previous + 2
                    else f"versions {previous + 1}..{version - 1} are"
                )
                self.problem(
                    "log_gap",
                    keys.log_key(self.uuid, version),
                    f"log entry {missing} missing between {previous} and {version}: entries "
                    "were deleted; readers stop before the gap",
                )

    def _check_chain(self, entries: list[DatasetMetadata]) -> None:
        """Each entry's ``parent`` is the ``token`` of the entry before it."""
        for previous, entry in itertools.pairwise(entries):
            key = keys.log_key(self.uuid, entry.version)
            if entry.version != previous.version + 1:
                continue  # a gap, or a damaged entry between: reported already
            parent, token = entry.commit.parent, previous.commit.token
            if parent and token and parent != token:
                self.problem(
                    "log_fork",
                    key,
                    f"version {entry.version} was built on parent {parent!r}, but version "
                    f"{previous.version} has token {token!r}: an entry was replaced",
                )

    # -- the view -----------------------------------------------------------
    def _check_view(self, latest: DatasetMetadata | None, entries: list[DatasetMetadata]) -> None:
        key = keys.metadata_key(self.uuid)
        try:
            view = commit.load_view(self.store, self.uuid)
        except KtkError as exc:
            self.problem("view_corrupt", key, str(exc))
            return
        newest = entries[-1] if entries else None
        if view is None:
            if newest is not None and latest is not None:
                self.problem(
                    "view_missing",
                    key,
                    f"the log holds version {newest.version}; plateau/kartothek readers do not "
                    "see the dataset until the next commit writes the view",
                )
            return
        if view.uuid != self.uuid:
            self.problem("view_corrupt", key, f"the view describes dataset {view.uuid!r}")
            return
        if not view.managed:
            if newest is not None:
                self.problem(
                    "view_foreign",
                    key,
                    f"plateau/kartothek rewrote the view after version {newest.version}; "
                    "ktk-arrow adopts it (or refuses, if it dropped files) on the next read",
                )
            return
        if newest is None:
            return
        if view.version > newest.version:
            self.problem(
                "view_ahead",
                key,
                f"the view says version {view.version}, the newest log entry is {newest.version}",
            )
            return
        if view.version < newest.version and not commit.is_lazy(newest):
            # a lazy view lags by design (refreshed amortised, or by `ktk view refresh`)
            self.problem(
                "view_lags",
                key,
                f"the view is version {view.version}, the log holds {newest.version}; readers "
                "roll forward, plateau sees the older state until the next commit",
            )
        logged = next((e for e in entries if e.version == view.version), None)
        differ = [] if logged is None else _differing(view, logged)
        if differ:
            self.problem(
                "view_mismatch",
                key,
                f"the view of version {view.version} and log entry "
                f"{keys.log_key(self.uuid, view.version)!r} differ in {len(differ)} files "
                f"(e.g. {differ[0]!r})",
            )

    # -- referenced files ---------------------------------------------------
    def _references(
        self, states: list[DatasetMetadata], latest: DatasetMetadata | None
    ) -> dict[str, _Ref]:
        """Every object the states reference, with what the newest of them records."""
        refs: dict[str, _Ref] = {}
        for state in states:  # newest first
            for key in sorted(commit.metadata_keys(state)):
                refs.setdefault(key, _Ref(key, [], None)).versions.append(state.version)
            try:
                files = list(state.files.values())
            except KtkError as exc:
                self.problem("segment_unreadable", keys.log_key(self.uuid, state.version), str(exc))
                files = list(state.inline_files.values())
            for entry in files:
                ref = refs.setdefault(entry.key, _Ref(entry.key, [], entry, state.version))
                ref.versions.append(state.version)
                if ref.entry is not None and ref.entry.size is None and entry.size is not None:
                    ref.entry, ref.recorded_by = entry, state.version
        if latest is not None and latest.schema is not None and latest.files:
            schema_key = keys.common_metadata_key(self.uuid, latest.table)
            refs[schema_key] = _Ref(schema_key, [latest.version], None)
        return refs

    def _stat_foreign(self, refs: dict[str, _Ref]) -> None:
        """Sizes of referenced files outside ``<uuid>/`` (the listing does not cover them)."""
        foreign = [key for key in refs if not is_own_key(self.uuid, key)]

        def size(key: str) -> int | None:
            try:
                return self.store.size(key)
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            for key, found in zip(foreign, pool.map(size, foreign), strict=True):
                if found is not None:
                    self.listed[key] = found

    def _check_files(self, refs: dict[str, _Ref]) -> None:
        for ref in refs.values():
            size = self.listed.get(ref.key)
            used = _versions_text(ref.versions)
            if size is None:
                self.problem("missing_file", ref.key, f"referenced by {used}; not in the store")
            elif ref.entry is not None and ref.entry.size is not None and size != ref.entry.size:
                self.problem(
                    "size_mismatch",
                    ref.key,
                    f"stored {size} bytes, version {ref.recorded_by} records {ref.entry.size} "
                    f"(referenced by {used})",
                )

    def _check_indices(self, latest: DatasetMetadata) -> None:
        try:
            live = set(latest.files)
        except KtkError:
            return  # reported as segment_unreadable: the snapshot's files are unknown
        for column, ref in sorted(latest.indices.items()):
            key = ref if isinstance(ref, str) else keys.metadata_key(self.uuid)
            if isinstance(ref, str) and ref not in self.listed:
                continue  # reported as missing_file
            try:
                labels = commit.read_index(self.store, latest, column).labels()
            except KtkError as exc:
                self.problem("index_unreadable", key, str(exc))
                continue
            dangling = sorted(labels - live)
            if dangling:
                self.problem(
                    "index_dangling",
                    key,
                    f"the index of column {column!r} references {len(dangling)} labels that are "
                    f"not files of version {latest.version}, e.g. {dangling[0]!r}",
                )

    # -- deep: parquet footers ----------------------------------------------
    def _check_footers(self, refs: dict[str, _Ref]) -> None:
        data = [r for r in refs.values() if r.entry is not None and r.key in self.listed]

        def read(ref: _Ref) -> pq.FileMetaData | Exception:
            try:
                return arrow.read_footer(self.store, ref.key, self.listed[ref.key])
            except (OSError, pa.ArrowException) as exc:
                return exc

        with ThreadPoolExecutor(max_workers=16) as pool:
            footers = list(pool.map(read, data))
        for ref, footer in zip(data, footers, strict=True):
            assert ref.entry is not None
            if isinstance(footer, Exception):
                self.problem(
                    "unreadable_file", ref.key, f"not parquet: {type(footer).__name__}: {footer}"
                )
                continue
            if ref.entry.rows is not None and footer.num_rows != ref.entry.rows:
                self.problem(
                    "row_count_mismatch",
                    ref.key,
                    f"the file holds {footer.num_rows} rows, version {ref.recorded_by} records "
                    f"{ref.entry.rows}",
                )
            narrower = _narrower_stats(ref.entry, footer)
            if narrower:
                self.problem(
                    "stats_mismatch",
                    ref.key,
                    f"recorded statistics of {', '.join(narrower)} exclude values the file holds: "
                    "filtered reads may skip matching rows",
                )


def _differing(view: DatasetMetadata, logged: DatasetMetadata) -> list[str]:
    """Labels whose file, size or row count differ between a view and its log entry.

    A lazy view records no sizes and row counts: only what it records is compared.
    """
    ours, theirs = view.files, logged.files
    out = set(ours).symmetric_difference(theirs)
    for label in set(ours) & set(theirs):
        mine, entry = ours[label], theirs[label]
        if mine.key != entry.key or any(
            a is not None and a != b for a, b in ((mine.size, entry.size), (mine.rows, entry.rows))
        ):
            out.add(label)
    return sorted(out)


def _versions_text(versions: list[int]) -> str:
    ordered = sorted(set(versions))
    shown = ", ".join(map(str, ordered[:5])) + (", ..." if len(ordered) > 5 else "")
    return f"version {shown}" if len(ordered) == 1 else f"versions {shown}"


def _key_in(message: str, default: str) -> str:
    """The first quoted dataset key in an error message, else ``default``."""
    for part in message.split("'")[1::2]:
        if "/" in part and not part.startswith(("file:", "s3:", "gs:", "abfs:", "memory:")):
            return part
    return default


def _narrower_stats(entry: FileEntry, footer: pq.FileMetaData) -> list[str]:
    """Columns whose recorded [min, max] or null count does not cover the footer's."""
    if not entry.stats or footer.num_row_groups == 0:
        return []
    schema = footer.schema.to_arrow_schema()
    columns = {footer.schema.column(i).path: i for i in range(footer.num_columns)}
    out = []
    for column in sorted(set(entry.stats) & set(columns) & set(schema.names)):
        try:
            lo, hi, _ = entry.typed_stats(schema, {column})[column]
        except CorruptMetadataError:
            out.append(column)
            continue
        nulls = entry.stats[column][2]
        found = [
            footer.row_group(g).column(columns[column]).statistics
            for g in range(footer.num_row_groups)
        ]
        if any(s is None or not s.has_null_count for s in found):
            continue
        if sum(s.null_count for s in found) != nulls:
            out.append(column)
            continue
        bounds = [(s.min, s.max) for s in found if s.has_min_max]
        if not bounds or lo is None or hi is None:
            continue
        try:
            if lo > min(b[0] for b in bounds) or hi < max(b[1] for b in bounds):
                out.append(column)
        except TypeError:  # the file's type is not the recorded one
            out.append(column)
    return out
