"""minimalkv store objects passed as ``store=``: mapped to our native stores.

Most kartothek/plateau pipelines pass a store *object*
(``minimalkv.get_store_from_url(...)``, ``FilesystemStore``, ``S3FSStore``,
...), not a URL.  Each must become our store for the same location and
credentials, with conditional writes, so that what we write plateau reads
through the very same object, and the other way round.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager
from ktk_arrow.storage import AzureStore, GCSStore, LocalStore, S3Store, resolve_store

minimalkv = pytest.importorskip("minimalkv")

# minimalkv and plateau warn about their own upcoming renames
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def frame() -> pd.DataFrame:
    return pd.DataFrame({"country": ["DE", "FR", "DE"], "customer": [1, 2, 3], "x": [1.0, 2, 3]})


def sorted_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df[["country", "customer", "x"]].sort_values("customer").reset_index(drop=True)
    df["country"] = df["country"].astype(str)
    return df


def assert_round_trips_with_plateau(kv: Any, for_plateau: Any = None) -> None:
    """We write through the object, plateau reads through it; plateau appends, we read.

    ``for_plateau``: what plateau is given instead of ``kv`` (it refuses store
    objects that do not pickle, such as S3 stores holding a boto3 bucket).
    """
    from plateau.io import eager as plateau_eager

    theirs_store = kv if for_plateau is None else for_plateau
    eager.store_dataframes_as_dataset(kv, "sales", [frame()], partition_on=["country"])
    theirs = plateau_eager.read_table("sales", theirs_store)
    pd.testing.assert_frame_equal(sorted_frame(theirs), sorted_frame(frame()))
    plateau_eager.update_dataset_from_dataframes(
        [frame().assign(customer=[4, 5, 6])], store=theirs_store, dataset_uuid="sales"
    )
    ours = eager.read_table("sales", kv)
    assert sorted(ours["customer"]) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ka.DatasetExistsError):
        ka.write_dataset(frame(), kv, "sales")


def assert_conditional(store: Any) -> None:
    assert store.conditional_writes
    assert store.put_if_absent("probe-key", b"first") is True
    assert store.put_if_absent("probe-key", b"second") is False
    assert store.get("probe-key") == b"first"


# -- local disk --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda root: minimalkv.get_store_from_url(f"hfs://{root}"),
        lambda root: minimalkv.get_store_from_url(f"fs://{root}"),
        lambda root: importlib.import_module("minimalkv.fs").FilesystemStore(str(root)),
        lambda root: importlib.import_module("minimalkv._hstores").HFilesystemStore(str(root)),
    ],
    ids=["hfs-url", "fs-url", "FilesystemStore", "HFilesystemStore"],
)
def test_filesystem_store_objects_are_local_stores(tmp_path: Path, make: Any) -> None:
    kv = make(tmp_path)
    store = resolve_store(kv)
    assert type(store) is LocalStore and store.root == str(tmp_path)
    assert_conditional(store)
    assert kv.get("probe-key") == b"first"  # the same directory


def test_filesystem_store_object_round_trips_with_plateau(tmp_path: Path) -> None:
    kv = minimalkv.get_store_from_url(f"hfs://{tmp_path}")
    assert_round_trips_with_plateau(kv)
    assert (tmp_path / "sales.by-dataset-metadata.json").exists()


def test_arrow_api_takes_store_objects(tmp_path: Path) -> None:
    kv = minimalkv.get_store_from_url(f"hfs://{tmp_path}")
    snap = ka.write_dataset(frame(), kv, "sales", partition_on=["country"])
    assert snap.version == 0
    ds = ka.dataset(kv, "sales")
    assert ds.count_rows() == 3 and ds.store == LocalStore(str(tmp_path))
    assert [s.version for s in ka.history(kv, "sales")] == [0]


def test_factory_and_object_reach_the_same_store(tmp_path: Path) -> None:
    url = f"hfs://{tmp_path}"
    assert resolve_store(minimalkv.get_store_from_url(url)) == resolve_store(
        functools.partial(minimalkv.get_store_from_url, url)
    )


def test_prefix_decorator_is_a_subdirectory(tmp_path: Path) -> None:
    from minimalkv.decorator import PrefixDecorator

    kv = PrefixDecorator("team/a/", minimalkv.get_store_from_url(f"hfs://{tmp_path}"))
    store = resolve_store(kv)
    assert type(store) is LocalStore and store.root == str(tmp_path / "team" / "a")
    assert_round_trips_with_plateau(kv)
    assert (tmp_path / "team" / "a" / "sales.by-dataset-metadata.json").exists()


def test_prefix_decorator_without_a_slash_is_unsupported(tmp_path: Path) -> None:
    from minimalkv.decorator import PrefixDecorator

    kv = PrefixDecorator("team-", minimalkv.get_store_from_url(f"hfs://{tmp_path}"))
    with pytest.raises(ka.UnsupportedStoreError, match="'team-' does not end in '/'"):
        resolve_store(kv)


@pytest.mark.parametrize(
    ("make", "name", "fix"),
    [
        (lambda root: minimalkv.get_store_from_url("memory://"), "DictStore", "memory://"),
        (lambda root: minimalkv.get_store_from_url("hmemory://"), "HDictStore", "memory://"),
        (
            lambda root: importlib.import_module("minimalkv.decorator").ReadOnlyDecorator(
                minimalkv.get_store_from_url(f"hfs://{root}")
            ),
            "ReadOnlyDecorator",
            "undecorated store",
        ),
        (
            lambda root: importlib.import_module("minimalkv.decorator").URLEncodeKeysDecorator(
                minimalkv.get_store_from_url(f"hfs://{root}")
            ),
            "URLEncodeKeysDecorator",
            "undecorated store",
        ),
    ],
    ids=["DictStore", "HDictStore", "ReadOnlyDecorator", "URLEncodeKeysDecorator"],
)
def test_store_objects_without_a_reachable_location_are_unsupported(
    tmp_path: Path, make: Any, name: str, fix: str
) -> None:
    kv = make(tmp_path)
    for form in (kv, lambda: kv):
        with pytest.raises(ka.UnsupportedStoreError) as info:
            resolve_store(form)
        assert f".{name} store" in str(info.value) and fix in str(info.value)
    with pytest.raises(ka.UnsupportedStoreError, match=name):
        eager.store_dataframes_as_dataset(kv, "sales", [frame()])
    assert list(tmp_path.iterdir()) == []


def test_other_objects_are_still_invalid() -> None:
    with pytest.raises(ka.InvalidArgumentError, match="minimalkv store"):
        resolve_store(object())


# -- S3 (moto) ---------------------------------------------------------------------


@pytest.fixture
def s3_bucket(moto_server: Any) -> str:
    import uuid

    bucket = f"mkv-{uuid.uuid4().hex[:10]}"
    moto_server.client().create_bucket(Bucket=bucket)
    return bucket


def _hs3_url(moto_server: Any, bucket: str) -> str:
    host = moto_server.endpoint_url.removeprefix("http://")
    key, secret = moto_server.access_key, moto_server.secret_key
    return f"hs3://{key}:{secret}@{host}/{bucket}?is_secure=false&force_bucket_suffix=false"


def assert_s3_like_moto(store: Any, moto_server: Any, root: str) -> None:
    assert type(store) is S3Store and store.root == root
    opts = store.fs.storage_options
    assert opts["key"] == moto_server.access_key and opts["secret"] == moto_server.secret_key
    assert opts["client_kwargs"]["endpoint_url"] == moto_server.endpoint_url
    assert moto_server.secret_key not in repr(store)
    # the native Arrow filesystem, not fsspec behind a Python handler
    assert isinstance(store.arrow_filesystem(), pafs.S3FileSystem)
    assert_conditional(store)


@pytest.mark.s3
@pytest.mark.emulator
def test_s3fs_store_object_is_an_s3_store(moto_server: Any, s3_bucket: str) -> None:
    url = _hs3_url(moto_server, s3_bucket)
    kv = minimalkv.get_store_from_url(url)
    assert type(kv).__name__ == "HS3FSStore"
    store = resolve_store(kv)
    assert_s3_like_moto(store, moto_server, s3_bucket)
    assert kv.get("probe-key") == b"first"  # the same bucket
    assert_round_trips_with_plateau(kv, functools.partial(minimalkv.get_store_from_url, url))


@pytest.mark.s3
@pytest.mark.emulator
def test_resolving_an_s3_store_object_sends_no_request(
    moto_server: Any, s3_bucket: str, moto_request_counter: Any
) -> None:
    kv = minimalkv.get_store_from_url(_hs3_url(moto_server, s3_bucket))
    with moto_request_counter() as counter:
        resolve_store(kv)
    assert counter.count == 0


@pytest.mark.s3
@pytest.mark.emulator
def test_s3fs_store_with_object_prefix(moto_server: Any, s3_bucket: str) -> None:
    import boto3
    from minimalkv.net.s3fsstore import Credentials, S3FSStore

    resource = boto3.resource(
        "s3",
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
        region_name=moto_server.region,
    )
    creds = Credentials(moto_server.access_key, moto_server.secret_key, None)
    kv = S3FSStore(resource.Bucket(s3_bucket), credentials=creds, object_prefix="pre/fix/")
    store = resolve_store(kv)
    assert_s3_like_moto(store, moto_server, f"{s3_bucket}/pre/fix")
    ka.write_dataset(frame(), kv, "sales")
    listed = moto_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert "pre/fix/sales.by-dataset-metadata.json" in {o["Key"] for o in listed}

    bad = S3FSStore(resource.Bucket(s3_bucket), credentials=creds, object_prefix="pre")
    with pytest.raises(ka.UnsupportedStoreError, match="object_prefix 'pre'"):
        resolve_store(bad)


@pytest.mark.s3
@pytest.mark.emulator
def test_boto3_store_object_is_an_s3_store(moto_server: Any, s3_bucket: str) -> None:
    import boto3
    from minimalkv.net.boto3store import Boto3Store

    resource = boto3.resource(
        "s3",
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
        region_name=moto_server.region,
    )
    kv = Boto3Store(resource.Bucket(s3_bucket), object_prefix="b3/")
    store = resolve_store(kv)
    assert_s3_like_moto(store, moto_server, f"{s3_bucket}/b3")
    assert kv.get("probe-key") == b"first"
    ka.write_dataset(frame(), kv, "sales")
    assert ka.dataset(kv, "sales").count_rows() == 3


# -- GCS (fake-gcs-server) and Azure (Azurite) ----------------------------------------------


@pytest.mark.gcs
@pytest.mark.emulator
@pytest.mark.filterwarnings("ignore::UserWarning")  # minimalkv: "anon" is no credentials file
def test_google_cloud_store_object_is_a_gcs_store(
    fake_gcs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minimalkv.net.gcstore import GoogleCloudStore

    # minimalkv has no endpoint option: emulators are reached through this variable
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint_url)
    kv = GoogleCloudStore("anon", fake_gcs.bucket, create_if_missing=False, project="p")
    store = resolve_store(kv)
    assert type(store) is GCSStore and store.root == fake_gcs.bucket
    assert store.fs.storage_options["token"] == "anon"
    import uuid

    key = f"probe-{uuid.uuid4().hex}"
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert kv.get(key) == b"first"
    store.delete(key)


@pytest.mark.azure
@pytest.mark.emulator
def test_azure_block_blob_store_object_is_an_azure_store(azurite: Any) -> None:
    from minimalkv.net.azurestore import AzureBlockBlobStore

    kv = AzureBlockBlobStore(
        conn_string=azurite.connection_string, container=azurite.container, create_if_missing=False
    )
    store = resolve_store(kv)
    assert type(store) is AzureStore and store.root == azurite.container
    assert azurite.account_key not in repr(store)
    import uuid

    key = f"probe-{uuid.uuid4().hex}"
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert kv.get(key) == b"first"
    store.delete(key)
