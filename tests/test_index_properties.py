"""Secondary index logic against a dict-of-sets model (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktk_arrow.spec import index as spec_index

LABELS = st.sampled_from([f"p=x/{i:02d}" for i in range(8)])

TYPES = {
    "int": (pa.int64(), st.integers(-(2**40), 2**40)),
    "str": (pa.large_string(), st.text(max_size=6)),
    "date": (pa.date32(), st.dates(dt.date(1990, 1, 1), dt.date(2100, 1, 1))),
    "ts": (pa.timestamp("us"), st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1))),
}

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), LABELS, st.integers(0, 5)),
        st.tuples(st.just("remove"), st.lists(LABELS, max_size=3), st.just(0)),
    ),
    max_size=12,
)


def _model_apply(model, op, label_or_labels, values):
    if op == "add":
        for value in values:
            model.setdefault(value, set()).add(label_or_labels)
    else:
        gone = set(label_or_labels)
        for value in list(model):
            model[value] -= gone
            if not model[value]:
                del model[value]


@pytest.mark.parametrize("kind", sorted(TYPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data(), ops=OPS)
def test_index_operations_match_a_dict_of_sets(kind, data, ops):
    arrow_type, values_strategy = TYPES[kind]
    index = spec_index.Index()
    model: dict = {}
    for op, arg, count in ops:
        if op == "add":
            values = data.draw(st.lists(values_strategy, max_size=count))
            with_null = [*values, None]
            spec_index.add(index, pa.array(with_null, type=arrow_type), arg)
            _model_apply(model, op, arg, values)
        else:
            index = spec_index.remove_labels(index, arg)
            _model_apply(model, op, arg, [])
    assert {k: set(v) for k, v in index.items()} == model
    raw = spec_index.to_parquet("col", arrow_type, index)
    back = spec_index.from_parquet("col", raw, arrow_type)
    assert {k: set(v) for k, v in back.items()} == model
    merged = spec_index.merge(back, spec_index.Index())
    assert {k: set(v) for k, v in merged.items()} == model
    keep = sorted({label for labels in model.values() for label in labels})[:2]
    only = back.only_labels(keep)
    expected = {k: v & set(keep) for k, v in model.items() if v & set(keep)}
    assert {k: set(v) for k, v in only.items()} == expected


def test_plain_dicts_and_indices_merge_alike():
    left = {1: {"a"}, 2: {"b"}}
    right = spec_index.Index()
    right.add(pa.array([2, 3]), "c")
    merged = spec_index.merge(left, right)
    assert {k: set(v) for k, v in merged.items()} == {1: {"a"}, 2: {"b", "c"}, 3: {"c"}}
    assert bool(spec_index.Index()) is False and bool(merged) is True
