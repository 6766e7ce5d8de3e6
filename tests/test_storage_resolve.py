"""resolve_store: every store form of DESIGN §1, plus the plateau/minimalkv ones."""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.dirfs import DirFileSystem

from ktk_arrow.errors import InvalidArgumentError, StoreError, UnsupportedStoreError
from ktk_arrow.storage import (
    AzureStore,
    GCSStore,
    LocalStore,
    MemoryStore,
    S3Store,
    Store,
    resolve_store,
)

SECRET = "sekrit-value-9f8e7d"

# minimalkv warns about its own upcoming renames
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- URL forms ---------------------------------------------------------------------


def test_plain_paths_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = resolve_store(str(tmp_path / "a"))
    assert isinstance(store, LocalStore) and store.root == str(tmp_path / "a")
    assert resolve_store(tmp_path / "b").root == str(tmp_path / "b")  # os.PathLike
    monkeypatch.chdir(tmp_path)
    assert resolve_store("rel/dir").root == str(tmp_path / "rel" / "dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_store("~/home-store").root == str(tmp_path / "home-store")


@pytest.mark.parametrize("form", ["file://{p}", "file://localhost{p}", "hfs://{p}", "fs://{p}"])
def test_file_urls_are_local(tmp_path: Path, form: str) -> None:
    store = resolve_store(form.format(p=tmp_path / "x y"))
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path / "x y")
    assert store.url == f"file://{tmp_path / 'x y'}"


def test_file_url_is_percent_decoded(tmp_path: Path) -> None:
    assert resolve_store(f"file://{tmp_path}/a%20b").root == str(tmp_path / "a b")


@pytest.mark.parametrize("url", ["memory://ktk-resolve/x", "hmemory://ktk-resolve/x"])
def test_memory_urls(url: str) -> None:
    store = resolve_store(url)
    assert isinstance(store, MemoryStore) and store.root == "/ktk-resolve/x"


@pytest.mark.parametrize(
    ("url", "cls", "root", "canonical"),
    [
        ("s3://bucket/pre/fix", S3Store, "bucket/pre/fix", "s3://bucket/pre/fix"),
        ("s3://bucket", S3Store, "bucket", "s3://bucket"),
        ("s3a://bucket/p/", S3Store, "bucket/p", "s3://bucket/p"),
        ("gs://bucket/p", GCSStore, "bucket/p", "gs://bucket/p"),
        ("gcs://bucket/p", GCSStore, "bucket/p", "gs://bucket/p"),
        ("abfs://container/p", AzureStore, "container/p", "abfs://container/p"),
        ("abfss://container/p", AzureStore, "container/p", "abfs://container/p"),
        ("az://container/p/q", AzureStore, "container/p/q", "abfs://container/p/q"),
    ],
)
def test_object_store_urls(url: str, cls: type[Store], root: str, canonical: str) -> None:
    options: dict[str, Any] = {
        S3Store: {"key": "k", "secret": SECRET},
        GCSStore: {"token": "anon"},
        AzureStore: {"account_name": "acct", "account_key": base64.b64encode(b"k").decode()},
    }[cls]
    store = resolve_store(url, options)
    assert type(store) is cls
    assert store.root == root and store.url == canonical
    assert store.is_remote and store.conditional_writes
    assert SECRET not in repr(store)


def test_abfs_url_with_account_host() -> None:
    store = resolve_store("abfs://cont@myacct.dfs.core.windows.net/p", {"account_key": "a2V5"})
    assert isinstance(store, AzureStore)
    assert store.root == "cont/p"
    assert store.fs.account_name == "myacct"


@pytest.mark.parametrize("url", ["s3://", "gs:///prefix", "abfs://"])
def test_object_store_url_without_bucket_is_invalid(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="names no"):
        resolve_store(url, {"anon": True} if url.startswith("s3") else {})


def test_unknown_scheme_is_unsupported_and_hides_credentials() -> None:
    with pytest.raises(UnsupportedStoreError, match="nosuchfs") as info:
        resolve_store(f"nosuchfs://user:{SECRET}@host/x")
    assert SECRET not in str(info.value)


def test_empty_url_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError):
        resolve_store("")


def test_non_store_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError, match="cannot use 42"):
        resolve_store(42)


def test_backend_constructor_failure_is_store_error_without_secret() -> None:
    with pytest.raises(StoreError) as info:
        resolve_store("abfs://c/p", {"connection_string": f"Bogus=1;AccountKey={SECRET}"})
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is not None


# -- minimalkv / storefact URLs (plateau users) --------------------------------------


def test_hs3_url_matches_minimalkv() -> None:
    import minimalkv

    url = f"hs3://AKEY:{SECRET}@127.0.0.1:9000/bkt?is_secure=false&region_name=eu-west-1"
    store = resolve_store(url)
    theirs = minimalkv.get_store_from_url(url)
    assert isinstance(store, S3Store)
    assert store.root == theirs.bucket.name == "bkt-akey"  # minimalkv's bucket suffix
    opts = store.fs.storage_options
    assert opts["key"] == "AKEY" and opts["secret"] == SECRET
    assert opts["client_kwargs"]["endpoint_url"] == theirs.endpoint_url == "http://127.0.0.1:9000"
    assert opts["client_kwargs"]["region_name"] == "eu-west-1"
    assert SECRET not in store.url and SECRET not in repr(store)


@pytest.mark.parametrize(
    ("url", "root", "endpoint"),
    [
        ("hs3://k:s@host/bkt?force_bucket_suffix=false", "bkt", "https://host"),
        ("hs3://k:s@host:8080/bkt-k", "bkt-k", "https://host:8080"),  # suffix not doubled
        ("s3://k:s@host/bkt/with/prefix?force_bucket_suffix=false", "bkt/with/prefix", None),
        ("boto://k:s@host/bkt", "bkt-k", "https://host"),
    ],
)
def test_hs3_url_forms(url: str, root: str, endpoint: str | None) -> None:
    store = resolve_store(url)
    assert isinstance(store, S3Store) and store.root == root
    if endpoint:
        assert store.fs.storage_options["client_kwargs"]["endpoint_url"] == endpoint


def test_hs3_secret_is_percent_decoded() -> None:
    store = resolve_store("hs3://key:se%2Fcr%2Bet@host/b?force_bucket_suffix=false")
    assert store.fs.storage_options["secret"] == "se/cr+et"


def test_hs3_without_access_key_needs_no_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(InvalidArgumentError, match="force_bucket_suffix"):
        resolve_store("hs3://host/bkt")
    assert resolve_store("hs3://host/bkt?force_bucket_suffix=false").root == "bkt"


def test_user_storage_options_win_over_url_options() -> None:
    store = resolve_store(
        "hs3://k:s@host/bkt?force_bucket_suffix=false",
        {"client_kwargs": {"region_name": "eu-central-1"}, "secret": "other"},
    )
    opts = store.fs.storage_options
    assert opts["secret"] == "other"
    assert opts["client_kwargs"] == {"endpoint_url": "https://host", "region_name": "eu-central-1"}


def test_hazure_url() -> None:
    key = base64.b64encode(SECRET.encode()).decode()
    store = resolve_store(f"hazure://myacct:{key}@mycontainer/some/prefix")
    assert isinstance(store, AzureStore)
    assert store.root == "mycontainer/some/prefix" and store.url == "abfs://mycontainer/some/prefix"
    assert store.fs.storage_options["account_name"] == "myacct"
    assert store.fs.storage_options["account_key"] == key
    assert key not in repr(store)
    assert isinstance(store.arrow_filesystem(), pafs.AzureFileSystem)


def test_hazure_url_with_sas_token() -> None:
    store = resolve_store(
        "hazure://acct:sv%3D2020%26sig%3Dabc@cont?use_sas&create_if_missing=false"
    )
    assert store.root == "cont"
    assert store.fs.storage_options["sas_token"] == "sv=2020&sig=abc"
    assert "account_key" not in store.fs.storage_options


def test_hgcs_url_carries_credentials_json() -> None:
    creds = {
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": SECRET,
        "refresh_token": "rt",
    }
    encoded = base64.urlsafe_b64encode(json.dumps(creds).encode()).decode()
    store = resolve_store(f"hgcs://{encoded}@gbucket")
    assert isinstance(store, GCSStore) and store.root == "gbucket"
    assert store.fs.storage_options["token"] == creds
    assert SECRET not in repr(store) and encoded not in store.url


# -- other forms -----------------------------------------------------------------------


def test_store_passes_through(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    assert resolve_store(store) is store


def test_fs_root_tuples(tmp_path: Path) -> None:
    local = resolve_store((fsspec.filesystem("file"), str(tmp_path)))
    assert isinstance(local, LocalStore) and local.root == str(tmp_path)
    memory = resolve_store((fsspec.filesystem("memory"), "memory://ktk-tuple"))
    assert isinstance(memory, MemoryStore) and memory.root == "/ktk-tuple"
    import s3fs

    s3 = resolve_store((s3fs.S3FileSystem(anon=True), "s3://bkt/pre"))
    assert isinstance(s3, S3Store) and s3.root == "bkt/pre"


def test_fs_tuple_must_be_fs_and_root() -> None:
    with pytest.raises(InvalidArgumentError, match="tuple"):
        resolve_store(("not-a-fs", "root"))


def test_factories_are_called(tmp_path: Path) -> None:
    assert resolve_store(lambda: str(tmp_path)).root == str(tmp_path)
    store = LocalStore(str(tmp_path))
    assert resolve_store(lambda: store) is store
    fs_tuple = resolve_store(lambda: (fsspec.filesystem("file"), str(tmp_path)))
    assert isinstance(fs_tuple, LocalStore)
    with pytest.raises(InvalidArgumentError, match="factory"):
        resolve_store(lambda: lambda: str(tmp_path))


def test_factory_returning_bare_fs_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError, match="root"):
        resolve_store(lambda: fsspec.filesystem("memory"))


def test_factory_returning_minimalkv_filesystem_store(tmp_path: Path) -> None:
    import minimalkv

    theirs = minimalkv.get_store_from_url(f"hfs://{tmp_path}")
    theirs.put("ds/table/a.parquet", b"data")
    store = resolve_store(functools.partial(minimalkv.get_store_from_url, f"hfs://{tmp_path}"))
    assert isinstance(store, LocalStore) and store.root == str(tmp_path)
    assert store.get("ds/table/a.parquet") == b"data"


def test_factory_returning_minimalkv_s3_store(moto_server: Any) -> None:
    import minimalkv

    key, secret = moto_server.access_key, moto_server.secret_key
    moto_server.client().create_bucket(Bucket=f"mkv-{key}")
    host = moto_server.endpoint_url.removeprefix("http://")
    url = f"hs3://{key}:{secret}@{host}/mkv?is_secure=false&create_if_missing=false"
    theirs = minimalkv.get_store_from_url(url)
    theirs.put("ds.by-dataset-metadata.json", b"{}")
    store = resolve_store(lambda: minimalkv.get_store_from_url(url))
    assert isinstance(store, S3Store) and store.root == f"mkv-{key}"
    assert store.get("ds.by-dataset-metadata.json") == b"{}"
    assert store.put_if_absent("ds.by-dataset-metadata.json", b"x") is False
    # and the URL itself reaches the same objects
    assert resolve_store(url).get("ds.by-dataset-metadata.json") == b"{}"


def test_factory_returning_unknown_object_is_unsupported() -> None:
    import minimalkv

    with pytest.raises(UnsupportedStoreError, match="DictStore"):
        resolve_store(lambda: minimalkv.get_store_from_url("memory://"))


# -- stores without conditional writes ----------------------------------------------------


def test_generic_fsspec_fs_has_no_put_if_absent(tmp_path: Path) -> None:
    fs = DirFileSystem(str(tmp_path), fs=fsspec.filesystem("file"))
    store = resolve_store((fs, "sub"))
    assert type(store) is Store and not store.conditional_writes
    store.put("k", b"1")  # plain writes work
    assert store.get("k") == b"1"
    with pytest.raises(UnsupportedStoreError, match="single_writer=True"):
        store.put_if_absent("new", b"x")
    assert not store.exists("new")


def test_generic_fsspec_fs_in_single_writer_mode(tmp_path: Path) -> None:
    fs = DirFileSystem(str(tmp_path), fs=fsspec.filesystem("file"))
    store = resolve_store((fs, "sub"), single_writer=True)
    assert store.put_if_absent("new", b"x") is True
    assert store.put_if_absent("new", b"y") is False
    assert store.get("new") == b"x"
    assert [i.key for i in store.list()] == ["new"]


def test_other_fsspec_urls_open_without_conditional_writes() -> None:
    store = resolve_store(f"http://user:{SECRET}@127.0.0.1:9/data")
    assert type(store) is Store
    assert SECRET not in store.url and SECRET not in repr(store)
    with pytest.raises(UnsupportedStoreError) as info:
        store.put_if_absent("k", b"x")
    assert SECRET not in str(info.value)


def test_single_writer_flag_is_passed_on(tmp_path: Path) -> None:
    assert resolve_store(str(tmp_path), single_writer=True).single_writer
    assert resolve_store("s3://b/p", {"anon": True}, single_writer=True).single_writer


def test_gcsfs_is_imported_without_the_grpc_probe() -> None:
    resolve_store("gs://b/p", {"token": "anon"})
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"


def test_any_store_fixture_is_the_url_and_options_store(
    any_store: Store, any_url_and_options: tuple[str, dict[str, Any]]
) -> None:
    url, options = any_url_and_options
    assert list(any_store.list()) == []
    any_store.put("k", b"v")
    assert resolve_store(url, dict(options)).get("k") == b"v"
