"""The store contract on fsspec's process-wide memory filesystem."""

from typing import Any

import pytest

from store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store_spec(self, memory_url_and_options: tuple[str, dict[str, Any]]):
        return memory_url_and_options
