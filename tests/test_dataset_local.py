import uuid

import pytest

from dataset_contract import DatasetContract
from ktk_arrow.storage import LocalStore, MemoryStore


class TestLocal(DatasetContract):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalStore(str(tmp_path / "store"))


class TestMemory(DatasetContract):
    @pytest.fixture
    def store(self):
        return MemoryStore(f"/ktk-{uuid.uuid4().hex}")
