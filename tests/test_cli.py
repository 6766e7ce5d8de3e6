"""The ``ktk`` command, run in-process (and once as a real process)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktk_arrow as ka
from ktk_arrow import cli
from ktk_arrow.cli import Progress, format_filter, main, parse_duration, parse_filter

UUID = "sales"


def sample(first_id: int, rows: int) -> pa.Table:
    ids = list(range(first_id, first_id + rows))
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "country": pa.array(["DE", "FR", "US"][i % 3] for i in ids),
            "year": pa.array([2023 + i % 2 for i in ids], pa.int64()),
            "customer": pa.array([f"C{i % 7}" for i in ids]),
            "amount": pa.array([i * 1.5 for i in ids]),
            "day": pa.array([dt.date(2024, 1, 1 + i % 28) for i in ids], pa.date32()),
        }
    )


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "store")
    ka.write_dataset(
        sample(0, 60), path, UUID, partition_on=["country", "year"], secondary_indices=["customer"]
    )
    ka.write_dataset(sample(60, 30), path, UUID, mode="append")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


# -- info / ls / schema / history ----------------------------------------------


def test_info_shows_the_summary(store, capsys):
    code, out, err = run(capsys, "info", store, UUID)
    assert code == 0 and err == ""
    assert "dataset         sales" in out
    assert "country, year  (6 partitions)" in out
    assert "indices         customer" in out
    assert "rows            90" in out
    assert "customer  string       indexed" in out


def test_info_json(store, capsys):
    info = run_json(capsys, "info", store, UUID, "--json")
    assert info["uuid"] == UUID
    assert info["version"] == 1
    assert info["partition_keys"] == ["country", "year"]
    assert info["indices"] == ["customer"]
    assert info["rows"] == 90
    assert info["files"] == 12
    assert info["bytes"] > 0
    assert {c["name"]: c["type"] for c in info["schema"]}["day"] == "date32[day]"
    dt.datetime.fromisoformat(info["timestamp"])


def test_info_of_a_past_version(store, capsys):
    info = run_json(capsys, "info", store, UUID, "--version", "0", "--json")
    assert (info["version"], info["rows"], info["operation"]) == (0, 60, "create")


def test_ls_lists_datasets(store, capsys):
    ka.write_dataset(pa.table({"x": [1]}), store, "other")
    code, out, _ = run(capsys, "ls", store)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["dataset", "version", "files", "rows"]
    assert lines[2].split()[:4] == ["other", "0", "1", "1"]
    assert lines[3].split()[:4] == ["sales", "1", "12", "90"]
    listed = run_json(capsys, "ls", store, "--json")
    assert [d["uuid"] for d in listed] == ["other", UUID]
    assert listed[1]["rows"] == 90


def test_ls_of_an_empty_store(tmp_path, capsys):
    code, out, err = run(capsys, "ls", str(tmp_path))
    assert (code, out) == (0, "")
    assert "no datasets" in err
    assert run_json(capsys, "ls", str(tmp_path), "--json") == []


@pytest.mark.parametrize("as_json", [False, True])
def test_ls_of_a_missing_store_is_an_error(tmp_path, capsys, as_json):
    code, out, err = run(capsys, "ls", str(tmp_path / "missing"), *(["--json"] if as_json else []))
    assert (code, out) == (2, "")
    assert "missing' does not exist (no directory there); check the path" in err


def test_ls_reports_a_corrupt_dataset_and_goes_on(store, capsys):
    with open(os.path.join(store, "broken.by-dataset-metadata.json"), "w") as f:
        f.write("{not json")
    listed = run_json(capsys, "ls", store, "--json")
    assert listed[0]["uuid"] == "broken" and "not valid JSON" in listed[0]["error"]
    assert listed[1]["uuid"] == UUID


def test_schema(store, capsys):
    code, out, _ = run(capsys, "schema", store, UUID)
    assert code == 0
    assert out.splitlines()[0].split() == ["column", "type", "nullable", "role"]
    assert "country   string       yes       partition key" in out
    columns = run_json(capsys, "schema", store, UUID, "--json")
    assert [c["name"] for c in columns] == [
        "order_id",
        "country",
        "year",
        "customer",
        "amount",
        "day",
    ]
    assert columns[1]["partition_key"] and columns[3]["indexed"]


def test_history(store, capsys):
    code, out, _ = run(capsys, "history", store, UUID)
    assert code == 0
    assert [line.split()[4] for line in out.splitlines()[2:]] == ["create", "append"]
    snaps = run_json(capsys, "history", store, UUID, "--json")
    assert [(s["version"], s["operation"], s["rows_added"], s["rows_removed"]) for s in snaps] == [
        (0, "create", 60, 0),
        (1, "append", 30, 0),
    ]
    assert out.splitlines()[0].split()[-2:] == ["rows", "removed"]


# -- query ----------------------------------------------------------------------


def expected_ids(predicate) -> list[int]:
    return sorted(r["order_id"] for r in sample(0, 90).to_pylist() if predicate(r))


def query_ids(capsys, store, *args: str) -> list[int]:
    rows = run_json(capsys, "query", store, UUID, "--format", "json", *args)
    return sorted(r["order_id"] for r in rows)


def test_query_filter(store, capsys):
    ids = query_ids(capsys, store, "--filter", "country == 'DE' and year == 2024")
    assert ids == expected_ids(lambda r: r["country"] == "DE" and r["year"] == 2024)


def test_query_filter_or_and_in(store, capsys):
    text = 'customer in ("C1", "C2") and amount > 60 or country not in ["DE", "FR"] and year < 2024'
    ids = query_ids(capsys, store, "--filter", text)
    assert ids == expected_ids(
        lambda r: (
            (r["customer"] in ("C1", "C2") and r["amount"] > 60)
            or (r["country"] not in ("DE", "FR") and r["year"] < 2024)
        )
    )


def test_query_filter_on_dates(store, capsys):
    ids = query_ids(capsys, store, "--filter", "day >= '2024-01-27'")
    assert ids == expected_ids(lambda r: r["day"] >= dt.date(2024, 1, 27))


def test_query_predicates_json(store, capsys):
    dnf = json.dumps([[["customer", "==", "C3"]], [["order_id", "<", 2]]])
    ids = query_ids(capsys, store, "--predicates", dnf)
    assert ids == expected_ids(lambda r: r["customer"] == "C3" or r["order_id"] < 2)


def test_query_columns_limit_and_json(store, capsys):
    rows = run_json(
        capsys,
        "query",
        store,
        UUID,
        "--columns",
        "order_id,amount",
        "--limit",
        "3",
        "--format",
        "json",
    )
    assert len(rows) == 3 and set(rows[0]) == {"order_id", "amount"}


def test_query_csv(store, capsys):
    code, out, _ = run(capsys, "query", store, UUID, "--filter", "order_id == 4", "--format", "csv")
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["order_id"] == "4" and row["country"] == "FR" and row["day"] == "2024-01-05"


def test_query_table_is_aligned_and_limited_by_default(store, capsys):
    code, out, _ = run(capsys, "query", store, UUID, "--columns", "order_id,customer,amount")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["order_id", "customer", "amount"]
    assert set(lines[1]) == {"-", " "}
    body = lines[2:-1]
    assert len(body) == cli.TABLE_DEFAULT_LIMIT
    assert len({len(line) for line in body}) == 1  # numbers right-aligned, same width
    assert "--limit" in lines[-1]
    code, out, _ = run(capsys, "query", store, UUID, "--filter", "order_id == 1")
    assert out.splitlines()[-1] == "(1 row)"


def test_query_sql(store, capsys):
    rows = run_json(
        capsys,
        "query",
        store,
        UUID,
        "--format",
        "json",
        "--sql",
        "select country, count(*) as n from ds group by all order by country",
    )
    assert rows == [
        {"country": "DE", "n": 30},
        {"country": "FR", "n": 30},
        {"country": "US", "n": 30},
    ]


def test_query_sql_with_filter_keeps_both_filters(store, capsys):
    rows = run_json(
        capsys,
        "query",
        store,
        UUID,
        "--format",
        "json",
        "--filter",
        "customer == 'C1'",
        "--sql",
        "select order_id from ds where country = 'DE' order by order_id",
    )
    assert [r["order_id"] for r in rows] == expected_ids(
        lambda r: r["customer"] == "C1" and r["country"] == "DE"
    )


def test_query_time_travel(store, capsys):
    assert len(query_ids(capsys, store, "--version", "0")) == 60
    assert len(query_ids(capsys, store)) == 90


# -- errors: exit 2, one clear line, no traceback --------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{store}", "nope"], "dataset 'nope' does not exist"),
        (["query", "{store}", "nope"], "dataset 'nope' does not exist"),
        (["history", "{store}", "nope"], "dataset 'nope' does not exist"),
        (["info", "{store}", UUID, "--version", "7"], "has no version 7"),
        (["info", "{store}", "../etc"], "invalid dataset_uuid"),
        (["query", "{store}", UUID, "--filter", "country = 'DE'"], "use '==' to compare"),
        (["query", "{store}", UUID, "--filter", "bogus == 1"], "unknown column 'bogus'"),
        (["query", "{store}", UUID, "--filter", "year == 'x'"], "--filter \"year == 'x'\""),
        (["query", "{store}", UUID, "--filter", "country == DE"], "quote strings"),
        (["query", "{store}", UUID, "--columns", "order_id,nope"], "unknown columns ['nope']"),
        (["query", "{store}", UUID, "--predicates", "[[oops"], "not valid JSON"),
        (["query", "{store}", UUID, "--filter", "x == 1", "--predicates", "[]"], "not both"),
        (["query", "{store}", UUID, "--sql", "select nope from ds"], "--sql failed in DuckDB"),
        (["query", "{store}", UUID, "--limit", "-1"], "--limit must not be negative"),
        (["info", "{store}", UUID, "--storage-options", "{bad"], "--storage-options"),
        (["info", "unknown://bucket", UUID], "unknown store scheme"),
        (["gc", "{store}", UUID, "--grace-period", "soon"], "invalid duration"),
        (["gc", "{store}", UUID, "--grace-period", "0"], "pass --force"),
        (["compact", "{store}", UUID, "--partitions", "amount > 1"], "partition columns"),
        (["index", "{store}", UUID, "nope"], "not in the data"),
    ],
)
def test_errors_exit_2_with_a_clear_message(store, capsys, argv, message):
    code, out, err = run(capsys, *[a.replace("{store}", store) for a in argv])
    assert code == 2
    assert out == ""
    assert err.startswith("ktk: error: ")
    assert message in err
    assert "Traceback" not in err


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    assert "usage: ktk" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("info", "ls", "schema", "history", "query", "gc", "compact", "index", "demo"):
        assert command in out
    assert main(["query", "x"]) == 2


# -- gc / compact / index ---------------------------------------------------------


@pytest.fixture
def orphan(store):
    """A data file no snapshot references, older than any grace period."""
    key = f"{UUID}/table/country=DE/year=2023/orphan.parquet"
    path = os.path.join(store, key)
    with open(path, "wb") as f:
        f.write(b"left by a crashed writer")
    old = time.time() - 7200
    os.utime(path, (old, old))
    return key


def test_gc_dry_run_lists_and_keeps(store, orphan, capsys):
    code, out, _ = run(capsys, "gc", store, UUID, "--dry-run")
    assert code == 0
    assert out.splitlines() == ["would delete 1 unreferenced file", f"  {orphan}"]
    assert os.path.exists(os.path.join(store, orphan))
    result = run_json(capsys, "gc", store, UUID, "--dry-run", "--json")
    assert result == {"dry_run": True, "files": 1, "keys": [orphan]}


def test_gc_deletes_unreferenced_files_only(store, orphan, capsys):
    before = ka.dataset(store, UUID).to_table()
    assert run_json(capsys, "gc", store, UUID, "--json")["keys"] == [orphan]
    assert not os.path.exists(os.path.join(store, orphan))
    assert ka.dataset(store, UUID).to_table().equals(before)
    assert ka.dataset(store, UUID, version=0).count_rows() == 60


def test_gc_grace_period_protects_young_files(store, orphan, capsys):
    result = run_json(capsys, "gc", store, UUID, "--grace-period", "3h", "--json")
    assert result["files"] == 0


def test_gc_with_no_grace_period_needs_force(store, capsys):
    young = f"{UUID}/table/country=DE/year=2023/young.parquet"
    with open(os.path.join(store, young), "wb") as f:
        f.write(b"an uncommitted file of a crashed writer, just now")
    result = run_json(capsys, "gc", store, UUID, "--grace-period", "0", "--force", "--json")
    assert result["keys"] == [young]


def test_compact(store, capsys):
    before = ka.dataset(store, UUID).to_table().sort_by("order_id")
    plan = run_json(capsys, "compact", store, UUID, "--dry-run", "--json")
    assert plan["dry_run"] and len(plan["partitions"]) == 6
    assert plan["partitions"][0] == {"partition": "country=DE/year=2023", "files": 2, "rows": 15}
    assert ka.history(store, UUID)[-1].operation == "append"
    code, out, _ = run(capsys, "compact", store, UUID)
    assert code == 0
    assert out.startswith("compacted 6 partitions of 'sales': 12 files -> 6")
    assert ka.dataset(store, UUID).to_table().sort_by("order_id").equals(before)
    again = run_json(capsys, "compact", store, UUID, "--json")
    assert again == {
        "compacted": False,
        "version": 2,
        "partitions": 0,
        "files_before": 6,
        "files_after": 6,
    }


def test_compact_selected_partitions(store, capsys):
    result = run_json(capsys, "compact", store, UUID, "--partitions", "country == 'US'", "--json")
    assert result["partitions"] == 2
    assert (result["files_before"], result["files_after"]) == (12, 10)


def test_index_builds_and_answers(store, capsys):
    code, out, _ = run(capsys, "index", store, UUID, "day")
    assert code == 0 and out.startswith("indexed day in 'sales': version 2")
    assert run_json(capsys, "info", store, UUID, "--json")["indices"] == ["customer", "day"]
    ids = query_ids(capsys, store, "--filter", "day == '2024-01-03'")
    assert ids == expected_ids(lambda r: r["day"] == dt.date(2024, 1, 3))


# -- the filter grammar -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, dnf",
    [
        ("x == 1", [[("x", "==", 1)]]),
        ("x != -2.5e3", [[("x", "!=", -2500.0)]]),
        ("x < 1 and y >= 'a'", [[("x", "<", 1), ("y", ">=", "a")]]),
        ("x <= 1 or y > 2 and z == 3", [[("x", "<=", 1)], [("y", ">", 2), ("z", "==", 3)]]),
        ("x in (1, 2,)", [[("x", "in", [1, 2])]]),
        ("x IN []", [[("x", "in", [])]]),
        ('x not in ["a", null]', [[("x", "not in", ["a", None])]]),
        (
            "b == true AND c == False Or d == none",
            [[("b", "==", True), ("c", "==", False)], [("d", "==", None)]],
        ),
        ("x is distinct from null", [[("x", "is distinct from", None)]]),
        ("`odd col` == 1 and `a``b` == 2", [[("odd col", "==", 1), ("a`b", "==", 2)]]),
        ("`and` == 1", [[("and", "==", 1)]]),
        (r"s == 'it\'s \"q\"'", [[("s", "==", 'it\'s "q"')]]),
        (r's == "tab\tnew\nline \u00fc"', [[("s", "==", "tab\tnew\nline ü")]]),
        ("s == 'ü/=%'", [[("s", "==", "ü/=%")]]),
    ],
)
def test_parse_filter(text, dnf):
    assert parse_filter(text) == dnf


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the filter is empty"),
        ("x", "expected an operator"),
        ("x ==", "expected a value"),
        ("x == 1 y == 2", "expected 'and', 'or' or the end"),
        ("x == 1 and", "expected a column name"),
        ("and == 1", "the keyword 'and'"),
        ("x == (1, 2)", "use 'in' for a list"),
        ("x in 1", "needs a list in parentheses"),
        ("x in (1 2)", "expected ',' or ')'"),
        ("x in (1, 2]", "expected ',' or ')' in the list, found ']'"),
        ("x == 'open", "unterminated string"),
        ("`x == 1", "unterminated `quoted column name`"),
        ("x <> 1", "use '!='"),
        ("x = ;", "use '==' to compare"),
        ("x == 1; drop table ds", "unexpected character ';'"),
        ("x == abc", "quote strings, e.g. 'abc'"),
        ("(x == 1)", "expected a column name, found '('"),
    ],
)
def test_parse_filter_errors_say_what_and_where(text, message):
    with pytest.raises(ka.InvalidPredicateError, match="invalid filter") as info:
        parse_filter(text)
    assert message in str(info.value)
    assert str(info.value).splitlines()[-1].endswith("^")


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os')",
        "__import__('os').system('touch pwned')",
        "x == __import__('os').system('touch pwned')",
        "x == open('/etc/passwd').read()",
        "x == [c for c in ().__class__.__bases__]",
        "x == 1 + 1",
        "x == lambda: 1",
        "exec('1')",
        "x == {'a': 1}",
        "x.y == 1",
    ],
)
def test_hostile_filters_are_rejected_not_run(hostile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ka.InvalidPredicateError, match="invalid filter"):
        parse_filter(hostile)
    assert not (tmp_path / "pwned").exists()


def test_hostile_filter_from_the_command_line(store, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "query", store, UUID, "--filter", "__import__('os').system('touch pwned')"
    )
    assert code == 2 and out == ""
    assert "expected an operator" in err and "after column '__import__'" in err
    assert not (tmp_path / "pwned").exists()


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_columns = st.text(min_size=1)


@st.composite
def _terms(draw):
    column = draw(_columns)
    op = draw(
        st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is distinct from"])
    )
    if op in ("in", "not in"):
        return (column, op, draw(st.lists(_values, max_size=4)))
    return (column, op, draw(_values))


_dnfs = st.lists(st.lists(_terms(), min_size=1, max_size=3), min_size=1, max_size=3)


def _typed(dnf):
    """Values with their types, so True and 1 (equal in Python) are told apart."""

    def one(v):
        return (type(v).__name__, v)

    return [
        [(c, op, [one(x) for x in v] if isinstance(v, list) else one(v)) for c, op, v in clause]
        for clause in dnf
    ]


@settings(max_examples=300, deadline=None)
@given(_dnfs)
def test_the_grammar_parses_what_the_formatter_prints(dnf):
    text = format_filter(dnf)
    assert _typed(parse_filter(text)) == _typed(dnf)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_fails_cleanly(text):
    try:
        dnf = parse_filter(text)
    except ka.InvalidPredicateError:
        return
    assert parse_filter(format_filter(dnf)) == dnf


def test_format_filter_refuses_values_without_a_literal():
    with pytest.raises(ka.InvalidArgumentError):
        format_filter([[("x", "==", float("nan"))]])
    with pytest.raises(ka.InvalidArgumentError):
        format_filter([[("x", "==", dt.date(2024, 1, 1))]])


# -- small helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1.5h", 5400),
        ("7d", 604800),
        ("2w", 1209600),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal():
    pipe = io.StringIO()
    with Progress("work", total=3, stream=pipe) as bar:
        bar.update(1)
    assert pipe.getvalue() == ""
    tty = _Terminal()
    with Progress("work", total=4, stream=tty) as bar:
        bar.update(2, note="half")
    drawn = tty.getvalue()
    assert "work [############............] 2/4" in drawn and "half" in drawn
    assert drawn.endswith("\r\033[K")  # the bar is erased at the end


def test_spinner_without_total_stops():
    tty = _Terminal()
    with Progress("gc", stream=tty):
        time.sleep(0.25)
    assert "gc |" in tty.getvalue() or "gc /" in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")


def test_long_work_keeps_stdout_clean(store, orphan, capsys):
    """Progress goes to stderr only, and only on a terminal: pipes see just the result."""
    code, out, err = run(capsys, "compact", store, UUID, "--json")
    assert code == 0 and err == ""
    json.loads(out)


# -- demo ------------------------------------------------------------------------------


def test_demo_in_process(tmp_path, capsys):
    target = str(tmp_path / "demo")
    code, out, err = run(capsys, "demo", target)
    assert code == 0, err
    for marker in ("pyarrow", "DuckDB", "Polars", "time travel", "read 2 of 10 files"):
        assert marker in out
    ds = ka.dataset(target, cli.DEMO_UUID)
    assert ds.count_rows() == 50_000
    assert [s.operation for s in ka.history(target, cli.DEMO_UUID)] == [
        "create",
        "append",
        "compact",
    ]
    assert ka.dataset(target, cli.DEMO_UUID, version=0).count_rows() == 40_000
    # a second run replaces the dataset and prints the same tables
    code, again, _ = run(capsys, "demo", target)
    assert code == 0
    assert _without_timings(again) == _without_timings(out)


def _without_timings(text: str) -> list[str]:
    import re

    lines = [
        re.sub(r"[\d.]+ ms|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "T", line)
        for line in text.splitlines()
    ]
    return [line for line in lines if "replaced" not in line]


def test_demo_as_a_process(tmp_path):
    target = tmp_path / "demo-store"
    result = subprocess.run(
        [sys.executable, "-m", "ktk_arrow.cli", "demo", str(target)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no terminal: no progress bar
    assert "1. write" in result.stdout and "time travel" in result.stdout
    assert (target / "sales.by-dataset-metadata.json").exists()


def test_errors_as_a_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ktk_arrow.cli", "info", str(tmp_path), "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("ktk: error: dataset 'nope' does not exist")
    assert "Traceback" not in result.stderr


# -- changes ------------------------------------------------------------------------------


def test_changes_lists_the_rows_of_a_version_range(store, capsys):
    customer = ka.dataset(store, UUID).to_table(columns=["customer"])["customer"][0].as_py()
    removed = ka.dataset(store, UUID, filter=[[("customer", "==", customer)]]).count_rows()
    ka.delete_rows(store, UUID, [[("customer", "==", customer)]])
    rows = run_json(capsys, "changes", store, UUID, "--from", "2", "--format", "json")
    assert len(rows) == removed > 0
    assert {(r["_change_type"], r["_commit_version"], r["customer"]) for r in rows} == {
        ("delete", 2, customer)
    }
    # version 1 appended 30 rows; --to bounds the range, --columns projects
    rows = run_json(
        capsys,
        "changes",
        store,
        UUID,
        "--from",
        "1",
        "--to",
        "1",
        "--format",
        "json",
        "--columns",
        "customer",
    )
    assert len(rows) == 30
    assert set(rows[0]) == {"customer", "_change_type", "_commit_version", "_commit_timestamp"}
    assert {r["_change_type"] for r in rows} == {"insert"}


def test_changes_names_the_versions_available(store, capsys):
    code, out, err = run(capsys, "changes", store, UUID, "--from", "7")
    assert code == 2 and out == ""
    assert "start_version 7" in err and "versions 0..1" in err
