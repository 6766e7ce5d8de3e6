"""plateau (from PyPI) as the independent reader and writer of our datasets.

plateau reads what we write, we read what it writes, each appends to the
other's datasets, and both agree row for row -- also under predicates that
plateau answers from its secondary indices.  Where plateau itself is wrong
(documented in docs/compatibility.md) the tests pin plateau's behaviour so a
change in a plateau release shows up here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plateau")
minimalkv = pytest.importorskip("minimalkv")

import plateau.io.eager as pl  # noqa: E402
from plateau.core.dataset import DatasetMetadata as PlateauMetadata  # noqa: E402

import ktk_arrow as ka  # noqa: E402
from ktk_arrow import commit  # noqa: E402
from ktk_arrow.io import eager  # noqa: E402
from ktk_arrow.io._common import to_pandas  # noqa: E402
from ktk_arrow.spec import keys  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UUID = "sales"


@pytest.fixture
def root(tmp_path) -> str:
    path = tmp_path / "store"
    path.mkdir()
    return str(path)


@pytest.fixture
def pstore(root):
    """plateau's store factory on the same directory."""
    return functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")


def sales(n: int, offset: int = 0, countries=("DE", "FR", "NL")) -> pd.DataFrame:
    """A small frame with every type plateau round-trips; ``customer`` is unique."""
    i = np.arange(offset, offset + n)
    return pd.DataFrame(
        {
            "country": [countries[k % len(countries)] for k in i],
            "year": (2020 + (i // 2) % 3).astype("int64"),
            "customer": i.astype("int64"),
            "name": [f"n{k % 4}" for k in i],
            "amount": i * 1.25,
            "paid": i % 2 == 0,
            "day": [dt.date(2020, 1, 1) + dt.timedelta(days=int(k)) for k in i],
            "ts": pd.Timestamp("2020-01-01") + pd.to_timedelta(i * 3_600_000_001, unit="us"),
        }
    )


def normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by customer, columns by name, categoricals decoded.

    The only dtype differences allowed between plateau and us: a dictionary
    column reads as ``category`` here and as ``str`` in plateau (it needs
    ``categoricals=``), and plateau returns nullable dtypes only for columns
    written from them.
    """
    out = df.sort_values("customer").reset_index(drop=True)
    out = out[sorted(out.columns)]
    for name in out.columns:
        if isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype(out[name].cat.categories.dtype)
    return out


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame) -> None:
    left, right = normalised(left), normalised(right)
    assert list(left.columns) == list(right.columns)
    for name in left.columns:
        families = {_family(left[name].dtype), _family(right[name].dtype)}
        if left.empty and right.empty and families == {"object", "datetime"}:
            continue  # plateau gives an empty date column datetime64, not object
        assert len(families) == 1, (name, left[name].dtype, right[name].dtype)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def _family(dtype) -> str:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return f"datetime[{dtype.tz}]"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_signed_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_unsigned_integer_dtype(dtype):
        return "uint"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "string"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "datetime"
    return str(dtype)


def ours(root, predicates=None) -> pd.DataFrame:
    return eager.read_table(UUID, root, predicates=predicates)


def ours_arrow(root, predicates=None) -> pd.DataFrame:
    """ka.dataset -> Arrow -> pandas with kartothek's conventions (ns datetimes, dates)."""
    table = ka.dataset(root, UUID).to_table(filter=predicates)
    return to_pandas(table)


def theirs(pstore, predicates=None, **kwargs) -> pd.DataFrame:
    return pl.read_table(UUID, pstore, predicates=predicates, **kwargs)


def plateau_index_labels(pstore, column: str, value) -> set[str]:
    """Labels plateau's own index lookup returns for ``column == value``."""
    meta = PlateauMetadata.load_from_store(UUID, pstore()).load_all_indices(pstore())
    return set(meta.query(**{column: value}))


def planned_labels(root, predicates) -> set[str]:
    return {t.label for t in ka.dataset(root, UUID, filter=predicates).tasks}


def metadata_json(root: str) -> dict:
    with open(os.path.join(root, keys.metadata_key(UUID)), "rb") as f:
        return json.load(f)


def all_keys(root: str) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    }


PREDICATES = [
    [[("customer", "==", 3)]],
    [[("customer", "==", 17)]],
    [[("customer", "in", [0, 11, 19])]],
    [[("customer", "==", 1000)]],
    [[("country", "==", "DE"), ("year", ">=", 2021)]],
    [[("country", "==", "DE"), ("year", "==", 2030)]],
    [[("country", "==", "FR")], [("customer", "<", 4)]],
    [[("name", "==", "n2"), ("paid", "==", True)]],
    [[("day", ">", dt.date(2020, 1, 10))]],
    [[("ts", "<=", pd.Timestamp("2020-01-02"))]],
]


# -- plateau writes, we read ----------------------------------------------------------


@pytest.fixture
def plateau_dataset(root, pstore) -> pd.DataFrame:
    """Created by plateau, then updated twice (one update with several frames)."""
    first = sales(8)
    pl.store_dataframes_as_dataset(
        pstore,
        UUID,
        [first.iloc[:4], first.iloc[4:]],
        partition_on=["country", "year"],
        secondary_indices=["customer", "name"],
    )
    second, third = sales(6, offset=8), sales(6, offset=14, countries=("DE", "BE"))
    pl.update_dataset_from_dataframes([second], pstore, UUID)
    pl.update_dataset_from_dataframes([third.iloc[:3], third.iloc[3:]], pstore, UUID)
    return pd.concat([first, second, third], ignore_index=True)


def test_we_read_every_row_plateau_wrote(root, pstore, plateau_dataset):
    assert_same_rows(theirs(pstore), plateau_dataset)
    assert_same_rows(ours(root), plateau_dataset)
    assert_same_rows(ours_arrow(root), plateau_dataset)
    ds = ka.dataset(root, UUID)
    assert ds.indices == ["customer", "name"]
    assert ds.metadata.partition_keys == ("country", "year")
    assert ds.count_rows() == len(plateau_dataset)


@pytest.mark.parametrize("predicates", PREDICATES, ids=range(len(PREDICATES)))
def test_we_answer_predicates_on_plateau_datasets_like_plateau(
    root, pstore, plateau_dataset, predicates
):
    want = theirs(pstore, predicates)
    assert_same_rows(ours(root, predicates), want)
    assert_same_rows(ours_arrow(root, predicates), want)


@pytest.mark.parametrize("value", [0, 3, 9, 15, 19])
def test_our_planner_prunes_with_plateaus_index_like_plateau(root, pstore, plateau_dataset, value):
    assert planned_labels(root, [[("customer", "==", value)]]) == plateau_index_labels(
        pstore, "customer", value
    )
    assert planned_labels(root, [[("name", "==", f"n{value % 4}")]]) == plateau_index_labels(
        pstore, "name", f"n{value % 4}"
    )


def test_we_read_plateau_msgpack_metadata(root, pstore):
    df = sales(6)
    pl.store_dataframes_as_dataset(
        pstore,
        UUID,
        [df],
        partition_on=["country"],
        secondary_indices=["customer"],
        metadata_storage_format="msgpack",
    )
    assert keys.msgpack_metadata_key(UUID) in all_keys(root)
    assert keys.metadata_key(UUID) not in all_keys(root)
    assert_same_rows(ours(root), df)
    assert_same_rows(ours(root, [[("customer", "==", 2)]]), df[df.customer == 2])
    # our append writes the JSON view, which plateau prefers over msgpack too
    more = sales(3, offset=6)
    ka.write_dataset(more, root, UUID, mode="append")
    both = pd.concat([df, more])
    assert_same_rows(theirs(pstore), both)
    assert_same_rows(ours(root), both)
    assert plateau_index_labels(pstore, "customer", 7) == planned_labels(
        root, [[("customer", "==", 7)]]
    )


# -- we write, plateau reads ------------------------------------------------------------


@pytest.fixture
def our_dataset(root) -> pd.DataFrame:
    """Created by ktk-arrow (incl. a '/' in a partition value), then appended to twice."""
    first = sales(8, countries=("DE", "US/CA", "a b%"))
    ka.write_dataset(
        [first.iloc[:4], first.iloc[4:]],
        root,
        UUID,
        partition_on=["country", "year"],
        secondary_indices=["customer", "name"],
    )
    second = sales(6, offset=8)
    ka.write_dataset(second, root, UUID, mode="append")
    third = sales(6, offset=14, countries=("US/CA", "BE"))
    eager.update_dataset_from_dataframes([third.iloc[:3], third.iloc[3:]], root, UUID)
    return pd.concat([first, second, third], ignore_index=True)


def test_plateau_reads_every_row_we_wrote(root, pstore, our_dataset):
    assert_same_rows(theirs(pstore), our_dataset)
    assert_same_rows(ours(root), our_dataset)
    assert set(theirs(pstore)["country"]) == {"DE", "US/CA", "a b%", "FR", "NL", "BE"}


@pytest.mark.parametrize(
    "predicates",
    [
        *PREDICATES,
        [[("country", "==", "US/CA")]],
        [[("country", "in", ["US/CA", "a b%"]), ("customer", ">", 5)]],
    ],
    ids=range(len(PREDICATES) + 2),
)
def test_plateau_answers_predicates_on_our_datasets_like_us(root, pstore, our_dataset, predicates):
    assert_same_rows(theirs(pstore, predicates), ours(root, predicates))


@pytest.mark.parametrize("value", [0, 3, 9, 15, 19])
def test_plateau_index_lookup_on_our_dataset_matches_our_planner(root, pstore, our_dataset, value):
    labels = plateau_index_labels(pstore, "customer", value)
    assert len(labels) == 1
    assert labels == planned_labels(root, [[("customer", "==", value)]])
    assert plateau_index_labels(pstore, "country", "US/CA") == planned_labels(
        root, [[("country", "==", "US/CA")]]
    )


def test_plateau_reads_our_columns_and_categoricals(root, pstore):
    df = sales(5).assign(kind=pd.Categorical(["x", "y", "x", "z", "y"]))
    ka.write_dataset(df, root, UUID, partition_on=["country"])
    got = theirs(pstore, categoricals=["kind"])
    assert isinstance(got["kind"].dtype, pd.CategoricalDtype)
    assert_same_rows(got, df)
    assert_same_rows(theirs(pstore, columns=["customer", "kind"]), df[["customer", "kind"]])


# -- each appends to the other's dataset -----------------------------------------------


def test_we_append_to_a_plateau_dataset_and_plateaus_index_sees_old_and_new(
    root, pstore, plateau_dataset
):
    more = sales(5, offset=100, countries=("DE", "XX"))
    ka.write_dataset(more, root, UUID, mode="append")
    more2 = sales(2, offset=200)
    eager.update_dataset_from_dataframes([more2], root, UUID)
    everything = pd.concat([plateau_dataset, more, more2])
    assert_same_rows(theirs(pstore), everything)
    assert_same_rows(ours(root), everything)
    for value in (3, 19, 100, 104, 201):
        labels = plateau_index_labels(pstore, "customer", value)
        assert len(labels) == 1, value
        assert labels == planned_labels(root, [[("customer", "==", value)]])
        got = theirs(pstore, [[("customer", "==", value)]])
        assert got["customer"].tolist() == [value]
    assert plateau_index_labels(pstore, "name", "n1") == planned_labels(
        root, [[("name", "==", "n1")]]
    )
    assert [s.version for s in ka.history(root, UUID)] == [0, 1, 2]


def test_plateau_appends_to_our_dataset_and_both_read_everything(root, pstore):
    first = sales(6).assign(kind=pd.Categorical(list("xyxyxz")))
    ka.write_dataset(first, root, UUID, partition_on=["country"], secondary_indices=["customer"])
    more = sales(4, offset=6).assign(kind=pd.Categorical(list("zzyx")))
    # plateau validates `more` against our _common_metadata (validate_compatible)
    pl.update_dataset_from_dataframes([more], pstore, UUID)
    both = pd.concat([first, more])
    assert_same_rows(theirs(pstore), both)
    with pytest.warns(UserWarning, match="adopted as version 1"):
        assert_same_rows(ours(root), both)
    with pytest.warns(UserWarning, match="adopted"):
        labels = planned_labels(root, [[("customer", "==", 8)]])
    assert labels == plateau_index_labels(pstore, "customer", 8)
    # and we append on top of plateau's commit, which enters our log as version 1
    last = sales(2, offset=10).assign(kind=pd.Categorical(list("xx")))
    with pytest.warns(UserWarning, match="adopted"):
        ka.write_dataset(last, root, UUID, mode="append")
    assert [s.version for s in ka.history(root, UUID)] == [0, 1, 2]
    everything = pd.concat([first, more, last])
    assert_same_rows(theirs(pstore), everything)
    assert_same_rows(ours(root), everything)
    assert ka.dataset(root, UUID).count_rows() == 12


def test_plateau_refuses_an_append_that_does_not_match_our_schema(root, pstore):
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"])
    with pytest.raises(ValueError, match=r"[Ss]chema"):
        pl.update_dataset_from_dataframes([sales(2).assign(amount="x")], pstore, UUID)
    assert ka.dataset(root, UUID).count_rows() == 4


def test_plateau_appends_to_our_dataset_with_several_snapshots(root, pstore):
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"])
    ka.write_dataset(sales(2, offset=4), root, UUID, mode="append")
    pl.update_dataset_from_dataframes([sales(2, offset=6)], pstore, UUID)
    assert len(theirs(pstore)) == 8
    with pytest.warns(UserWarning, match="adopted as version 2"):
        assert ka.dataset(root, UUID).count_rows() == 8
    with pytest.warns(UserWarning):
        ka.write_dataset(sales(1, offset=8), root, UUID, mode="append")
    assert [s.version for s in ka.history(root, UUID)] == [0, 1, 2, 3]
    assert ka.dataset(root, UUID).count_rows() == 9
    assert len(theirs(pstore)) == 9


def test_our_delete_scope_on_a_plateau_dataset(root, pstore, plateau_dataset):
    replacement = sales(2, offset=300, countries=("DE",)).assign(year=2020)
    ka.write_dataset(
        replacement,
        root,
        UUID,
        mode="overwrite",
        delete_scope=[{"country": "DE", "year": 2020}, {"country": "NL"}],
    )
    kept = plateau_dataset[
        ~(
            ((plateau_dataset.country == "DE") & (plateau_dataset.year == 2020))
            | (plateau_dataset.country == "NL")
        )
    ]
    assert_same_rows(theirs(pstore), pd.concat([kept, replacement]))
    assert_same_rows(ours(root), pd.concat([kept, replacement]))
    gone = int(plateau_dataset[plateau_dataset.country == "NL"].customer.iloc[0])
    assert plateau_index_labels(pstore, "customer", gone) == set()
    assert theirs(pstore, [[("customer", "==", gone)]]).empty
    # the kartothek facade: delete a partition without adding anything
    eager.update_dataset_from_dataframes([], root, UUID, delete_scope=[{"country": "FR"}])
    assert "FR" not in set(theirs(pstore)["country"])
    assert_same_rows(theirs(pstore), ours(root))


def test_plateau_delete_scope_on_our_dataset(root, pstore):
    df = sales(9, countries=("DE", "US/CA", "a b%"))
    ka.write_dataset(df, root, UUID, partition_on=["country", "year"], secondary_indices=["name"])
    pl.update_dataset_from_dataframes([], pstore, UUID, delete_scope=[{"country": "US/CA"}])
    kept = df[df.country != "US/CA"]
    assert_same_rows(theirs(pstore), kept)
    # plateau dropped files of a version we manage: reported, not merged silently
    with pytest.raises(ka.CorruptMetadataError, match="adopt_view"):
        ours(root)
    commit.adopt_view(ka.resolve_store(root), UUID)
    assert_same_rows(ours(root), kept)
    assert [s.operation for s in ka.history(root, UUID)] == ["create", "adopt"]
    assert_same_rows(ka.dataset(root, UUID, version=0).to_table().to_pandas(), df)


# -- our extensions are invisible to plateau ----------------------------------------------


def test_plateau_ignores_our_extension_key_and_log(root, pstore):
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"], secondary_indices=["name"])
    ka.write_dataset(sales(2, offset=4), root, UUID, mode="append")
    assert "ktk_arrow" in metadata_json(root)
    log = {k for k in all_keys(root) if k.startswith(f"{UUID}/_ktk/")}
    assert len(log) == 2
    meta = PlateauMetadata.load_from_store(UUID, pstore())
    assert set(meta.partitions) == {t.label for t in ka.dataset(root, UUID).tasks}
    assert len(theirs(pstore)) == 6
    # plateau's garbage collection only looks at <uuid>/table and <uuid>/indices
    pl.garbage_collect_dataset(UUID, pstore)
    assert log <= all_keys(root)
    assert ka.dataset(root, UUID, version=0).count_rows() == 4


def test_plateau_rewriting_the_metadata_drops_our_extension_key(root, pstore):
    """Recorded behaviour: plateau keeps only the keys it knows."""
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"], secondary_indices=["name"])
    before = metadata_json(root)
    pl.update_dataset_from_dataframes([sales(2, offset=4)], pstore, UUID)
    after = metadata_json(root)
    assert "ktk_arrow" in before and "ktk_arrow" not in after
    assert set(after) == {
        "dataset_metadata_version",
        "dataset_uuid",
        "metadata",
        "partitions",
        "partition_keys",
        "indices",
    }
    assert after["metadata"]["creation_time"] == before["metadata"]["creation_time"]
    assert after["indices"].keys() == before["indices"].keys() == {"name"}
    with pytest.warns(UserWarning, match="adopted"):
        assert ka.dataset(root, UUID).count_rows() == 6
    with pytest.warns(UserWarning, match="adopted"):
        labels = planned_labels(root, [[("name", "==", "n1")]])
    assert labels == plateau_index_labels(pstore, "name", "n1")


def test_plateau_delete_dataset_on_our_dataset(root, pstore):
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"], secondary_indices=["name"])
    pl.delete_dataset(UUID, pstore)
    with pytest.raises(ka.DatasetNotFoundError):
        ka.dataset(root, UUID)
    ka.write_dataset(sales(2), root, UUID)
    assert ka.dataset(root, UUID).count_rows() == 2


def test_our_delete_dataset_removes_everything_plateau_wrote(root, pstore, plateau_dataset):
    eager.delete_dataset(UUID, root)
    assert all_keys(root) == set()
    with pytest.raises(KeyError, match="does not exist"):
        theirs(pstore)


# -- where plateau reads wrong (documented, not copied) --------------------------------


def test_plateau_reads_a_false_bool_partition_as_true(root, pstore):
    df = pd.DataFrame({"flag": [True, False], "customer": [0, 1]})
    ka.write_dataset(df, root, UUID, partition_on=["flag"])
    assert ours(root).sort_values("customer")["flag"].tolist() == [True, False]
    assert theirs(pstore).sort_values("customer")["flag"].tolist() == [True, True]
    # plateau's own bool partitions read wrong the same way
    pl.store_dataframes_as_dataset(pstore, "own", [df], partition_on=["flag"])
    assert pl.read_table("own", pstore).sort_values("customer")["flag"].tolist() == [True, True]
    assert eager.read_table("own", root).sort_values("customer")["flag"].tolist() == [True, False]


def test_slash_in_a_partition_value_plateau_vs_us(root, pstore):
    df = pd.DataFrame({"country": ["US/CA", "DE"], "customer": [0, 1]})
    # plateau leaves '/' unquoted: two directory levels, and it reads back "US"
    pl.store_dataframes_as_dataset(pstore, "own", [df], partition_on=["country"])
    assert any(k.startswith("own/table/country=US/CA/") for k in all_keys(root))
    assert pl.read_table("own", pstore).sort_values("customer")["country"].tolist() == ["US", "DE"]
    # we rejoin the unquoted segments and read what plateau was given
    got = eager.read_table("own", root).sort_values("customer")
    assert got["country"].tolist() == ["US/CA", "DE"]
    # we quote '/', and plateau reads our value right
    ka.write_dataset(df, root, UUID, partition_on=["country"])
    assert any(k.startswith(f"{UUID}/table/country=US%2FCA/") for k in all_keys(root))
    assert theirs(pstore).sort_values("customer")["country"].tolist() == ["US/CA", "DE"]


@pytest.mark.parametrize(
    "values",
    [
        pd.array([1, None], dtype="Int64"),
        [dt.date(2020, 1, 1), None],
        pd.to_datetime(["2020-01-01", None]),
    ],
    ids=["int", "date", "datetime"],
)
def test_plateau_cannot_read_our_null_partitions_of_typed_columns(root, pstore, values):
    df = pd.DataFrame({"part": values, "customer": [0, 1]})
    ka.write_dataset(df, root, UUID, partition_on=["part"])
    assert ours(root).sort_values("customer")["part"].isna().tolist() == [False, True]
    # plateau parses every label up front: no predicate gets it past the null one
    for predicates in (None, [[("customer", "==", 0)]]):
        with pytest.raises(ValueError, match=keys.NULL_VALUE):
            theirs(pstore, predicates)


def test_plateau_reads_our_null_string_partition_as_the_marker_text(root, pstore):
    df = pd.DataFrame({"part": ["a", None], "customer": [0, 1]})
    ka.write_dataset(df, root, UUID, partition_on=["part"])
    assert ours(root).sort_values("customer")["part"].tolist()[0] == "a"
    assert ours(root).sort_values("customer")["part"].isna().tolist() == [False, True]
    assert theirs(pstore).sort_values("customer")["part"].tolist() == ["a", keys.NULL_VALUE]


def test_plateau_refuses_to_write_null_partition_values(pstore):
    df = pd.DataFrame({"part": ["a", None], "customer": [0, 1]})
    with pytest.raises(ValueError, match="null"):
        pl.store_dataframes_as_dataset(pstore, "own", [df], partition_on=["part"])


def test_plateau_cannot_read_tz_aware_partitions_not_even_its_own(root, pstore):
    stamps = pd.to_datetime(["2020-01-01 10:00", "2020-07-01 10:00"]).tz_localize("Europe/Berlin")
    df = pd.DataFrame({"at": stamps, "customer": [0, 1]})
    ka.write_dataset(df, root, UUID, partition_on=["at"])
    got = ours(root).sort_values("customer")
    assert got["at"].tolist() == list(stamps)
    with pytest.raises(RuntimeError, match="Unexpected object"):
        theirs(pstore)
    pl.store_dataframes_as_dataset(pstore, "own", [df], partition_on=["at"])
    with pytest.raises(RuntimeError, match="Unexpected object"):
        pl.read_table("own", pstore)
    assert eager.read_table("own", root).sort_values("customer")["at"].tolist() == list(stamps)


def test_plateau_reads_our_naive_datetime_and_date_partitions(root, pstore):
    df = pd.DataFrame(
        {
            "at": pd.to_datetime(["2020-01-01 10:00:00.000001", "1999-12-31"], format="ISO8601"),
            "day": [dt.date(2020, 1, 1), dt.date(1999, 12, 31)],
            "customer": [0, 1],
        }
    )
    ka.write_dataset(df, root, UUID, partition_on=["at", "day"])
    assert_same_rows(theirs(pstore), df)
    assert_same_rows(ours(root), df)


def test_plateau_gc_deletes_files_only_older_snapshots_use(root, pstore):
    """plateau knows only the latest state: its GC ends time travel to replaced files."""
    ka.write_dataset(sales(4), root, UUID, partition_on=["country"])
    ka.write_dataset(sales(2, offset=10), root, UUID, mode="overwrite")
    assert ka.dataset(root, UUID, version=0).to_table().num_rows == 4
    # ours keeps what retained snapshots use, however old
    eager.garbage_collect_dataset(UUID, root, grace_period=dt.timedelta(0), force=True)
    assert ka.dataset(root, UUID, version=0).to_table().num_rows == 4
    pl.garbage_collect_dataset(UUID, pstore)
    assert ka.dataset(root, UUID).to_table().num_rows == 2
    with pytest.raises(ka.StoreError, match="is missing"):
        ka.dataset(root, UUID, version=0).to_table()
