"""What the operating system refuses surfaces as a StoreError naming the key and the fix.

A name longer than the filesystem allows (ENAMETOOLONG), permission denied
(run for real as user ``nobody`` when the tests run as root), a file in the
way of a directory: never a raw ``OSError``, never "the key exists" or "the
key is missing" when it is neither.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow.storage import LocalStore, store_error

LONG = "x" * 300  # over the 255 bytes a name may have on ext4, xfs, btrfs, tmpfs, APFS


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(str(tmp_path / "store"))


# -- names the filesystem refuses ------------------------------------------------


@pytest.mark.parametrize("op", ["put", "put_if_absent"])
@pytest.mark.parametrize("where", ["directory", "file name"])
def test_writing_a_name_too_long_is_a_store_error_naming_key_and_fix(
    store: LocalStore, op: str, where: str
) -> None:
    key = f"ds/table/p={LONG}/f.parquet" if where == "directory" else f"ds/{LONG}.json"
    with pytest.raises(ka.StoreError) as info:
        getattr(store, op)(key, b"data")
    message = str(info.value)
    assert key in message
    assert "longer than it allows" in message and "shorter" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENAMETOOLONG
    assert store.exists(key) is False
    assert list(store.list_temporary()) == []  # no temp file left behind


@pytest.mark.parametrize("where", ["directory", "file name"])
def test_reading_a_name_too_long_is_absent_or_a_store_error(store: LocalStore, where: str) -> None:
    store.put("ds/other", b"x")  # the directories exist: the long name itself is refused
    key = f"ds/p={LONG}/f.parquet" if where == "directory" else f"ds/{LONG}.json"
    for read in (store.get, store.size):
        with pytest.raises((FileNotFoundError, ka.StoreError)) as info:
            read(key)
        if isinstance(info.value, ka.StoreError):
            assert key in str(info.value) and "shorter" in str(info.value)
    store.delete(key)  # a key that cannot exist is deleted already


def test_a_dataset_uuid_too_long_for_the_disk_is_a_store_error(store: LocalStore) -> None:
    ka.write_dataset(pd.DataFrame({"v": [1]}), store, "short")  # an existing store
    uuid = "u" * 300
    with pytest.raises(ka.StoreError, match="shorter dataset uuid") as info:
        ka.write_dataset(pd.DataFrame({"v": [1]}), store, uuid)
    assert f"{uuid}.by-dataset-metadata.json" in str(info.value)
    with pytest.raises(ka.StoreError, match=uuid):
        ka.dataset(store, uuid)


@pytest.mark.parametrize("fresh_store", [True, False], ids=["fresh-store", "existing-store"])
def test_a_partition_value_too_long_for_the_disk_is_a_store_error(
    store: LocalStore, fresh_store: bool
) -> None:
    if not fresh_store:
        ka.write_dataset(pd.DataFrame({"v": [1]}), store, "short")
    before = list(store.list())
    with pytest.raises(ka.StoreError, match="shorter") as info:
        ka.write_dataset(pd.DataFrame({"p": [LONG], "v": [1]}), store, "ds", partition_on=["p"])
    assert f"p={LONG}" in str(info.value)
    assert list(store.list()) == before


def test_a_dataset_uuid_too_long_in_a_fresh_store_is_a_store_error(store: LocalStore) -> None:
    with pytest.raises(ka.StoreError, match="shorter"):
        ka.write_dataset(pd.DataFrame({"v": [1]}), store, "u" * 300)


def test_a_file_in_the_way_of_a_directory_is_no_existing_key(store: LocalStore) -> None:
    store.put("ds/table", b"not a directory")
    for put in (store.put, store.put_if_absent):
        with pytest.raises(ka.StoreError, match="a file is in the way") as info:
            put("ds/table/part.parquet", b"data")
        assert "'ds/table/part.parquet'" in str(info.value)
    with pytest.raises(FileNotFoundError):  # and reading it is "absent", as before
        store.get("ds/table/part.parquet")


def test_store_error_names_the_errno_case_and_hides_secrets(store: LocalStore) -> None:
    denied = store_error(store, "k", PermissionError(errno.EACCES, "Permission denied"))
    assert "failed on key 'k': permission denied; give this user access" in str(denied)
    full = store_error(store, "k", OSError(errno.ENOSPC, "No space left on device"))
    assert "no space is left on the device" in str(full)
    other = store_error(store, "k", OSError(errno.EIO, "I/O error"))
    assert "I/O error" in str(other) and "reachable" in str(other)


# -- permission denied, for real ----------------------------------------------------

NOBODY = 65534


def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory for the files ``nobody`` will own."""
    path = Path(tempfile.mkdtemp(prefix="ktk-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_without_privileges(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as root without capabilities: file modes then bind it like any user.

    Unlike switching to user ``nobody``, the checkout and its virtualenv need
    not be readable by others (a clone under a private temp directory is not).
    """
    return subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            sys.executable,
            "-c",
            textwrap.dedent(code),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not _can_drop_privileges(), reason="needs root and setpriv")
def test_permission_denied_is_a_store_error_naming_the_key(shared_dir: Path) -> None:
    ka.write_dataset(pd.DataFrame({"v": [1, 2]}), str(shared_dir), "locked")
    ka.write_dataset(pd.DataFrame({"v": [1, 2]}), str(shared_dir), "open")
    # everything belongs to nobody: a process without capabilities may read, not write
    for path in [shared_dir, *shared_dir.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o755 if path.is_dir() else 0o644)
    (shared_dir / "locked.by-dataset-metadata.json").chmod(0o600)
    result = _run_without_privileges(
        f"""
        import ktk_arrow as ka
        from ktk_arrow.storage import LocalStore
        store = LocalStore({str(shared_dir)!r})
        for what, call in [
            ("read", lambda: ka.dataset(store, "locked")),
            ("put", lambda: store.put("open/new-key", b"x")),
            ("put_if_absent", lambda: store.put_if_absent("new/key", b"x")),
        ]:
            try:
                call()
            except ka.StoreError as exc:
                print(what, "StoreError", exc)
            except BaseException as exc:
                print(what, "RAW", type(exc).__name__, exc)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"read", "put", "put_if_absent"}, result.stdout
    for what, key in [
        ("read", "locked.by-dataset-metadata.json"),
        ("put", "open/new-key"),
        ("put_if_absent", "new/key"),
    ]:
        assert lines[what].startswith("StoreError"), lines[what]
        assert f"failed on key {key!r}: permission denied" in lines[what]
        assert "give this user access" in lines[what]
