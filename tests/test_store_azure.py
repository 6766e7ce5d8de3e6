"""The store contract on Azure Blob (Azurite)."""

from typing import Any

import pyarrow.fs as pafs
import pytest

from ktk_arrow.storage import AzureStore, resolve_store
from store_contract import CrossProcessContract, NetworkStoreContract, StoreContract

pytestmark = [pytest.mark.azure, pytest.mark.emulator]


class TestAzureStore(StoreContract, CrossProcessContract, NetworkStoreContract):
    arrow_filesystem_type = pafs.AzureFileSystem
    is_remote = True

    @pytest.fixture
    def store_spec(self, azure_url_and_options: tuple[str, dict[str, Any]]):
        return azure_url_and_options

    @pytest.fixture
    def unreachable_store(self, unreachable_azure):
        return unreachable_azure


@pytest.mark.parametrize("scheme", ["az", "abfss"])
def test_scheme_aliases(azurite, scheme: str) -> None:
    store = resolve_store(f"{scheme}://{azurite.container}/alias", azurite.storage_options())
    assert isinstance(store, AzureStore) and store.url == f"abfs://{azurite.container}/alias"
    assert store.put_if_absent(scheme, b"1") and not store.put_if_absent(scheme, b"2")
    store.delete(scheme)
