"""Our errors are also the builtin exceptions kartothek/plateau raised in the same case.

A pipeline written for plateau catches ``RuntimeError`` when a dataset exists,
``KeyError`` when it does not, ``TypeError`` for a predicate value of the
wrong type, ...  Each case here runs the same failing call through plateau
and through ktk-arrow (each on a dataset it wrote itself) and asserts that
our exception is an instance of plateau's exception type (or, where that is
a library's type such as ``ArrowInvalid``, of the builtin it derives from),
and of the KtkError subclass docs/errors.md names.
"""

from __future__ import annotations

import functools
import glob
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

import ktk_arrow as ka
from ktk_arrow.io import eager as ours

minimalkv = pytest.importorskip("minimalkv")
plateau_eager = pytest.importorskip("plateau.io.eager")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UUID = "sales"


def frame() -> pd.DataFrame:
    return pd.DataFrame({"country": ["DE", "FR"], "customer": [1, 2], "amount": [1.0, 2.0]})


def damage_data_file(root: Path, how: str) -> None:
    victim = sorted(glob.glob(str(root / UUID / "table" / "country=DE" / "*.parquet")))[0]
    if how == "delete":
        os.unlink(victim)
    else:
        Path(victim).write_bytes(b"garbage")


def delete_index_file(root: Path) -> None:
    for path in glob.glob(str(root / UUID / "indices" / "customer" / "*")):
        os.unlink(path)


# (id, failing call, what is done to the dataset first, our class, plateau's builtin)
Call = Callable[[ModuleType, Any], Any]
Case = tuple[str, Call, Callable[[Path], None] | None, type[ka.KtkError], type[BaseException]]


def _update(eager: ModuleType, store: Any, **kwargs: Any) -> Any:
    data = kwargs.pop("data", frame())
    return eager.update_dataset_from_dataframes(
        [data], store=store, dataset_uuid=UUID, partition_on=["country"], **kwargs
    )


def _read(eager: ModuleType, store: Any, **kwargs: Any) -> Any:
    return eager.read_table(UUID, store, **kwargs)


CASES: list[Case] = [
    (
        "dataset exists",
        lambda e, s: e.store_dataframes_as_dataset(store=s, dataset_uuid=UUID, dfs=[frame()]),
        None,
        ka.DatasetExistsError,
        RuntimeError,
    ),
    (
        "dataset not found: read_table",
        lambda e, s: e.read_table("nope", s),
        None,
        ka.DatasetNotFoundError,
        KeyError,
    ),
    (
        "dataset not found: read_dataset_as_dataframes",
        lambda e, s: e.read_dataset_as_dataframes("nope", s),
        None,
        ka.DatasetNotFoundError,
        KeyError,
    ),
    (
        "dataset not found: delete_dataset",
        lambda e, s: e.delete_dataset("nope", s),
        None,
        ka.DatasetNotFoundError,
        KeyError,
    ),
    (
        "dataset not found: garbage_collect_dataset",
        lambda e, s: e.garbage_collect_dataset("nope", s),
        None,
        ka.DatasetNotFoundError,
        KeyError,
    ),
    (
        "dataset not found: build_dataset_indices",
        lambda e, s: e.build_dataset_indices(s, "nope", ["customer"]),
        None,
        ka.DatasetNotFoundError,
        KeyError,
    ),
    (
        "schema mismatch: other type",
        lambda e, s: _update(e, s, data=frame().assign(amount=["x", "y"])),
        None,
        ka.SchemaMismatchError,
        ValueError,
    ),
    (
        "schema mismatch: extra column",
        lambda e, s: _update(e, s, data=frame().assign(extra=1)),
        None,
        ka.SchemaMismatchError,
        ValueError,
    ),
    (
        "schema mismatch: missing column",
        lambda e, s: _update(e, s, data=frame().drop(columns="amount")),
        None,
        ka.SchemaMismatchError,
        ValueError,
    ),
    (
        "index on a missing column (write)",
        lambda e, s: e.store_dataframes_as_dataset(
            store=s, dataset_uuid="other", dfs=[frame()], secondary_indices=["nope"]
        ),
        None,
        ka.InvalidArgumentError,
        RuntimeError,
    ),
    (
        "index on a missing column (build_dataset_indices)",
        lambda e, s: e.build_dataset_indices(s, UUID, ["nope"]),
        None,
        ka.InvalidArgumentError,
        RuntimeError,
    ),
    (
        "secondary index on a partition column",
        lambda e, s: e.store_dataframes_as_dataset(
            store=s,
            dataset_uuid="other",
            dfs=[frame()],
            partition_on=["country"],
            secondary_indices=["country"],
        ),
        None,
        ka.InvalidArgumentError,
        RuntimeError,
    ),
    (
        "dispatch_by a column that is not indexed",
        lambda e, s: e.read_dataset_as_dataframes(UUID, s, dispatch_by=["amount"]),
        None,
        ka.InvalidArgumentError,
        RuntimeError,
    ),
    (
        "partition_on a missing column",
        lambda e, s: e.store_dataframes_as_dataset(
            store=s, dataset_uuid="other", dfs=[frame()], partition_on=["nope"]
        ),
        None,
        ka.InvalidArgumentError,
        ValueError,
    ),
    (
        "partition_on differs from the dataset's",
        lambda e, s: e.update_dataset_from_dataframes(
            [frame()], store=s, dataset_uuid=UUID, partition_on=["customer"]
        ),
        None,
        ka.InvalidArgumentError,
        ValueError,
    ),
    (
        "unknown column in columns=",
        lambda e, s: _read(e, s, columns=["nope"]),
        None,
        ka.InvalidArgumentError,
        ValueError,
    ),
    (
        "empty input",
        lambda e, s: e.store_dataframes_as_dataset(store=s, dataset_uuid="other", dfs=[]),
        None,
        ka.InvalidArgumentError,
        ValueError,
    ),
    (
        "dfs=None",
        lambda e, s: e.store_dataframes_as_dataset(store=s, dataset_uuid="other", dfs=None),
        None,
        ka.InvalidArgumentError,
        TypeError,
    ),
    (
        "invalid dataset uuid",
        lambda e, s: e.store_dataframes_as_dataset(store=s, dataset_uuid="a/b", dfs=[frame()]),
        None,
        ka.InvalidArgumentError,
        ValueError,
    ),
    (
        "store of a wrong type",
        lambda e, s: e.read_table(UUID, 42),
        None,
        ka.InvalidArgumentError,
        TypeError,
    ),
    (
        "unknown store scheme",
        lambda e, s: e.read_table(UUID, "nosuch://x/y"),
        None,
        ka.UnsupportedStoreError,
        ValueError,
    ),
    (
        "predicate on an unknown column",
        lambda e, s: _read(e, s, predicates=[[("nope", "==", 1)]]),
        None,
        ka.InvalidPredicateError,
        KeyError,
    ),
    (
        "predicate value of the wrong type",
        lambda e, s: _read(e, s, predicates=[[("customer", "==", "x")]]),
        None,
        ka.InvalidPredicateError,
        TypeError,
    ),
    (
        "predicate value of the wrong type for a partition column",
        lambda e, s: _read(e, s, predicates=[[("country", "==", 1)]]),
        None,
        ka.InvalidPredicateError,
        TypeError,
    ),
    (
        "predicate with an unknown operator",
        lambda e, s: _read(e, s, predicates=[[("customer", "~", 1)]]),
        None,
        ka.InvalidPredicateError,
        NotImplementedError,
    ),
    (
        "predicates not a list of lists",
        lambda e, s: _read(e, s, predicates=[("customer", "==", 1)]),
        None,
        ka.InvalidPredicateError,
        ValueError,
    ),
    (
        "empty predicates",
        lambda e, s: _read(e, s, predicates=[]),
        None,
        ka.InvalidPredicateError,
        ValueError,
    ),
    (
        "empty conjunction",
        lambda e, s: _read(e, s, predicates=[[]]),
        None,
        ka.InvalidPredicateError,
        ValueError,
    ),
    (
        "'in' with a scalar",
        lambda e, s: _read(e, s, predicates=[[("customer", "in", 1)]]),
        None,
        ka.InvalidPredicateError,
        ValueError,
    ),
    (
        "data file deleted behind the metadata's back",
        _read,
        lambda root: damage_data_file(root, "delete"),
        ka.StoreError,
        KeyError,
    ),
    (
        "data file that is not parquet",
        _read,
        lambda root: damage_data_file(root, "garbage"),
        ka.CorruptMetadataError,
        ValueError,
    ),
    (
        "index file deleted behind the metadata's back",
        lambda e, s: _read(e, s, predicates=[[("customer", "==", 1)]]),
        delete_index_file,
        ka.StoreError,
        KeyError,
    ),
    (
        "metadata that is not JSON",
        _read,
        lambda root: (root / f"{UUID}.by-dataset-metadata.json").write_text("{not json"),
        ka.CorruptMetadataError,
        ValueError,
    ),
]


def _raised(eager: ModuleType, root: Path, case: Case) -> BaseException:
    _, call, damage, _, _ = case
    store = functools.partial(minimalkv.get_store_from_url, f"hfs://{root}")
    eager.store_dataframes_as_dataset(
        store=store,
        dataset_uuid=UUID,
        dfs=[frame()],
        partition_on=["country"],
        secondary_indices=["customer"],
    )
    if damage is not None:
        damage(root)
    with pytest.raises(Exception) as info:
        call(eager, store)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_our_error_is_also_what_plateau_raised(tmp_path: Path, case: Case) -> None:
    _, _, _, our_class, builtin = case
    theirs = _raised(plateau_eager, tmp_path / "plateau", case)
    assert isinstance(theirs, builtin), f"plateau raised {type(theirs).__mro__}"
    mine = _raised(ours, tmp_path / "ours", case)
    assert isinstance(mine, our_class), f"{type(mine).__name__}: {mine}"
    # plateau's own type when it is a builtin; else the builtin it derives from
    # (pyarrow's ArrowInvalid and json's JSONDecodeError are ValueErrors)
    expected = _builtin_of(type(theirs))
    assert isinstance(mine, expected), (
        f"{type(mine).__name__} is no {expected.__name__} (plateau: {theirs!r})"
    )


def _builtin_of(cls: type[BaseException]) -> type[BaseException]:
    return next(c for c in cls.__mro__ if c.__module__ == "builtins")


def test_every_case_is_listed_in_the_docs() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    for name, _, _, our_class, builtin in CASES:
        row = f"`{our_class.__name__}` | `{builtin.__name__}`"
        assert row in doc, f"docs/errors.md has no row {row!r} ({name})"


# -- the classes themselves ----------------------------------------------------------

BASES = {
    ka.InvalidArgumentError: (ValueError, TypeError, RuntimeError),
    ka.InvalidPredicateError: (ValueError, TypeError, KeyError, NotImplementedError),
    ka.DatasetNotFoundError: (FileNotFoundError, KeyError),
    ka.DatasetExistsError: (FileExistsError, RuntimeError),
    ka.SchemaMismatchError: (ValueError,),
    ka.UnsupportedStoreError: (ValueError,),
    ka.StoreError: (OSError, KeyError),
    ka.CommitInDoubtError: (OSError, KeyError),
    ka.CorruptMetadataError: (ValueError,),
    ka.CommitConflictError: (),
}


@pytest.mark.parametrize("cls", list(BASES), ids=lambda c: c.__name__)
def test_classes_keep_message_pickling_and_bases(cls: type[ka.KtkError]) -> None:
    assert issubclass(cls, ka.KtkError) and all(issubclass(cls, b) for b in BASES[cls])
    message = "dataset 'x' is 'odd'"
    exc = cls(message)
    # KeyError would print repr(message); OSError would format errno and filename
    assert str(exc) == message and exc.args == (message,)
    again = pickle.loads(pickle.dumps(exc))  # Dask sends errors between processes
    assert type(again) is cls and str(again) == message


def test_except_clauses_of_plateau_pipelines_keep_working(tmp_path: Path) -> None:
    store = str(tmp_path)
    ka.write_dataset(frame(), store, UUID)
    try:
        ours.store_dataframes_as_dataset(store=store, dataset_uuid=UUID, dfs=[frame()])
    except RuntimeError as exc:  # kartothek: "already exists and overwrite is not permitted"
        assert "already exists" in str(exc)
    else:  # pragma: no cover
        pytest.fail("no error")
    try:
        ours.read_table("missing", store)
    except KeyError as exc:
        assert str(exc).startswith("dataset 'missing' does not exist")  # no KeyError quoting
    else:  # pragma: no cover
        pytest.fail("no error")
