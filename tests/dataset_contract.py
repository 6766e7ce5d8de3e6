"""Write/commit/read behaviour every store must show.

Subclasses provide a ``store`` fixture returning a fresh, empty store (a
``ktk_arrow.Store``); every test below then runs on that backend.
"""

from __future__ import annotations

import datetime as dt
import pickle

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager


def sales(n: int = 12, offset: int = 0) -> pd.DataFrame:
    countries = ["DE", "US/CA", "FR"]
    return pd.DataFrame(
        {
            "country": [countries[i % 3] for i in range(n)],
            "customer": [offset + i for i in range(n)],
            "amount": [float(offset + i) * 1.5 for i in range(n)],
        }
    )


def sort(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("customer").reset_index(drop=True)


class DatasetContract:
    @pytest.fixture
    def store(self):  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def test_create_and_read_back(self, store):
        df = sales()
        snap = ka.write_dataset(df, store, "sales", partition_on=["country"])
        assert snap.version == 0 and snap.operation == "create" and snap.rows_added == 12
        ds = ka.dataset(store, "sales")
        assert ds.version == 0 and ds.dataset_uuid == "sales"
        got = ds.to_table().to_pandas()
        pd.testing.assert_frame_equal(sort(got[df.columns]), sort(df), check_dtype=False)
        assert ds.count_rows() == 12
        assert len(list(ds.get_fragments())) == 3

    def test_append_makes_a_new_version_and_old_stays_readable(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        snap = ka.write_dataset(sales(offset=100), store, "sales", mode="append")
        assert snap.version == 1 and snap.operation == "append"
        assert ka.dataset(store, "sales").count_rows() == 24
        assert ka.dataset(store, "sales", version=0).count_rows() == 12
        assert [s.version for s in ka.history(store, "sales")] == [0, 1]

    def test_as_of_selects_the_snapshot_of_that_time(self, store):
        first = ka.write_dataset(sales(), store, "sales")
        second = ka.write_dataset(sales(offset=100), store, "sales", mode="append")
        assert ka.dataset(store, "sales", as_of=first.timestamp).version == 0
        assert ka.dataset(store, "sales", as_of=second.timestamp).version == 1
        with pytest.raises(ka.DatasetNotFoundError):
            ka.dataset(store, "sales", as_of=first.timestamp - dt.timedelta(seconds=1))

    def test_overwrite_with_delete_scope_replaces_only_that_partition(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        de = sales(offset=500).assign(country="DE")
        snap = ka.write_dataset(
            de, store, "sales", mode="overwrite", delete_scope=[{"country": "DE"}]
        )
        assert snap.files_removed == 1
        table = ka.dataset(store, "sales").to_table()
        got = table.to_pandas()
        assert set(got[got.country == "DE"].customer) == set(de.customer)
        assert len(got[got.country != "DE"]) == 8

    def test_full_overwrite_replaces_everything(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        ka.write_dataset(sales(3, offset=900), store, "sales", mode="overwrite")
        got = ka.dataset(store, "sales").to_table().to_pandas()
        assert sorted(got.customer) == [900, 901, 902]

    def test_secondary_index_prunes_files(self, store):
        ka.write_dataset(
            [sales(offset=0), sales(offset=100)], store, "sales", secondary_indices=["customer"]
        )
        ds = ka.dataset(store, "sales")
        assert ds.indices == ["customer"]
        assert len(ds.tasks) == 2
        narrowed = ds.filter([[("customer", "==", 105)]])
        assert len(narrowed.tasks) == 1
        assert narrowed.to_table().column("customer").to_pylist() == [105]
        expr = ds.filter(pc.field("customer") == 3)
        assert len(expr.tasks) == 1
        assert expr.to_table().column("customer").to_pylist() == [3]
        assert ds.count_rows(filter=pc.field("customer") == 3) == 1
        assert len(list(ds.get_fragments(filter=pc.field("customer") == 3))) == 1

    def test_partition_pruning_with_expression(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        ds = ka.dataset(store, "sales", filter=pc.field("country") == "US/CA")
        assert len(ds.tasks) == 1
        assert set(ds.to_table().column("country").to_pylist()) == {"US/CA"}

    def test_filtered_dataset_pickles(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        ds = ka.dataset(store, "sales").filter(pc.field("country") == "FR")
        clone = pickle.loads(pickle.dumps(ds))
        assert isinstance(clone, ka.KartothekDataset)
        assert clone.to_table().equals(ds.to_table())
        assert clone.version == ds.version

    def test_eager_round_trip_with_predicates(self, store):
        eager.store_dataframes_as_dataset(
            store=store,
            dataset_uuid="sales",
            dfs=[sales(), sales(offset=100)],
            partition_on=["country"],
            secondary_indices=["customer"],
        )
        got = eager.read_table("sales", store, predicates=[[("customer", "in", [5, 105])]])
        assert sorted(got.customer) == [5, 105]
        eager.update_dataset_from_dataframes(
            [sales(3, offset=200)], store=store, dataset_uuid="sales"
        )
        assert len(eager.read_table("sales", store)) == 27
        frames = eager.read_dataset_as_dataframes("sales", store)
        assert sum(len(f) for f in frames) == 27

    def test_delete_dataset_removes_everything(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        eager.delete_dataset("sales", store)
        with pytest.raises(ka.DatasetNotFoundError):
            ka.dataset(store, "sales")
        assert list(store.list("sales")) == []

    def test_missing_dataset_is_a_clear_error(self, store):
        with pytest.raises(ka.DatasetNotFoundError, match="nope"):
            ka.dataset(store, "nope")

    def test_create_twice_is_refused(self, store):
        ka.write_dataset(sales(), store, "sales")
        with pytest.raises(ka.DatasetExistsError, match="sales"):
            ka.write_dataset(sales(), store, "sales")
        assert ka.dataset(store, "sales").version == 0

    def test_schema_mismatch_writes_nothing(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        before = {i.key for i in store.list("sales")}
        bad = sales().assign(amount="x")
        with pytest.raises(ka.SchemaMismatchError, match="amount"):
            ka.write_dataset(bad, store, "sales", mode="append")
        assert {i.key for i in store.list("sales")} == before
        assert ka.dataset(store, "sales").version == 0

    def test_table_and_reader_inputs(self, store):
        table = pa.Table.from_pandas(sales(), preserve_index=False)
        ka.write_dataset(table, store, "t1")
        ka.write_dataset(table.to_reader(max_chunksize=5), store, "t2")
        ka.write_dataset(iter(table.to_batches(max_chunksize=4)), store, "t3")
        for uuid in ("t1", "t2", "t3"):
            assert ka.dataset(store, uuid).count_rows() == 12

    def test_attached_filter_survives_a_second_filter(self, store):
        ka.write_dataset(sales(), store, "sales", partition_on=["country"])
        ds = ka.dataset(store, "sales", filter=[[("customer", "<", 6)]])
        got = ds.to_table(filter=[[("country", "==", "DE")]]).column("customer").to_pylist()
        assert sorted(got) == [0, 3]
        chained = ds.filter(pc.field("country") == "DE")
        assert sorted(chained.to_table().column("customer").to_pylist()) == [0, 3]
        assert chained.count_rows() == 2
        frags = list(ds.get_fragments(filter=pc.field("country") == "FR"))
        assert len(frags) == 1

    def test_append_creates_a_missing_dataset(self, store):
        snap = ka.write_dataset(sales(), store, "fresh", mode="append", partition_on=["country"])
        assert snap.version == 0
        assert ka.dataset(store, "fresh").count_rows() == 12

    def test_file_statistics_prune_without_opening_files(self, store):
        for i in range(4):
            chunk = sales(6, offset=100 * i)
            chunk["when"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
                chunk.customer, "D"
            )
            ka.write_dataset(chunk, store, "sales", mode="append")
        ds = ka.dataset(store, "sales")
        assert len(ds.tasks) == 4
        narrowed = ds.filter([[("customer", ">=", 300)]])
        assert len(narrowed.tasks) == 1
        assert sorted(narrowed.to_table().column("customer").to_pylist()) == list(range(300, 306))
        early = ds.filter(pc.field("when") < pd.Timestamp("2024-02-01", tz="UTC"))
        assert len(early.tasks) == 1 and early.count_rows() == 6
        either = ds.filter([[("amount", "<", 1.0)], [("customer", "==", 205)]])
        assert len(either.tasks) == 2 and either.count_rows() == 2
