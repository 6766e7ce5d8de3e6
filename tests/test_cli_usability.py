"""``ktk`` as a shell user meets it: --version, --as-of, flags in messages, a fast --help."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow import cli
from ktk_arrow.cli import cli_message, main

UUID = "sales"
SRC = Path(cli.__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Version 0 (2 rows), then, a moment later, version 1 (3 rows)."""
    path = str(tmp_path / "store")
    ka.write_dataset(pd.DataFrame({"p": ["a", "b"], "v": [1, 2]}), path, UUID, partition_on=["p"])
    time.sleep(0.05)
    ka.write_dataset(pd.DataFrame({"p": ["a"], "v": [3]}), path, UUID, mode="append")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- ktk --version ---------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--version")
    assert (code, err) == (0, "")
    assert out == f"ktk (ktk-arrow) {ka.__version__}\n"


# -- --version N / --as-of TIME -----------------------------------------------------------


def _between_the_commits(store: str) -> str:
    first, second = ka.history(store, UUID)
    middle = first.timestamp + (second.timestamp - first.timestamp) / 2
    return middle.isoformat()


@pytest.mark.parametrize("command", ["info", "schema", "query"])
def test_read_commands_travel_by_version_and_as_of(
    store: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    as_of = _between_the_commits(store)
    naive_utc = dt.datetime.fromisoformat(as_of).replace(tzinfo=None).isoformat()
    zulu = naive_utc + "Z"
    outputs = {}
    for when in (["--version", "0"], ["--as-of", as_of], ["--as-of", naive_utc], ["--as-of", zulu]):
        code, out, err = run(capsys, command, store, UUID, *when)
        assert (code, err) == (0, ""), err
        outputs[tuple(when)] = out
    assert len(set(outputs.values())) == 1  # all the same snapshot
    latest = run(capsys, command, store, UUID)[1]
    if command == "info":
        info = json.loads(run(capsys, "info", store, UUID, "--as-of", as_of, "--json")[1])
        assert (info["version"], info["rows"]) == (0, 2)
        assert (
            json.loads(run(capsys, "info", store, UUID, "--as-of", "0s", "--json")[1])["version"]
            == 1
        )
    if command == "query":
        assert "(2 rows)" in outputs[("--version", "0")] and "(3 rows)" in latest


def test_as_of_an_age(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    info = json.loads(run(capsys, "info", store, UUID, "--as-of", "0s", "--json")[1])
    assert info["version"] == 1
    code, _, err = run(capsys, "info", store, UUID, "--as-of", "1d")
    assert code == 2
    assert "no version committed at or before" in err
    assert "`ktk history STORE UUID` lists the versions kept" in err  # not "ka.history()"


def test_as_of_and_version_exclude_each_other(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "query", store, UUID, "--version", "0", "--as-of", "1h")
    assert code == 2 and "not allowed with argument --version" in err


def test_an_as_of_that_is_no_time(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "schema", store, UUID, "--as-of", "yesterday")
    assert code == 2
    assert "invalid --as-of 'yesterday'; write an ISO timestamp" in err


# -- ktk ls on something that is not a store -----------------------------------------------


def test_ls_of_a_file_is_an_error(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ls", os.path.join(store, f"{UUID}.by-dataset-metadata.json"))
    assert (code, out) == (2, "")
    assert "is a file, not a directory" in err


# -- messages name flags, not Python arguments --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected", "python_words"),
    [
        (
            ["expire", "{store}", UUID],
            "ktk expire needs --older-than (an age such as 7d, or a timestamp), --keep-last N",
            ["older_than", "keep_last", "expire_snapshots"],
        ),
        (
            ["expire", "{store}", UUID, "--keep-last", "0"],
            "--keep-last must be a positive int",
            ["keep_last"],
        ),
        (
            ["gc", "{store}", UUID, "--grace-period", "30s"],
            "--grace-period 30s is shorter than 1m",
            ["grace_period", "force=True", "timedelta", "0:01:00"],
        ),
        (["info", "{store}", UUID, "--version", "-1"], "--version must be", ["version must"]),
        (
            ["compact", "{store}", UUID, "--target-rows", "0"],
            "--target-rows must be a positive number",
            ["target_rows_per_file"],
        ),
        (
            ["index", "{store}", UUID, "nope"],
            "the COLUMN arguments name columns ['nope']",
            ["columns names"],
        ),
    ],
)
def test_errors_name_the_flags(
    store: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
    python_words: list[str],
) -> None:
    code, _, err = run(capsys, *[a.format(store=store) for a in argv])
    assert code == 2
    assert expected in err
    for word in python_words:
        assert word not in err.replace(expected, "")


@pytest.mark.parametrize(
    ("library", "shell"),
    [
        ("pass either version= or as_of=, not both", "pass either --version or --as-of, not both"),
        (
            "grace_period=datetime.timedelta(days=1, seconds=30) is long",
            "--grace-period 86430s is long",
        ),
        ("pass grace_period=timedelta(0) only if", "pass --grace-period 0 only if"),
        ("or pass force=True if no writer", "or pass --force if no writer"),
        ("dry_run=True lists", "--dry-run lists"),
        ("partitions= may only name", "--partitions may only name"),
        (
            "the credentials in storage_options are valid",
            "the credentials in --storage-options are valid",
        ),
        ("keep_last=3 keeps all 4", "--keep-last 3 keeps all 4"),
        ("shorter than 1:00:00: gc", "shorter than 1h: gc"),
        # ordinary words and timestamps stay as they are
        ("dataset 'x' has no version 7", "dataset 'x' has no version 7"),
        ("committed at 2026-01-01 00:01:00+00:00", "committed at 2026-01-01 00:01:00+00:00"),
        ("the partitions of 'x'", "the partitions of 'x'"),
    ],
)
def test_cli_message(library: str, shell: str) -> None:
    assert cli_message(library) == shell


def test_a_raw_os_error_from_below_is_a_message_not_a_traceback(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.unlink(sorted(glob.glob(os.path.join(store, UUID, "table", "p=a", "*.parquet")))[0])
    code, out, err = run(capsys, "index", store, UUID, "v")
    assert (code, out) == (2, "")
    assert err.startswith("ktk: error: ") and "Traceback" not in err
    assert ".parquet" in err


def test_compact_default_is_the_writers_default() -> None:
    from ktk_arrow.write import DEFAULT_MAX_ROWS_PER_FILE

    assert cli.DEFAULT_TARGET_ROWS == DEFAULT_MAX_ROWS_PER_FILE


# -- a fast --help -----------------------------------------------------------------------

HEAVY = ("pyarrow", "pandas", "numpy", "fsspec", "duckdb", "polars")

_PROBE = """
import contextlib, io, sys
{setup}
from ktk_arrow import cli
commands = [["--help"], ["--version"], ["nosuchcommand"], ["query"]]
commands += [[c, "--help"] for c in cli.build_parser()._subparsers._group_actions[0].choices]
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(argv)
    assert code in (0, 2), (argv, code)
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""

# the package without its __init__ (which imports the public API): cli.py alone
_BARE_PACKAGE = textwrap.dedent(
    f"""
    import types
    package = types.ModuleType("ktk_arrow")
    package.__path__ = [{str(SRC / "ktk_arrow")!r}]
    package.__version__ = "0"
    sys.modules["ktk_arrow"] = package
    """
)


def _heavy_modules_after(setup: str) -> list[str]:
    code = _PROBE.format(setup=setup, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_help_and_usage_errors_import_nothing_heavy_from_cli() -> None:
    assert _heavy_modules_after(_BARE_PACKAGE) == []


def test_help_imports_no_pyarrow_or_pandas() -> None:
    assert _heavy_modules_after("") == []


# -- the docs list every command -------------------------------------------------------------


def test_readme_and_cli_docs_list_every_command() -> None:
    commands = list(cli.build_parser()._subparsers._group_actions[0].choices)
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    docs = (root / "docs" / "cli.md").read_text()
    listed = readme.split("`ktk ", 1)[1].split("`", 1)[0].split("|")
    assert sorted(listed) == sorted(commands)
    for command in commands:
        assert re.search(rf"\n    {command}\s", docs), f"docs/cli.md's usage block lacks {command}"
        assert f"## `ktk {command}" in docs, f"docs/cli.md has no section for ktk {command}"
    assert "--as-of TIME" in docs and "ktk --version" in docs
