"""The store contract on S3 (moto server), plus request counts and S3 specifics."""

from typing import Any

import pyarrow.fs as pafs
import pytest

from ktk_arrow.storage import S3Store, resolve_store
from store_contract import CrossProcessContract, NetworkStoreContract, StoreContract

pytestmark = [pytest.mark.s3, pytest.mark.emulator]


class TestS3Store(StoreContract, CrossProcessContract, NetworkStoreContract):
    arrow_filesystem_type = pafs.S3FileSystem
    is_remote = True

    @pytest.fixture
    def store_spec(self, s3_url_and_options: tuple[str, dict[str, Any]]):
        return s3_url_and_options

    @pytest.fixture
    def unreachable_store(self, unreachable_s3):
        return unreachable_s3


def test_each_operation_is_one_request(s3_store, moto_request_counter) -> None:
    s3_store.put("k", b"v")
    for action in (
        lambda: s3_store.get("k"),
        lambda: s3_store.get_or_none("k"),
        lambda: s3_store.get_or_none("missing"),
        lambda: s3_store.put("k2", b"v"),
        lambda: s3_store.put_if_absent("k3", b"v"),
        lambda: s3_store.put_if_absent("k3", b"v"),
        lambda: s3_store.exists("k"),
        lambda: s3_store.exists("missing"),
        lambda: s3_store.size("k"),
        lambda: s3_store.delete_many(["k", "k2", "k3"]),
    ):
        with moto_request_counter() as counted:
            action()
        assert counted.count == 1, counted.requests


def test_put_if_absent_sends_if_none_match(s3_store, moto_server) -> None:
    assert isinstance(s3_store, S3Store)
    assert s3_store.put_if_absent("log/1", b"a")
    bucket, _, prefix = s3_store.root.partition("/")
    client = moto_server.client()
    with pytest.raises(client.exceptions.ClientError) as info:
        client.put_object(Bucket=bucket, Key=f"{prefix}/log/1", Body=b"b", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_minimalkv_hs3_url_reaches_the_same_bucket(moto_server) -> None:
    # minimalkv appends "-<access key>" to the bucket unless force_bucket_suffix=false
    key = moto_server.access_key
    moto_server.client().create_bucket(Bucket=f"hs3-bkt-{key}")
    host = moto_server.endpoint_url.removeprefix("http://")
    store = resolve_store(f"hs3://{key}:{moto_server.secret_key}@{host}/hs3-bkt?is_secure=false")
    assert store.root == f"hs3-bkt-{key}"
    assert moto_server.secret_key not in store.url
    store.put("x", b"1")
    assert moto_server.client().get_object(Bucket=f"hs3-bkt-{key}", Key="x")["Body"].read() == b"1"
    assert store.put_if_absent("x", b"2") is False


def test_fs_tuple_uses_the_callers_s3fs(moto_server, s3_url_and_options) -> None:
    import s3fs

    url, options = s3_url_and_options
    fs = s3fs.S3FileSystem(**options)
    store = resolve_store((fs, url.removeprefix("s3://")))
    assert isinstance(store, S3Store) and store.fs is fs
    assert store.put_if_absent("a", b"1") and not store.put_if_absent("a", b"2")
