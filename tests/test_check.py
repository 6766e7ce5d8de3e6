"""``check_dataset`` and ``ktk check``: a healthy dataset is ok, every damage is reported.

Each test damages a small dataset by hand and asserts the problem kind and
key, the exit status (0 ok, 1 damaged, 2 error) and the ``--json`` report.
"""

from __future__ import annotations

import json
import os
import pathlib

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow import commit
from ktk_arrow.check import KINDS, WARNINGS, CheckReport, Problem, check_dataset
from ktk_arrow.cli import main
from ktk_arrow.spec import index as spec_index
from ktk_arrow.spec import keys
from ktk_arrow.storage import LocalStore, Store

UUID = "ds"


def frame(offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "p": ["a", "a", "b", "b", "c"],
            "x": [offset + i for i in range(1, 6)],
            "s": ["u", "v", "w", "u", "z"],
        }
    )


def build(store: Store) -> Store:
    """Versions 0 (create) and 1 (append): 6 data files, 2 index files."""
    ka.write_dataset(frame(), store, UUID, partition_on=["p"], secondary_indices=["s"])
    ka.write_dataset(frame(10), store, UUID, mode="append")
    return store


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = build(LocalStore(str(tmp_path / "store")))
    assert isinstance(store, LocalStore)
    return store


def latest(store: Store):
    return commit.load(store, UUID)


def a_file(store: Store, partition: str = "a"):
    return next(e for e in latest(store).files.values() if e.label.startswith(f"p={partition}/"))


def rewrite(store: Store, key: str, change) -> None:
    data = json.loads(store.get(key))
    change(data)
    store.put(key, json.dumps(data).encode())


def rewrite_state(store: Store, change) -> None:
    """Change the view and its log entry alike (so they still agree)."""
    version = latest(store).version
    for key in (keys.metadata_key(UUID), keys.log_key(UUID, version)):
        rewrite(store, key, change)


def kinds(report: CheckReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p.key)
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, store: Store, *extra: str) -> tuple[int, dict]:
    code, out, err = run(capsys, "check", store.url, UUID, "--json", *extra)
    assert err == ""
    return code, json.loads(out)


# -- healthy ------------------------------------------------------------------


@pytest.mark.parametrize("deep", [False, True])
def test_healthy_dataset_is_ok(store, deep):
    report = check_dataset(store, UUID, deep=deep)
    assert report.ok and report.problems == []
    assert (report.dataset_uuid, report.version, report.deep) == (UUID, 1, deep)
    # 6 data files, the index file of each version, _common_metadata
    assert report.files_checked == 6 + 2 + 1


def test_healthy_dataset_cli(store, capsys):
    code, out, err = run(capsys, "check", store.url, UUID)
    assert (code, err) == (0, "")
    assert out.strip() == "ds (version 1): 9 files checked: ok"
    code, report = cli_json(capsys, store, "--deep")
    assert code == 0
    assert report == {
        "dataset_uuid": UUID,
        "version": 1,
        "ok": True,
        "deep": True,
        "files_checked": 9,
        "repaired": [],
        "problems": [],
    }


def test_healthy_dataset_on_s3(s3_store):
    build(s3_store)
    assert check_dataset(s3_store, UUID, deep=True).ok


def test_missing_dataset_is_an_error_not_a_report(tmp_path, capsys):
    store = LocalStore(str(tmp_path / "empty"))
    with pytest.raises(ka.DatasetNotFoundError):
        check_dataset(store, "nope")
    code, out, err = run(capsys, "check", store.url, "nope")
    assert code == 2 and out == "" and "ktk: error:" in err and "'nope'" in err


def test_every_kind_is_documented():
    docs = (pathlib.Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    for kind in KINDS:
        assert f"| `{kind}` | {'warning' if kind in WARNINGS else 'error'} |" in docs, kind
    assert set(KINDS) >= WARNINGS


# -- data and index files -------------------------------------------------------


def test_missing_data_file(store, capsys):
    entry = a_file(store)
    store.delete(entry.key)
    report = check_dataset(store, UUID)
    assert not report.ok
    assert kinds(report) == {"missing_file": [entry.key]}
    assert "not in the store" in report.problems[0].detail
    code, out, _ = run(capsys, "check", store.url, UUID)
    assert code == 1
    assert "DAMAGED: 1 problem" in out.splitlines()[0]
    assert "missing_file (1)" in out and entry.key in out
    code, data = cli_json(capsys, store)
    assert code == 1 and data["ok"] is False
    assert data["problems"] == [
        {
            "kind": "missing_file",
            "severity": "error",
            "key": entry.key,
            "detail": report.problems[0].detail,
        }
    ]


def test_missing_file_of_a_retained_older_version(store):
    old = a_file(store).key
    ka.write_dataset(frame(), store, UUID, mode="overwrite")
    store.delete(old)
    report = check_dataset(store, UUID)
    assert kinds(report) == {"missing_file": [old]}
    assert "referenced by versions 0, 1" in report.problems[0].detail


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_data_file_of_the_wrong_size(store, content):
    entry = a_file(store)
    raw = store.get(entry.key)
    store.put(entry.key, raw[:-10] if content is None else content)
    report = check_dataset(store, UUID)
    assert kinds(report) == {"size_mismatch": [entry.key]}
    assert f"records {entry.size}" in report.problems[0].detail
    deep = check_dataset(store, UUID, deep=True)
    assert kinds(deep) == {"size_mismatch": [entry.key], "unreadable_file": [entry.key]}


def test_wrong_recorded_size(store):
    entry = a_file(store)

    def grow(data):
        data["ktk_arrow"]["files"][entry.label][0] += 1

    rewrite_state(store, grow)
    report = check_dataset(store, UUID)
    assert kinds(report) == {"size_mismatch": [entry.key]}
    assert f"stored {entry.size} bytes, version 1 records {entry.size + 1}" in (
        report.problems[0].detail
    )


def test_wrong_row_count_needs_deep(store, capsys):
    entry = a_file(store)

    def inflate(data):
        data["ktk_arrow"]["files"][entry.label][1] = 99

    rewrite_state(store, inflate)
    assert check_dataset(store, UUID).ok  # the footer is not read
    report = check_dataset(store, UUID, deep=True)
    assert kinds(report) == {"row_count_mismatch": [entry.key]}
    assert "holds 2 rows, version 1 records 99" in report.problems[0].detail
    code, data = cli_json(capsys, store, "--deep")
    assert code == 1 and data["problems"][0]["kind"] == "row_count_mismatch"


def test_statistics_narrower_than_the_file(store):
    """Stats that exclude values the file holds would let a filter skip matching rows."""
    entry = a_file(store)
    assert entry.stats["x"][:2] == [1, 2]

    def narrow(data):
        data["ktk_arrow"]["files"][entry.label][2]["x"] = [2, 2, 0]

    rewrite_state(store, narrow)
    # the silent wrong answer the check exists for: x == 1 is pruned away
    assert ka.dataset(store, UUID).to_table(filter=[[("x", "==", 1)]]).num_rows == 0
    report = check_dataset(store, UUID, deep=True)
    assert kinds(report) == {"stats_mismatch": [entry.key]}
    assert "x" in report.problems[0].detail


def test_wider_statistics_are_fine(store):
    entry = a_file(store)

    def widen(data):
        data["ktk_arrow"]["files"][entry.label][2]["x"] = [0, 100, 0]

    rewrite_state(store, widen)
    assert check_dataset(store, UUID, deep=True).ok


def test_missing_and_damaged_index_files(store):
    ref = latest(store).indices["s"]
    store.put(ref, b"not parquet")
    report = check_dataset(store, UUID)
    assert kinds(report) == {"index_unreadable": [ref]}
    assert "is damaged" in report.problems[0].detail
    store.delete(ref)
    assert kinds(check_dataset(store, UUID)) == {"missing_file": [ref]}


def test_index_referencing_a_file_that_is_not_live(store):
    meta = latest(store)
    ref = meta.indices["s"]
    labels = spec_index.from_parquet("s", store.get(ref)).labels()
    assert labels == set(meta.files)
    store.put(ref, spec_index.to_parquet("s", meta.schema.field("s").type, {"u": ["p=a/gone"]}))
    report = check_dataset(store, UUID)
    assert kinds(report) == {"index_dangling": [ref]}
    assert "'p=a/gone'" in report.problems[0].detail


def test_missing_schema_file(store):
    key = keys.common_metadata_key(UUID)
    store.delete(key)
    assert kinds(check_dataset(store, UUID)) == {"missing_file": [key]}


# -- the log ---------------------------------------------------------------------


def test_log_gap(store):
    ka.write_dataset(frame(20), store, UUID, mode="append")  # version 2
    store.delete(keys.log_key(UUID, 1))
    report = check_dataset(store, UUID)
    assert kinds(report) == {"log_gap": [keys.log_key(UUID, 2)]}
    assert "log entry version 1 is missing between 0 and 2" in report.problems[0].detail


def test_log_gap_under_a_lagging_view(store):
    """View at 1, entries 2 and 4: readers stop at 2, entry 4 is unreachable."""
    view = store.get(keys.metadata_key(UUID))
    for n in (20, 30, 40):
        ka.write_dataset(frame(n), store, UUID, mode="append")  # versions 2, 3, 4
    store.put(keys.metadata_key(UUID), view)
    store.delete(keys.log_key(UUID, 3))
    report = check_dataset(store, UUID)
    assert report.version == 2
    found = kinds(report)
    assert found["log_gap"] == [keys.log_key(UUID, 4)]
    assert found["view_lags"] == [keys.metadata_key(UUID)]
    assert not report.ok


def test_entry_copied_from_another_dataset(store):
    ka.write_dataset(frame(), store, "other")
    copied = keys.log_key(UUID, 2)
    store.put(copied, store.get(keys.log_key("other", 0)))
    report = check_dataset(store, UUID)
    found = kinds(report)
    assert found["log_entry_mismatch"] == [copied]
    assert "copied from another dataset" in next(
        p.detail for p in report.problems if p.kind == "log_entry_mismatch"
    )
    assert "load_failed" in found  # readers roll forward into it and refuse
    assert report.version is None


def test_misnumbered_entry(store):
    wrong = keys.log_key(UUID, 5)
    store.put(wrong, store.get(keys.log_key(UUID, 0)))
    report = check_dataset(store, UUID)
    assert kinds(report)["log_entry_mismatch"] == [wrong]
    assert "records version 0, not 5" in report.problems[0].detail


def test_unparsable_entry(store):
    ka.write_dataset(frame(20), store, UUID, mode="append")
    key = keys.log_key(UUID, 1)
    store.put(key, b"{broken")
    report = check_dataset(store, UUID)
    assert kinds(report)["log_entry_corrupt"] == [key]


def test_forked_log(store):
    """An entry replaced by one built on another parent breaks the token chain."""
    key = keys.log_key(UUID, 1)
    rewrite(store, key, lambda d: d["ktk_arrow"]["commit"].update(parent="f" * 32))
    rewrite(
        store, keys.metadata_key(UUID), lambda d: d["ktk_arrow"]["commit"].update(parent="f" * 32)
    )
    report = check_dataset(store, UUID)
    assert kinds(report) == {"log_fork": [key]}


@pytest.mark.parametrize("empty", [True, False])
def test_directory_at_the_next_log_key(store, empty):
    blocked = keys.log_key(UUID, 2)
    os.makedirs(store.path(blocked))
    if not empty:
        with open(os.path.join(store.path(blocked), "x"), "w") as f:
            f.write("x")
    report = check_dataset(store, UUID)
    found = kinds(report)
    assert found["log_blocked"] == [blocked]
    assert "load_failed" in found  # readers refuse it too
    assert not report.ok


def test_duplicate_reference_in_an_entry(store):
    meta = commit.load(store, UUID, version=0)
    (_, first), (second, _) = sorted(meta.files.items())[:2]
    key = keys.log_key(UUID, 0)
    rewrite(store, key, lambda d: d["partitions"].update({second: {"files": {"table": first.key}}}))
    report = check_dataset(store, UUID)
    assert kinds(report) == {"log_entry_corrupt": [key]}
    assert "twice" in report.problems[0].detail and first.key in report.problems[0].detail


# -- the view ---------------------------------------------------------------------


def test_lagging_view_is_a_warning_and_repairable(store, capsys):
    view = store.get(keys.metadata_key(UUID))
    ka.write_dataset(frame(20), store, UUID, mode="append")  # version 2
    store.put(keys.metadata_key(UUID), view)  # back at version 1
    report = check_dataset(store, UUID)
    assert report.ok and report.version == 2
    assert report.problems == [
        Problem(
            "view_lags",
            keys.metadata_key(UUID),
            "the view is version 1, the log holds 2; readers roll forward, plateau sees the "
            "older state until the next commit",
        )
    ]
    assert report.problems[0].severity == "warning"
    code, out, _ = run(capsys, "check", store.url, UUID)
    assert code == 0 and "ok, 1 warning" in out and "view_lags (1)" in out
    code, out, _ = run(capsys, "check", store.url, UUID, "--repair")
    assert code == 0
    assert out.splitlines()[0].startswith("repaired: rewrote the view")
    assert "ok" in out.splitlines()[1] and "warning" not in out
    assert commit.load_view(store, UUID).version == 2


def test_missing_view_is_a_warning(store):
    store.delete(keys.metadata_key(UUID))
    report = check_dataset(store, UUID)
    assert report.ok and kinds(report) == {"view_missing": [keys.metadata_key(UUID)]}
    repaired = check_dataset(store, UUID, repair=True)
    assert repaired.problems == [] and len(repaired.repaired) == 1


def test_view_ahead_of_the_log(store):
    rewrite(store, keys.metadata_key(UUID), lambda d: d["ktk_arrow"]["commit"].update(version=7))
    report = check_dataset(store, UUID)
    assert kinds(report)["view_ahead"] == [keys.metadata_key(UUID)]
    assert not report.ok


def test_view_that_differs_from_its_entry(store):
    label = a_file(store).label

    def drop(data):
        del data["partitions"][label]
        del data["ktk_arrow"]["files"][label]

    rewrite(store, keys.metadata_key(UUID), drop)
    report = check_dataset(store, UUID)
    assert kinds(report)["view_mismatch"] == [keys.metadata_key(UUID)]
    assert repr(label) in next(p.detail for p in report.problems if p.kind == "view_mismatch")


def test_view_whose_recorded_size_differs_from_its_entry(store):
    label = a_file(store).label

    def grow(data):
        data["ktk_arrow"]["files"][label][0] += 1

    rewrite(store, keys.metadata_key(UUID), grow)
    report = check_dataset(store, UUID)
    assert kinds(report)["view_mismatch"] == [keys.metadata_key(UUID)]
    assert repr(label) in next(p.detail for p in report.problems if p.kind == "view_mismatch")


def test_view_copied_from_another_dataset(store):
    ka.write_dataset(frame(), store, "other")
    store.put(keys.metadata_key(UUID), store.get(keys.metadata_key("other")))
    report = check_dataset(store, UUID)
    found = kinds(report)
    assert found["view_corrupt"] == [keys.metadata_key(UUID)]
    assert not report.ok


def test_damage_on_s3(s3_url_and_options, capsys):
    url, options = s3_url_and_options
    s3_store = build(ka.storage.resolve_store(url, dict(options)))
    entry = a_file(s3_store)
    s3_store.put(entry.key, b"x" * 10)
    s3_store.delete(latest(s3_store).indices["s"])
    report = check_dataset(s3_store, UUID, deep=True)
    assert kinds(report) == {
        "missing_file": [latest(s3_store).indices["s"]],
        "size_mismatch": [entry.key],
        "unreadable_file": [entry.key],
    }
    code, out, _ = run(
        capsys, "check", url, UUID, "--json", "--storage-options", json.dumps(options)
    )
    assert code == 1
    assert {p["kind"] for p in json.loads(out)["problems"]} == {"missing_file", "size_mismatch"}
