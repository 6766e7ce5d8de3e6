"""The ``ktk`` command: inspect, query and maintain kartothek datasets from a shell.

``ktk info|ls|schema|history|query|changes|check|gc|expire|compact|index|delete-rows|upsert|
view|demo``.
People get aligned tables and, on a terminal, progress bars on stderr; scripts pass
``--json`` (or ``query --format json|csv``) and parse stdout.  Every
:class:`~ktk_arrow.errors.KtkError` ends as ``ktk: error: <message>`` on
stderr with exit status 2, never a traceback.

``query --filter`` takes a tiny, safe expression language that is parsed
(never evaluated) into kartothek DNF::

    country == "DE" and year >= 2024 or customer in ("C1", "C2")

``and`` binds tighter than ``or``, so the text *is* the OR of ANDs.
"""

from __future__ import annotations

# Only the standard library and errors.py at import time: ``ktk --help`` and
# usage errors must not pay for pyarrow, pandas and fsspec (about 0.8 s).
# Every command imports what it needs when it runs.
import argparse
import datetime as dt
import decimal
import io
import json
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ._optional import import_optional
from .errors import InvalidArgumentError, InvalidPredicateError, KtkError

if TYPE_CHECKING:
    import pyarrow as pa

    from .arrow import KartothekDataset
    from .check import Problem
    from .spec.metadata import DatasetMetadata
    from .storage import Store

Dnf = list[list[tuple[str, str, Any]]]

# ---------------------------------------------------------------------------
# the --filter grammar: text -> kartothek DNF, and back
# ---------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<op>==|!=|<=|>=|<>|<|>|=)
    | (?P<punct>[()\[\],])
    | (?P<name>`(?:[^`]|``)*`)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = frozenset({"and", "or", "in", "not", "is", "true", "false", "null", "none"})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_SET_OPS = ("in", "not in")
_OPS_TEXT = "==, !=, <, <=, >, >=, in, not in, is distinct from"


@dataclass(frozen=True)
class _Token:
    kind: str  # ws string number op punct name word end
    text: str
    pos: int

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)


def _filter_error(text: str, pos: int, message: str) -> InvalidPredicateError:
    shown = re.sub(r"\s", " ", text)
    return InvalidPredicateError(
        f"invalid filter: {message} (at position {pos})\n  {shown}\n  {' ' * pos}^"
    )


def _tokenize(text: str) -> Iterator[_Token]:
    """Tokens on demand, so the first error reported is the leftmost one."""
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "\"'":
                raise _filter_error(text, pos, f"unterminated string starting with {char}")
            if char == "`":
                raise _filter_error(text, pos, "unterminated `quoted column name`")
            raise _filter_error(text, pos, f"unexpected character {char!r}")
        if match.lastgroup != "ws":
            yield _Token(match.lastgroup or "", match.group(), pos)
        pos = match.end()
    yield _Token("end", "", len(text))


def _decode_string(token: str) -> str:
    """A quoted string token as a str: JSON escapes, in single or double quotes."""
    body = token[1:-1]
    if token[0] == "'":
        # turn a single-quoted body into a JSON one: \' -> ', bare " -> \"
        out, i = [], 0
        while i < len(body):
            char = body[i]
            if char == "\\" and i + 1 < len(body):
                out.append("'" if body[i + 1] == "'" else body[i : i + 2])
                i += 2
                continue
            out.append('\\"' if char == '"' else char)
            i += 1
        body = "".join(out)
    decoded: str = json.loads(f'"{body}"', strict=False)
    return decoded


class _FilterParser:
    """Recursive descent over ``disjunction := conjunction ('or' conjunction)*``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.current: _Token | None = None

    def error(self, message: str, token: _Token | None = None) -> InvalidPredicateError:
        return _filter_error(self.text, (token or self.peek()).pos, message)

    def peek(self) -> _Token:
        if self.current is None:
            self.current = next(self.tokens)
        return self.current

    def take(self) -> _Token:
        token = self.peek()
        if token.kind != "end":
            self.current = None
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text.lower() == word:
            self.take()
            return True
        return False

    def parse(self) -> Dnf:
        if self.peek().kind == "end":
            raise self.error("the filter is empty; write e.g. x == 1")
        clauses = [self.conjunction()]
        while self.keyword("or"):
            clauses.append(self.conjunction())
        if self.peek().kind != "end":
            raise self.error(f"expected 'and', 'or' or the end, found {self.peek().describe()}")
        return clauses

    def conjunction(self) -> list[tuple[str, str, Any]]:
        terms = [self.term()]
        while self.keyword("and"):
            terms.append(self.term())
        return terms

    def term(self) -> tuple[str, str, Any]:
        column = self.column()
        op = self.operator(column)
        value = self.value_list(op) if op in _SET_OPS else self.scalar(op)
        return (column, op, value)

    def column(self) -> str:
        token = self.take()
        if token.kind == "name":
            name = token.text[1:-1].replace("``", "`")
            if not name:
                raise self.error("empty column name ``", token)
            return name
        if token.kind == "word" and token.text.lower() not in _KEYWORDS:
            return token.text
        if token.kind == "word":
            raise self.error(
                f"expected a column name, found the keyword {token.text!r} "
                f"(quote such a column name in backticks: `{token.text}`)",
                token,
            )
        raise self.error(f"expected a column name, found {token.describe()}", token)

    def operator(self, column: str) -> str:
        token = self.take()
        if token.kind == "op":
            if token.text == "=":
                raise self.error("use '==' to compare, not '='", token)
            if token.text == "<>":
                raise self.error("use '!=' instead of '<>'", token)
            return token.text
        if token.kind == "word":
            word = token.text.lower()
            if word == "in":
                return "in"
            if word == "not" and self.keyword("in"):
                return "not in"
            if word == "is" and self.keyword("distinct") and self.keyword("from"):
                return "is distinct from"
        raise self.error(
            f"expected an operator ({_OPS_TEXT}) after column {column!r}, found {token.describe()}",
            token,
        )

    def literal(self, after: str) -> Any:
        token = self.take()
        if token.kind == "string":
            return _decode_string(token.text)
        if token.kind == "number":
            is_float = any(c in token.text for c in ".eE")
            return float(token.text) if is_float else int(token.text)
        if token.kind == "word" and token.text.lower() in _LITERALS:
            return _LITERALS[token.text.lower()]
        hint = ""
        if token.kind in ("word", "name"):
            hint = f"; quote strings, e.g. '{token.text.strip('`')}'"
        raise self.error(
            f"expected a value (a number, a quoted string, true, false or null) after "
            f"{after}, found {token.describe()}{hint}",
            token,
        )

    def scalar(self, op: str) -> Any:
        token = self.peek()
        if token.kind == "punct" and token.text in "([":
            raise self.error(f"{op!r} compares with one value; use 'in' for a list", token)
        return self.literal(repr(op))

    def value_list(self, op: str) -> list[Any]:
        opening = self.take()
        if opening.kind != "punct" or opening.text not in "([":
            raise self.error(
                f"{op!r} needs a list in parentheses, e.g. x {op} (1, 2), "
                f"found {opening.describe()}",
                opening,
            )
        closing = ")" if opening.text == "(" else "]"
        values: list[Any] = []
        while True:
            token = self.peek()
            if token.kind == "punct" and token.text == closing:
                self.take()
                return values
            values.append(self.literal(repr(op)))
            token = self.take()
            if token.kind == "punct" and token.text == closing:
                return values
            if token.kind != "punct" or token.text != ",":
                raise self.error(
                    f"expected ',' or {closing!r} in the list, found {token.describe()}", token
                )


def parse_filter(text: str) -> Dnf:
    """Parse ``col op value [and|or ...]`` into kartothek DNF; nothing is evaluated."""
    if not isinstance(text, str):
        raise InvalidPredicateError(f"a filter must be a string, got {type(text).__name__}")
    return _FilterParser(text).parse()


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"the filter language has no literal for {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise InvalidArgumentError(
        f"the filter language has no literal for {value!r} ({type(value).__name__}); "
        "use a string, number, bool or null"
    )


def _format_column(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in _KEYWORDS:
        return name
    return "`" + name.replace("`", "``") + "`"


def format_filter(predicates: Sequence[Sequence[Sequence[Any]]]) -> str:
    """The filter text of kartothek DNF: the inverse of :func:`parse_filter`."""
    clauses = []
    for conjunction in predicates:
        terms = []
        for column, op, value in conjunction:
            if op in _SET_OPS:
                text = "(" + ", ".join(_format_value(v) for v in value) + ")"
            else:
                text = _format_value(value)
            terms.append(f"{_format_column(column)} {op} {text}")
        clauses.append(" and ".join(terms))
    return " or ".join(clauses)


def _predicates_from_json(text: str) -> Dnf:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidPredicateError(
            f'--predicates is not valid JSON ({exc}); write e.g. \'[[["country", "==", "DE"]]]\''
        ) from exc
    if not isinstance(raw, list) or not all(isinstance(c, list) for c in raw):
        raise InvalidPredicateError(
            f"--predicates must be a list of lists of [column, op, value], got {text!r}"
        )
    return [[tuple(t) if isinstance(t, list) else t for t in clause] for clause in raw]


# ---------------------------------------------------------------------------
# output: progress on stderr, tables and JSON on stdout
# ---------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    With a ``total`` it draws a bar; without one a spinner with the elapsed
    time, redrawn by a background thread, for work that reports no steps.
    """

    _SPIN = "|/-\\"

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.note = ""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._draw()
            if self.total is None:
                self._thread = threading.Thread(target=self._spin, daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.enabled:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done = done
        self.note = note
        if total is not None:
            self.total = total
        if self.enabled:
            self._draw()

    def echo(self, text: str = "") -> None:
        """Print a line to stdout without tearing the bar (both may share a terminal)."""
        with self._lock:
            if self.enabled:
                self.stream.write("\r\033[K")
                self.stream.flush()
            print(text, flush=True)
        if self.enabled:
            self._draw()

    def _spin(self) -> None:
        while not self._stop.wait(0.1):
            self._draw()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self._start
        if self.total:
            width = 24
            filled = int(width * min(self.done, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
        else:
            bar = self._SPIN[int(elapsed * 10) % len(self._SPIN)]
        note = f" {self.note}" if self.note else ""
        line = f"{self.label} {bar} {elapsed:.1f}s{note}"
        # a line longer than the terminal wraps, and "\r" then cannot erase it
        line = line[: shutil.get_terminal_size().columns - 1]
        with self._lock:
            self.stream.write(f"\r\033[K{line}")
            self.stream.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _print_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value).replace("\n", "\\n")


def _is_numeric(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Aligned columns, numbers right-aligned, a dashed rule under the header."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _float_cells(values: Sequence[Any]) -> list[str]:
    """Floats of one column with the same number of decimals, so the points line up."""
    texts = [_cell(v) for v in values]
    if any("e" in t or "n" in t for t in texts if t != "null"):  # exponents, nan, inf
        return texts
    decimals = max((len(t.partition(".")[2]) for t in texts), default=0)
    decimals = min(decimals, 6)
    return [t if v is None else f"{v:.{decimals}f}" for t, v in zip(texts, values)]


def format_table(table: pa.Table) -> str:
    """An Arrow table as aligned text."""
    import pyarrow as pa

    right = [_is_numeric(f.type) for f in table.schema]
    columns = []
    for field, column in zip(table.schema, table.columns):
        values = column.to_pylist()
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        columns.append(
            _float_cells(values) if pa.types.is_floating(t) else [_cell(v) for v in values]
        )
    rows = [list(row) for row in zip(*columns)] if columns else []
    return format_rows(table.column_names, rows, right)


def _human_bytes(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------
# the subcommands
# ---------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    from .storage import resolve_store

    options = None
    if args.storage_options:
        try:
            options = json.loads(args.storage_options)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"--storage-options is not valid JSON: {exc}; write e.g. '{{\"anon\": true}}'"
            ) from exc
        if not isinstance(options, dict):
            raise InvalidArgumentError("--storage-options must be a JSON object")
    return resolve_store(args.store, options)


def _schema_rows(meta: DatasetMetadata) -> list[dict[str, Any]]:
    assert meta.schema is not None
    return [
        {
            "name": f.name,
            "type": str(f.type),
            "nullable": f.nullable,
            "partition_key": f.name in meta.partition_keys,
            "indexed": f.name in meta.indices,
        }
        for f in meta.schema
        if not f.name.startswith("__index_level_")
    ]


def _role(row: dict[str, Any]) -> str:
    return "partition key" if row["partition_key"] else "indexed" if row["indexed"] else ""


def _info(meta: DatasetMetadata, store: Store) -> dict[str, Any]:
    sizes = [e.size for e in meta.files.values()]
    return {
        "uuid": meta.uuid,
        "store": store.url,
        "version": meta.version,
        "timestamp": meta.commit.timestamp,
        "operation": meta.commit.operation,
        "partition_keys": list(meta.partition_keys),
        "partitions": len({e.partition_dir for e in meta.files.values()}),
        "indices": sorted(meta.indices),
        "files": len(meta.files),
        "rows": meta.total_rows,
        "bytes": None if any(s is None for s in sizes) else sum(s or 0 for s in sizes),
        "schema": _schema_rows(meta) if meta.schema is not None else [],
    }


def cmd_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from . import commit

    store = _store(args)
    meta = commit.load(store, args.uuid, **_snapshot(args))
    info = _info(meta, store)
    if args.json:
        _print_json(info, out)
        return 0
    pairs = [
        ("dataset", info["uuid"]),
        ("store", info["store"]),
        ("version", f"{meta.version}  ({meta.commit.operation}, {_stamp(meta.commit.timestamp)})"),
        (
            "partitioned by",
            f"{', '.join(meta.partition_keys)}  ({info['partitions']} partitions)"
            if meta.partition_keys
            else "(not partitioned)",
        ),
        ("indices", ", ".join(info["indices"]) or "(none)"),
        ("files", _count(info["files"])),
        ("rows", _count(info["rows"])),
        ("size", _human_bytes(info["bytes"])),
        ("columns", str(len(info["schema"]))),
    ]
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}", file=out)
    rows = [[r["name"], r["type"], _role(r)] for r in info["schema"]]
    print(file=out)
    print(format_rows(["column", "type", "role"], rows, [False, False, False]), file=out)
    return 0


def _top_level_names(store: Store) -> list[str]:
    """Object names directly under the store root; one listing, not a recursive walk.

    A store that does not exist (no such directory, bucket or prefix) is an
    error, not an empty listing: a typo in the path must not read as "no datasets".
    """
    from .storage import LocalStore, store_error

    if isinstance(store, LocalStore) and os.path.isfile(store.root):
        raise InvalidArgumentError(
            f"store {store.url!r} is a file, not a directory; pass the directory that "
            "holds the datasets"
        )
    try:
        entries = store.fs.ls(store.root, detail=False)
    except FileNotFoundError:
        what = "directory" if isinstance(store, LocalStore) else "bucket, container or prefix"
        raise InvalidArgumentError(
            f"store {store.url!r} does not exist (no {what} there); check the path or URL"
        ) from None
    except Exception as exc:  # the backend failed: translate, as storage.py would
        raise store_error(store, "", exc) from exc
    return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)


def _dataset_uuids(store: Store) -> list[str]:
    from .spec import keys

    found = set()
    for name in _top_level_names(store):
        for suffix in (keys.METADATA_SUFFIX, keys.MSGPACK_SUFFIX):
            if name.endswith(suffix) and len(name) > len(suffix):
                found.add(name[: -len(suffix)])
    return sorted(found)


def cmd_ls(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from . import commit

    store = _store(args)
    uuids = _dataset_uuids(store)

    def describe(uuid: str) -> dict[str, Any]:
        try:
            meta = commit.load(store, uuid)
        except KtkError as exc:
            return {"uuid": uuid, "error": str(exc)}
        return {
            "uuid": uuid,
            "version": meta.version,
            "timestamp": meta.commit.timestamp,
            "operation": meta.commit.operation,
            "partition_keys": list(meta.partition_keys),
            "files": len(meta.files),
            "rows": meta.total_rows,
        }

    with ThreadPoolExecutor(max_workers=8) as pool:
        datasets = list(pool.map(describe, uuids))
    if args.json:
        _print_json(datasets)
        return 0
    if not datasets:
        print(f"no datasets in {store.url}", file=sys.stderr)
        return 0
    rows = []
    for d in datasets:
        if "error" in d:
            rows.append([d["uuid"], "?", "?", "?", "", f"error: {d['error'].splitlines()[0]}"])
            continue
        rows.append(
            [
                d["uuid"],
                str(d["version"]),
                _count(d["files"]),
                _count(d["rows"]),
                ", ".join(d["partition_keys"]),
                f"{d['operation']} {_stamp(d['timestamp'])}",
            ]
        )
    header = ["dataset", "version", "files", "rows", "partitioned by", "last commit"]
    print(format_rows(header, rows, [False, True, True, True, False, False]))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from . import commit

    store = _store(args)
    meta = commit.load(store, args.uuid, **_snapshot(args))
    rows = _schema_rows(meta) if meta.schema is not None else []
    if args.json:
        _print_json(rows)
        return 0
    table = [[r["name"], r["type"], "yes" if r["nullable"] else "no", _role(r)] for r in rows]
    print(format_rows(["column", "type", "nullable", "role"], table, [False] * 4))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from . import commit

    store = _store(args)
    snapshots = commit.history(store, args.uuid)
    if args.json:
        _print_json(
            [
                {
                    "version": s.version,
                    "timestamp": s.timestamp,
                    "operation": s.operation,
                    "files_added": s.files_added,
                    "files_removed": s.files_removed,
                    "rows_added": s.rows_added,
                    "rows_removed": s.rows_removed,
                }
                for s in snapshots
            ]
        )
        return 0
    rows = [
        [
            str(s.version),
            _stamp(s.timestamp),
            s.operation,
            f"+{s.files_added}",
            f"-{s.files_removed}",
            _count(s.rows_added),
            _count(s.rows_removed),
        ]
        for s in snapshots
    ]
    # a compaction rewrites rows: it adds and removes none
    header = [
        "version",
        "timestamp",
        "operation",
        "files added",
        "files removed",
        "rows added",
        "rows removed",
    ]
    print(format_rows(header, rows, [True, False, False, True, True, True, True]))
    return 0


def _query_filter(args: argparse.Namespace) -> Dnf | None:
    if args.filter is not None and args.predicates is not None:
        raise InvalidArgumentError("pass either --filter or --predicates, not both")
    if args.filter is not None:
        return parse_filter(args.filter)
    if args.predicates is not None:
        return _predicates_from_json(args.predicates)
    return None


def _columns(value: str | None, ds: KartothekDataset) -> list[str] | None:
    if value is None:
        return None
    columns = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in columns if c not in ds.schema.names]
    if unknown or not columns:
        raise InvalidArgumentError(
            f"--columns names unknown columns {unknown or value!r}; dataset "
            f"{ds.dataset_uuid!r} has columns {ds.schema.names}"
        )
    return columns


TABLE_DEFAULT_LIMIT = 20
# write.DEFAULT_MAX_ROWS_PER_FILE, spelled out so that building the parser (``--help``)
# imports no pyarrow; tests/test_cli_usability.py checks that the two agree
DEFAULT_TARGET_ROWS = 4 * 1024 * 1024


def _check_filter(args: argparse.Namespace, predicates: Dnf | None, ds: KartothekDataset) -> None:
    """Bind the filter to the schema before reading, naming the option that was wrong."""
    from . import planning

    if predicates is None:
        return
    try:
        planning.make_filter(predicates, ds.schema)
    except InvalidPredicateError as exc:
        option = "--filter" if args.filter is not None else "--predicates"
        text = args.filter if args.filter is not None else args.predicates
        message = str(exc)
        if args.filter is not None:  # name the term as written, not its DNF position
            message = re.sub(
                r"^predicates\[(\d+)\]\[(\d+)\]",
                lambda m: _term_text(predicates, int(m.group(1)), int(m.group(2))),
                message,
            )
        raise InvalidPredicateError(f"{option} {text!r}: {message}") from exc


def _term_text(predicates: Dnf, clause: int, term: int) -> str:
    try:
        return f"in {format_filter([[predicates[clause][term]]])!r}"
    except (IndexError, InvalidArgumentError):
        return f"predicates[{clause}][{term}]"


def _run_sql(ds: KartothekDataset, predicates: Dnf | None, sql: str) -> pa.Table:
    import pyarrow as pa

    from . import planning
    from .arrow import read_error

    duckdb = import_optional("duckdb", extra="duckdb")
    source: Any = ds
    if predicates is not None:
        # prune with our planner, then hand DuckDB a plain Arrow dataset that
        # keeps the row filter whatever filter DuckDB pushes down on top
        import pyarrow.dataset as pads

        narrowed = ds.filter(predicates)
        expression = planning.make_filter(predicates, ds.schema).expression
        plain = pads.FileSystemDataset(
            list(narrowed.get_fragments()), ds.schema, ds.format, ds.filesystem
        )
        source = plain.filter(expression) if expression is not None else plain
    con = duckdb.connect()
    try:
        con.register("ds", source)
        relation = con.sql(sql)
        if relation is None:
            return pa.table({})
        result: pa.Table = relation.to_arrow_table()
        return result
    except duckdb.Error as exc:
        if any(t.key in str(exc) for t in ds.tasks):  # DuckDB relays Arrow's read error
            raise read_error(ds.store, ds.metadata, ds.tasks, exc) from exc
        raise InvalidArgumentError(f"--sql failed in DuckDB: {exc}") from exc
    finally:
        con.close()


def cmd_query(args: argparse.Namespace) -> int:
    from .arrow import dataset

    store = _store(args)
    ds = dataset(store, args.uuid, **_snapshot(args))
    predicates = _query_filter(args)
    if args.limit is not None and args.limit < 0:
        raise InvalidArgumentError(f"--limit must not be negative, got {args.limit}")
    limit = args.limit
    if limit is None and args.format == "table":
        limit = TABLE_DEFAULT_LIMIT
    if args.sql is not None:
        if args.columns is not None:
            raise InvalidArgumentError("--columns does not combine with --sql; select in SQL")
        _check_filter(args, predicates, ds)
        table = _run_sql(ds, predicates, args.sql)
        more = limit is not None and table.num_rows > limit
        if limit is not None:
            table = table.slice(0, limit)
    else:
        columns = _columns(args.columns, ds)
        _check_filter(args, predicates, ds)
        # the dataset's own to_table/head: damaged files become KtkErrors naming them
        if limit is None:
            table, more = ds.to_table(columns=columns, filter=predicates), False
        else:
            table = ds.head(limit + 1, columns=columns, filter=predicates)
            more = table.num_rows > limit
            table = table.slice(0, limit)
    _write_result(table, args.format, more, args.limit is None)
    return 0


def _write_result(table: pa.Table, fmt: str, more: bool, default_limit: bool) -> None:
    if fmt == "json":
        _print_json(table.to_pylist())
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        sys.stdout.write(buffer.getvalue().decode())
    else:
        print(format_table(table))
        if more:
            hint = " (pass --limit N for more)" if default_limit else ""
            print(f"... first {table.num_rows} rows shown{hint}")
        else:
            print(f"({table.num_rows} {'row' if table.num_rows == 1 else 'rows'})")


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or bare seconds, as a timedelta."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise InvalidArgumentError(
            f"invalid duration {text!r}; write e.g. 0, 90s, 30m, 1h, 7d or 2w"
        )
    unit = (match.group(2) or "s").lower()
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[unit])


def cmd_gc(args: argparse.Namespace) -> int:
    from . import commit

    store = _store(args)
    grace = parse_duration(args.grace_period)
    label = "gc (dry run)" if args.dry_run else "gc"
    with Progress(label):
        doomed = commit.garbage_collect(
            store, args.uuid, grace_period=grace, dry_run=args.dry_run, force=args.force
        )
    if args.json:
        _print_json({"dry_run": args.dry_run, "files": len(doomed), "keys": doomed})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {_plural(len(doomed), 'unreferenced file')}")
    for key in doomed:
        print(f"  {key}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the dataset is sound (warnings allowed), 1 when it is damaged."""
    from .check import KINDS, check_dataset

    store = _store(args)
    with Progress("check (deep)" if args.deep else "check"):
        report = check_dataset(store, args.uuid, deep=args.deep, repair=args.repair)
    if args.json:
        _print_json(report.to_json())
        return 0 if report.ok else 1
    version = "does not load" if report.version is None else f"version {report.version}"
    errors = [p for p in report.problems if p.severity == "error"]
    warnings = len(report.problems) - len(errors)
    verdict = "ok" if report.ok else f"DAMAGED: {_plural(len(errors), 'problem')}"
    if warnings:
        verdict += f", {_plural(warnings, 'warning')}"
    depth = ", footers read" if args.deep else ""
    for done in report.repaired:
        print(f"repaired: {done}")
    print(
        f"{args.uuid} ({version}): {_plural(report.files_checked, 'file')} checked{depth}: "
        f"{verdict}"
    )
    kinds: dict[str, list[Problem]] = {}
    for problem in report.problems:
        kinds.setdefault(problem.kind, []).append(problem)
    for kind, problems in kinds.items():
        print(f"\n{kind} ({len(problems)}): {KINDS.get(kind, '')}")
        for problem in problems:
            print(f"  {problem.key}")
            print(f"    {problem.detail}")
    return 0 if report.ok else 1


def _timestamp(text: str) -> dt.datetime:
    """An ISO timestamp, UTC unless it names an offset (``Z`` works, too)."""
    stamp = dt.datetime.fromisoformat(text.strip().removesuffix("Z").removesuffix("z"))
    if text.strip()[-1:] in ("Z", "z") and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _as_of(text: str) -> dt.datetime:
    """``--as-of``: an ISO timestamp, or an age (``2h``: the state of two hours ago)."""
    try:
        return _timestamp(text)
    except ValueError:
        pass
    try:
        return dt.datetime.now(dt.timezone.utc) - parse_duration(text)
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"invalid --as-of {text!r}; write an ISO timestamp (2026-01-31T12:00:00, UTC "
            "unless it has an offset) or an age (30m, 2h, 7d: the dataset as it was then)"
        ) from None


def _snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """The ``version=`` / ``as_of=`` of ``--version`` / ``--as-of``."""
    as_of = getattr(args, "as_of", None)
    return {"version": args.version, "as_of": None if as_of is None else _as_of(as_of)}


def _older_than(text: str) -> dt.timedelta | dt.datetime:
    """An age (``7d``) or an ISO timestamp (``2026-01-31T00:00``, UTC unless it says otherwise)."""
    try:
        return parse_duration(text)
    except InvalidArgumentError:
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArgumentError(
                f"invalid --older-than {text!r}; write an age (90s, 30m, 1h, 7d, 2w) or an "
                "ISO timestamp (2026-01-31T00:00:00)"
            ) from None


def cmd_expire(args: argparse.Namespace) -> int:
    from . import commit

    store = _store(args)
    older_than = _older_than(args.older_than) if args.older_than is not None else None
    expired = commit.expire_snapshots(
        store,
        args.uuid,
        older_than=older_than,
        keep_last=args.keep_last,
        grace_period=parse_duration(args.grace_period),
        dry_run=args.dry_run,
    )
    if args.json:
        _print_json({"dry_run": args.dry_run, "versions": expired})
        return 0
    if not expired:
        print(f"nothing to expire (snapshots younger than {args.grace_period} are always kept)")
        return 0
    verb = "would expire" if args.dry_run else "expired"
    print(f"{verb} {_plural(len(expired), 'snapshot')}: {', '.join(map(str, expired))}")
    if not args.dry_run:
        print("their files go with the next `ktk gc` once its grace period has passed")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from . import commit
    from .compact import compact, plan_compaction

    if args.target_rows < 1:
        raise InvalidArgumentError(
            f"--target-rows must be a positive number, got {args.target_rows}"
        )
    store = _store(args)
    partitions = parse_filter(args.partitions) if args.partitions else None
    before = commit.load(store, args.uuid)
    groups = plan_compaction(before, partitions=partitions, target_rows_per_file=args.target_rows)
    if args.dry_run:
        plan = [
            {"partition": g.partition_dir, "files": len(g.files), "rows": g.rows} for g in groups
        ]
        if args.json:
            _print_json({"dry_run": True, "version": before.version, "partitions": plan})
        elif not groups:
            print(f"nothing to compact in {args.uuid!r} (version {before.version})")
        else:
            rows = [
                [g.partition_dir or "(root)", str(len(g.files)), _count(g.rows)] for g in groups
            ]
            print(format_rows(["partition", "files", "rows"], rows, [False, True, True]))
            print(
                f"would compact {_plural(len(groups), 'partition')}; run without --dry-run to do it"
            )
        return 0
    snap = commit.Snapshot.of(before.commit)
    if groups:
        with Progress("compact", total=len(groups)) as progress:
            snap = compact(
                store,
                args.uuid,
                partitions=partitions,
                target_rows_per_file=args.target_rows,
                progress=lambda done, total: progress.update(done, total),
            )
    files_after = len(before.files) - snap.files_removed + snap.files_added if groups else None
    result = {
        "compacted": bool(groups),
        "version": snap.version,
        "partitions": len(groups),
        "files_before": len(before.files),
        "files_after": len(before.files) if files_after is None else files_after,
    }
    if args.json:
        _print_json(result)
    elif not groups:
        print(f"nothing to compact in {args.uuid!r} (version {before.version})")
    else:
        print(
            f"compacted {_plural(len(groups), 'partition')} of {args.uuid!r}: "
            f"{snap.files_removed} files "
            f"-> {snap.files_added}; the dataset has {result['files_after']} files "
            f"(was {result['files_before']}), version {snap.version}"
        )
        print("the old files stay for time travel; `ktk gc` removes files no snapshot needs")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .write import build_indices

    store = _store(args)
    with Progress(f"indexing {', '.join(args.columns)}"):
        snap = build_indices(store, args.uuid, args.columns)
    if args.json:
        _print_json({"version": snap.version, "operation": snap.operation, "columns": args.columns})
    else:
        print(f"indexed {', '.join(args.columns)} in {args.uuid!r}: version {snap.version}")
    return 0


def _change_result(snap: Any) -> dict[str, Any]:
    return {
        "version": snap.version,
        "operation": snap.operation,
        "rows_added": snap.rows_added,
        "rows_removed": snap.rows_removed,
        "files_added": snap.files_added,
        "files_removed": snap.files_removed,
    }


def cmd_delete_rows(args: argparse.Namespace) -> int:
    from .rows import delete_rows

    if args.where is not None and args.all_rows:
        raise InvalidArgumentError("pass either --where or --all-rows, not both")
    if args.where is None and not args.all_rows:
        raise InvalidArgumentError(
            'ktk delete-rows needs --where FILTER (e.g. --where "id == 3"), or --all-rows '
            "to delete every row"
        )
    store = _store(args)
    predicates = None if args.where is None else parse_filter(args.where)
    try:
        with Progress("delete-rows"):
            snap = delete_rows(store, args.uuid, predicates, all_rows=args.all_rows)
    except InvalidPredicateError as exc:  # name the option and the text as typed
        raise InvalidPredicateError(f"--where {args.where!r}: {exc}") from exc
    if args.json:
        _print_json(_change_result(snap))
    elif not snap.rows_removed:
        print(f"no row of {args.uuid!r} matches; nothing changed (version {snap.version})")
    else:
        print(
            f"deleted {_plural(snap.rows_removed, 'row')} of {args.uuid!r}: "
            f"{_plural(snap.files_removed, 'file')} rewritten or dropped, "
            f"{_plural(snap.files_added, 'file')} written; version {snap.version}"
        )
    return 0


def cmd_upsert(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from .rows import upsert

    on = [c.strip() for c in args.on.split(",") if c.strip()]
    if not on:
        raise InvalidArgumentError(f"--on must name key columns, e.g. --on id, got {args.on!r}")
    try:
        data = pq.read_table(args.file)
    except FileNotFoundError:
        raise InvalidArgumentError(f"FILE {args.file!r} does not exist") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidArgumentError(
            f"FILE {args.file!r} is not a readable parquet file: {exc}"
        ) from exc
    store = _store(args)
    with Progress("upsert"):
        snap = upsert(data, store, args.uuid, on=on)
    if args.json:
        _print_json(_change_result(snap))
    else:
        replaced = snap.rows_removed or 0
        print(
            f"upserted {_plural(snap.rows_added or 0, 'row')} into {args.uuid!r}: "
            f"{replaced} replaced, {(snap.rows_added or 0) - replaced} new; "
            f"{_plural(snap.files_removed, 'file')} rewritten, "
            f"{_plural(snap.files_added, 'file')} written; version {snap.version}"
        )
    return 0


def cmd_changes(args: argparse.Namespace) -> int:
    """The rows inserted and deleted by the commits ``--from`` .. ``--to`` (both included)."""
    from .changes import changes

    if args.limit is not None and args.limit < 0:
        raise InvalidArgumentError(f"--limit must not be negative, got {args.limit}")
    store = _store(args)
    if args.columns is None:
        columns = None
    else:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        if not columns:
            raise InvalidArgumentError(f"--columns names no column: {args.columns!r}")
    with Progress("changes"):
        table = changes(store, args.uuid, args.start, args.end, columns=columns)
    limit = args.limit
    if limit is None and args.format == "table":
        limit = TABLE_DEFAULT_LIMIT
    more = limit is not None and table.num_rows > limit
    if limit is not None:
        table = table.slice(0, limit)
    _write_result(table, args.format, more, args.limit is None)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """``ktk view refresh`` writes the view plateau reads; ``ktk view mode`` sets how often."""
    from . import commit

    store = _store(args)
    if args.action == "mode":
        if args.mode is None:
            raise InvalidArgumentError(
                "`ktk view mode` needs a mode: auto, eager or lazy (e.g. `ktk view mode STORE "
                "UUID lazy`)"
            )
        snap = commit.configure(store, args.uuid, view=args.mode)
        payload = {"version": snap.version, "view": args.mode}
        text = f"view of {args.uuid!r} is now {args.mode!r} (version {snap.version})"
    else:
        with Progress(f"refreshing the view of {args.uuid}"):
            meta = commit.refresh_view(store, args.uuid)
        payload = {"version": meta.version, "lazy": commit.is_lazy(meta)}
        text = f"view of {args.uuid!r} is version {meta.version}"
    if args.json:
        _print_json(payload)
    else:
        print(text)
    return 0


# ---------------------------------------------------------------------------
# ktk demo
# ---------------------------------------------------------------------------

DEMO_UUID = "sales"
_COUNTRY_OF_DIGIT = ["DE", "DE", "DE", "FR", "FR", "GB", "GB", "NL", "US", "US"]
_PRODUCTS = ["apples", "bread", "cheese", "coffee", "eggs", "milk", "rice", "tea"]


def demo_batch(seed: int, rows: int, years: Sequence[int], first_id: int) -> pa.Table:
    """Deterministic sample sales rows (a seeded numpy RNG)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    year = rng.choice(np.asarray(years), rows)
    start = np.array([np.datetime64(f"{y}-01-01") for y in year])
    day = start + rng.integers(0, 365, rows).astype("timedelta64[D]")
    customer = rng.integers(1, 2001, rows)  # a customer lives in one country
    quantity = rng.integers(1, 11, rows)
    price = rng.choice(np.array([0.99, 1.49, 2.29, 3.99, 4.5, 7.25, 9.9, 12.0]), rows)
    return pa.table(
        {
            "order_id": pa.array(np.arange(first_id, first_id + rows), pa.int64()),
            "order_date": pa.array(day.astype("datetime64[D]"), pa.date32()),
            "country": pa.array(np.asarray(_COUNTRY_OF_DIGIT)[customer % 10]),
            "year": pa.array(year, pa.int64()),
            "customer": pa.array([f"C{c:05d}" for c in customer]),
            "product": pa.array(rng.choice(_PRODUCTS, rows)),
            "quantity": pa.array(quantity, pa.int64()),
            "amount": pa.array(np.round(quantity * price, 2), pa.float64()),
        }
    )


class _Demo:
    """Prints each step with its code, its result and how long it took."""

    STEPS = 9

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.step = 0

    def say(self, text: str = "") -> None:
        self.progress.echo(text)

    def block(self, text: str) -> None:
        self.say("\n".join(("   " + line).rstrip() for line in text.splitlines()))

    @contextmanager
    def section(self, title: str, code: str, prompt: str = ">>>") -> Iterator[None]:
        self.step += 1
        self.progress.update(self.step - 1, self.STEPS, title)
        self.say(f"\n{self.step}. {title}")
        for line in code.strip("\n").splitlines():
            more = "..." if prompt == ">>>" else " " * len(prompt)
            self.say(f"   {prompt} {line}" if not line.startswith(" ") else f"   {more} {line[1:]}")
        yield
        self.progress.update(self.step, self.STEPS, title)

    def result(self, table: pa.Table, seconds: float, extra: str = "", max_rows: int = 8) -> None:
        self.block(format_table(table[:max_rows]))
        if table.num_rows > max_rows:
            self.say(f"   ... {table.num_rows - max_rows} more rows")
        note = f", {extra}" if extra else ""
        self.say(f"   ({table.num_rows} rows{note}, {seconds * 1000:.1f} ms)")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def cmd_demo(args: argparse.Namespace) -> int:
    with Progress("demo", total=_Demo.STEPS) as progress:
        _run_demo(_Demo(progress), args.dir)
    return 0


def _run_demo(demo: _Demo, where: str) -> None:
    import pyarrow.compute as pc

    from . import commit
    from .arrow import dataset
    from .compact import compact
    from .storage import resolve_store
    from .write import write_dataset

    duckdb = import_optional("duckdb", extra="duckdb")
    pl = import_optional("polars", extra="polars")
    path = os.path.abspath(where)
    store = resolve_store(path)
    uuid = DEMO_UUID
    demo.say(f"ktk demo: a sample sales dataset {uuid!r} in {path}")
    if commit.load_latest(store, uuid) is not None:
        commit.delete_dataset(store, uuid)  # a fresh history, so the output is reproducible
        demo.say(f"(replaced the {uuid!r} dataset of an earlier run)")

    first = demo_batch(seed=42, rows=40_000, years=[2023, 2024], first_id=0)
    second = demo_batch(seed=43, rows=10_000, years=[2024], first_id=40_000)
    with demo.section(
        "write: partitioned by country and year, secondary index on customer",
        f'ka.write_dataset(batch1, "{where}", "{uuid}",\n'
        '                 partition_on=["country", "year"], secondary_indices=["customer"])\n'
        f'ka.write_dataset(batch2, "{where}", "{uuid}", mode="append")',
    ):
        snap0, t0 = _timed(
            lambda: write_dataset(
                first, store, uuid, partition_on=["country", "year"], secondary_indices=["customer"]
            )
        )
        snap1, t1 = _timed(lambda: write_dataset(second, store, uuid, mode="append"))
        for snap, seconds in ((snap0, t0), (snap1, t1)):
            demo.say(
                f"   version {snap.version} ({snap.operation}): {_count(snap.rows_added)} rows "
                f"in {snap.files_added} files, {seconds * 1000:.0f} ms"
            )

    with demo.section(
        "compact: merge the small files the append left behind",
        f'ka.compact("{where}", "{uuid}")',
    ):
        before = len(commit.load(store, uuid).files)
        snap2, t2 = _timed(lambda: compact(store, uuid))
        after = before - snap2.files_removed + snap2.files_added
        demo.say(
            f"   version {snap2.version} ({snap2.operation}): {before} files -> {after} files, "
            f"{t2 * 1000:.0f} ms"
        )

    ds = dataset(store, uuid)
    n_files = len(ds.tasks)
    with demo.section(
        "pyarrow: DNF predicate on the secondary index (prunes files before reading)",
        f'ds = ka.dataset("{where}", "{uuid}")\n'
        'ds.to_table(filter=[[("customer", "==", "C00042")]])',
    ):
        predicate = [[("customer", "==", "C00042")]]
        table, seconds = _timed(lambda: ds.to_table(filter=predicate))
        planned = len(ds.filter(predicate).tasks)
        demo.result(table.sort_by("order_id"), seconds, f"read {planned} of {n_files} files")

    with demo.section(
        "pyarrow: Arrow expression on the partition columns",
        'ds.to_table(filter=(pc.field("country") == "NL") & (pc.field("year") == 2024),\n'
        '            columns=["product", "amount"])\n'
        ' .group_by("product").aggregate([("amount", "sum"), ("amount", "count")])',
    ):
        expression = (pc.field("country") == "NL") & (pc.field("year") == 2024)
        table, seconds = _timed(
            lambda: (
                ds.to_table(filter=expression, columns=["product", "amount"])
                .group_by("product")
                .aggregate([("amount", "sum"), ("amount", "count")])
                .sort_by("product")
            )
        )
        planned = len(ds.filter(expression).tasks)
        table = table.select(["product", "amount_sum", "amount_count"])
        demo.result(table, seconds, f"read {planned} of {n_files} files")

    with demo.section(
        "DuckDB: SQL on the dataset variable (replacement scan)",
        'duckdb.sql("select country, sum(amount) as revenue, count(*) as orders "\n'
        '           "from ds group by all order by country")',
    ):
        # called right here, not in a lambda: DuckDB looks ``ds`` up in the calling frame
        start = time.perf_counter()
        table = duckdb.sql(
            "select country, sum(amount) as revenue, count(*) as orders "
            "from ds group by all order by country"
        ).to_arrow_table()
        demo.result(table, time.perf_counter() - start)

    with demo.section(
        "DuckDB: relational API on the dataset",
        "duckdb.from_arrow(ds).filter(\"year = 2024 and product = 'coffee'\")\n"
        ' .aggregate("country, sum(quantity) as cups").order("cups desc").limit(3)',
    ):
        table, seconds = _timed(
            lambda: (
                duckdb.from_arrow(ds)
                .filter("year = 2024 and product = 'coffee'")
                .aggregate("country, sum(quantity) as cups")
                .order("cups desc")
                .limit(3)
                .to_arrow_table()
            )
        )
        demo.result(table, seconds)

    with demo.section(
        "Polars: lazy scan of the dataset",
        'pl.scan_pyarrow_dataset(ds).filter(pl.col("year") == 2023)\n'
        ' .group_by("product")\n'
        ' .agg(pl.col("amount").sum().alias("revenue"), pl.len().alias("orders"))\n'
        ' .sort("revenue", descending=True).head(5).collect()',
    ):
        frame, seconds = _timed(
            lambda: (
                pl.scan_pyarrow_dataset(ds)
                .filter(pl.col("year") == 2023)
                .group_by("product")
                .agg(pl.col("amount").sum().alias("revenue"), pl.len().alias("orders"))
                .sort("revenue", descending=True)
                .head(5)
                .collect()
            )
        )
        demo.result(frame.to_arrow(), seconds)

    with demo.section(
        "time travel: every commit is a snapshot",
        f'ka.history("{where}", "{uuid}")\nka.dataset("{where}", "{uuid}", version=0).count_rows()',
    ):
        rows = []
        for snap in commit.history(store, uuid):
            old = dataset(store, uuid, version=snap.version)
            rows.append(
                [str(snap.version), snap.operation, str(len(old.tasks)), _count(old.count_rows())]
            )
        header = ["version", "operation", "files", "rows"]
        demo.block(format_rows(header, rows, [True, False, True, True]))
        v0, seconds = _timed(lambda: dataset(store, uuid, version=0).count_rows())
        demo.say(
            f"   version 0: {v0:,} rows ({seconds * 1000:.1f} ms); "
            f"latest (version {ds.version}): {ds.count_rows():,} rows"
        )

    with demo.section("the same from the shell", f"ktk info {where} {uuid}", prompt="$"):
        buffer = io.StringIO()
        args = argparse.Namespace(
            store=path, uuid=uuid, version=None, as_of=None, json=False, storage_options=None
        )
        cmd_info(args, out=buffer)
        demo.block(buffer.getvalue().rstrip("\n"))
    demo.say("\n   more to try:")
    demo.say(f"     ktk query {where} {uuid} --filter \"customer == 'C00042' and year == 2024\"")
    demo.say(f'     ktk query {where} {uuid} --sql "select year, sum(amount) from ds group by 1"')
    demo.say(f"     ktk history {where} {uuid}")


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------


def _version() -> str:
    """The installed ktk-arrow version, without importing anything heavy."""
    package = sys.modules.get(__package__ or "ktk_arrow")
    found = getattr(package, "__version__", None)
    if isinstance(found, str):
        return found
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ktk-arrow")
    except PackageNotFoundError:  # pragma: no cover - a source checkout on sys.path
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``ktk`` argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ktk",
        description="Inspect, query and maintain kartothek datasets (ktk-arrow).",
    )
    parser.add_argument("--version", action="version", version=f"ktk (ktk-arrow) {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--storage-options",
        metavar="JSON",
        help="fsspec options for remote stores, e.g. '{\"anon\": true}'",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    def dataset_command(name: str, help_: str, *parents: argparse.ArgumentParser) -> Any:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common, *parents])
        p.add_argument("store", help="store URL or path, e.g. s3://bucket/prefix or ./data")
        p.add_argument("uuid", help="dataset uuid")
        return p

    def time_travel(p: argparse.ArgumentParser) -> None:
        when = p.add_mutually_exclusive_group()
        when.add_argument(
            "--version", type=int, metavar="N", help="the dataset at version N (time travel)"
        )
        when.add_argument(
            "--as-of",
            metavar="TIME",
            help="the dataset as it was at TIME: an ISO timestamp (UTC unless it has an "
            "offset) or an age such as 2h or 7d",
        )

    p = dataset_command("info", "summary of a dataset", as_json)
    time_travel(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("ls", help="list the datasets in a store", parents=[common, as_json])
    p.add_argument("store", help="store URL or path")
    p.set_defaults(func=cmd_ls)

    p = dataset_command("schema", "columns and types of a dataset", as_json)
    time_travel(p)
    p.set_defaults(func=cmd_schema)

    p = dataset_command("history", "the snapshots of a dataset, oldest first", as_json)
    p.set_defaults(func=cmd_history)

    p = dataset_command("query", "read rows, filtered, or run SQL through DuckDB")
    p.add_argument("--filter", help="""e.g. "country == 'DE' and year in (2023, 2024)\"""")
    p.add_argument("--predicates", metavar="JSON", help='kartothek DNF, e.g. [[["x","==",1]]]')
    p.add_argument("--columns", help="comma-separated columns to read")
    p.add_argument(
        "--limit", type=int, help=f"at most N rows (default for tables: {TABLE_DEFAULT_LIMIT})"
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--sql", help="DuckDB SQL over the dataset, which is called ds")
    time_travel(p)
    p.set_defaults(func=cmd_query)

    p = dataset_command(
        "changes", "rows inserted and deleted by a range of commits (a change feed)"
    )
    p.add_argument(
        "--from", dest="start", type=int, required=True, metavar="VERSION", help="first commit"
    )
    p.add_argument(
        "--to", dest="end", type=int, metavar="VERSION", help="last commit (default: newest)"
    )
    p.add_argument("--columns", help="comma-separated columns to show (the change columns too)")
    p.add_argument(
        "--limit", type=int, help=f"at most N rows (default for tables: {TABLE_DEFAULT_LIMIT})"
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_changes)

    p = dataset_command("check", "verify that metadata and stored files agree", as_json)
    p.add_argument("--deep", action="store_true", help="also read every data file's parquet footer")
    p.add_argument(
        "--repair",
        action="store_true",
        help="first rewrite a lagging or missing view from the log (nothing else is changed)",
    )
    p.set_defaults(func=cmd_check)

    p = dataset_command("gc", "delete files no snapshot references", as_json)
    p.add_argument(
        "--grace-period",
        default="1h",
        help="keep unreferenced files younger than this (in-flight commits); default 1h",
    )
    p.add_argument("--dry-run", action="store_true", help="list, do not delete")
    p.add_argument(
        "--force",
        action="store_true",
        help="allow a grace period under 1m (only when no writer is running)",
    )
    p.set_defaults(func=cmd_gc)

    p = dataset_command("expire", "forget old snapshots (time travel to them ends)", as_json)
    p.add_argument("--older-than", metavar="AGE|TIME", help="e.g. 7d, or 2026-01-31T00:00:00")
    p.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N snapshots")
    p.add_argument(
        "--grace-period",
        default="1h",
        help="never expire snapshots younger than this (writers in flight); default 1h",
    )
    p.add_argument("--dry-run", action="store_true", help="list, do not expire")
    p.set_defaults(func=cmd_expire)

    p = dataset_command("compact", "merge small files per partition (one commit)", as_json)
    p.add_argument(
        "--target-rows",
        type=int,
        default=DEFAULT_TARGET_ROWS,
        help=f"rows per merged file (default {DEFAULT_TARGET_ROWS:,})",
    )
    p.add_argument("--partitions", metavar="FILTER", help="only partitions matching this filter")
    p.add_argument("--dry-run", action="store_true", help="show what would be compacted")
    p.set_defaults(func=cmd_compact)

    p = dataset_command("index", "build secondary indices (one commit)", as_json)
    p.add_argument("columns", nargs="+", metavar="COLUMN")
    p.set_defaults(func=cmd_index)

    p = dataset_command(
        "delete-rows", "delete the rows matching a filter (rewrites only their files)", as_json
    )
    p.add_argument("--where", metavar="FILTER", help="""e.g. "id == 3 or country == 'DE'\"""")
    p.add_argument("--all-rows", action="store_true", help="delete every row (no --where)")
    p.set_defaults(func=cmd_delete_rows)

    p = dataset_command(
        "upsert", "insert rows from a parquet file; rows with the same key are replaced", as_json
    )
    p.add_argument("file", metavar="FILE", help="a parquet file with the dataset's columns")
    p.add_argument("--on", required=True, metavar="COL[,COL]", help="the key column(s)")
    p.set_defaults(func=cmd_upsert)

    p = sub.add_parser(
        "view",
        help="the view plateau/kartothek read: refresh it, or set how often commits do",
        description="`ktk view refresh STORE UUID` writes the view of the newest version; "
        "`ktk view mode STORE UUID auto|eager|lazy` sets when commits rewrite it",
        parents=[common, as_json],
    )
    p.add_argument("action", choices=["refresh", "mode"])
    p.add_argument("store", help="store URL or path, e.g. s3://bucket/prefix or ./data")
    p.add_argument("uuid", help="dataset uuid")
    p.add_argument("mode", nargs="?", choices=["auto", "eager", "lazy"])
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("demo", help="write a sample dataset and query it with Arrow engines")
    p.add_argument("dir", nargs="?", default="./demo-store", help="default ./demo-store")
    p.set_defaults(func=cmd_demo)
    return parser


# Python argument names in library messages -> the ktk flags that set them
_FLAGS = (
    ("older_than", "--older-than"),
    ("keep_last", "--keep-last"),
    ("grace_period", "--grace-period"),
    ("target_rows_per_file", "--target-rows"),
    ("storage_options", "--storage-options"),
    ("as_of", "--as-of"),
    ("dry_run", "--dry-run"),
    ("version", "--version"),
    ("partitions", "--partitions"),
    ("force", "--force"),
    ("deep", "--deep"),
    ("repair", "--repair"),
)
# a value as the library's message shows it: a timedelta repr, a str repr, a list, a word
_TIMEDELTA = r"(?:datetime\.)?timedelta\([^)]*\)"
_VALUE = rf"(?:{_TIMEDELTA}|'[^']*'|\[[^\]]*\]|[\w.:+-]+)"
_PHRASES = (
    (r"\bexpire_snapshots needs\b", "ktk expire needs"),
    (r"(--older-than) \(a datetime or timedelta\)", r"\1 (an age such as 7d, or a timestamp)"),
    (r"(--keep-last) \(a positive int\)", r"\1 N (a positive number)"),
    (r"^version must\b", "--version must"),
    (r"^columns names columns\b", "the COLUMN arguments name columns"),
    (r"`?\bka\.history\(\)`?", "`ktk history STORE UUID`"),
)


def _duration_text(seconds: float) -> str:
    """A duration as ``--grace-period`` / ``--older-than`` take it: 0, 90s, 30m, 1h, 7d."""
    if seconds == 0:
        return "0"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:f}".rstrip("0").rstrip(".") + "s"


def _timedelta_text(text: str) -> str:
    """``datetime.timedelta(days=1, seconds=30)`` / ``timedelta(0)`` as a duration."""
    inner = text[text.index("(") + 1 : -1]
    factors = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    factors |= {"milliseconds": 1e-3, "microseconds": 1e-6}
    total = 0.0
    for position, part in enumerate(p.strip() for p in inner.split(",") if p.strip()):
        name, _, number = part.rpartition("=")
        try:
            total += float(number) * factors[name or ("days", "seconds", "microseconds")[position]]
        except (KeyError, IndexError, ValueError):
            return text
    return _duration_text(total)


def cli_message(message: str) -> str:
    """A library error message worded for the shell: flags instead of Python arguments.

    ``older_than=`` reads ``--older-than``, ``grace_period=timedelta(seconds=30)``
    reads ``--grace-period 30s``, ``force=True`` reads ``--force``, and a
    timedelta shown as ``0:01:00`` reads ``1m``.  The library's messages stay
    as they are for Python callers.
    """
    for name, flag in _FLAGS:
        message = re.sub(rf"\b{name}=(?:True|False)\b", flag, message)

        def with_value(match: re.Match[str], flag: str = flag) -> str:
            value = match["value"]
            if re.fullmatch(_TIMEDELTA, value):
                value = _timedelta_text(value)
            return f"{flag} {value}"

        message = re.sub(rf"\b{name}=(?P<value>{_VALUE})", with_value, message)
        message = re.sub(rf"\b{name}=(?=[\s,;:)]|$)", flag, message)
        if "_" in name:  # an identifier no sentence contains: a Python argument wherever it is
            message = re.sub(rf"(?<![-\w]){name}\b", flag, message)
    for pattern, replacement in _PHRASES:
        message = re.sub(pattern, replacement, message)
    # str(timedelta) in a sentence ("shorter than 0:01:00") -> a duration as typed
    return re.sub(
        r"(?P<than>than |least |under )(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2})(?![\d.])",
        lambda m: m["than"] + _duration_text(int(m["h"]) * 3600 + int(m["m"]) * 60 + int(m["s"])),
        message,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ktk``; return the exit status (0 ok, 1 ``check`` found damage, 2 errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        status: int = args.func(args)
        return status
    except KtkError as exc:
        print(f"ktk: error: {cli_message(str(exc))}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"ktk: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ktk query ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # the operating system or a backend, untranslated below: no traceback
        print(f"ktk: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ktk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
