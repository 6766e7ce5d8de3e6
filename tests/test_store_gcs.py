"""The store contract on GCS (fake-gcs-server, which enforces ifGenerationMatch)."""

from typing import Any

import pyarrow.fs as pafs
import pytest

from ktk_arrow.storage import GCSStore, resolve_store
from store_contract import CrossProcessContract, NetworkStoreContract, StoreContract

pytestmark = [pytest.mark.gcs, pytest.mark.emulator]


class TestGCSStore(StoreContract, CrossProcessContract, NetworkStoreContract):
    arrow_filesystem_type = pafs.GcsFileSystem
    is_remote = True

    @pytest.fixture
    def store_spec(self, gcs_url_and_options: tuple[str, dict[str, Any]]):
        return gcs_url_and_options

    @pytest.fixture
    def unreachable_store(self, unreachable_gcs):
        return unreachable_gcs


def test_gcs_scheme_alias(fake_gcs) -> None:
    store = resolve_store(f"gcs://{fake_gcs.bucket}/alias", fake_gcs.storage_options())
    assert isinstance(store, GCSStore) and store.url == f"gs://{fake_gcs.bucket}/alias"
    assert store.put_if_absent("k", b"1") and not store.put_if_absent("k", b"2")
    store.delete("k")
