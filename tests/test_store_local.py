"""The store contract on local disk (put-if-absent is os.link)."""

from typing import Any

import pyarrow.fs as pafs
import pytest

from store_contract import CrossProcessContract, StoreContract


class TestLocalStore(StoreContract, CrossProcessContract):
    arrow_filesystem_type = pafs.LocalFileSystem

    @pytest.fixture
    def store_spec(self, local_url_and_options: tuple[str, dict[str, Any]]):
        return local_url_and_options
