"""The store contract, run over every store: one line in ``STORES`` gives a new store the whole suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pytest

from embedopt import DimensionError, InputError
from embedopt.fingerprint import Fingerprint
from embedopt.stores import QdrantStore, QuantizedIndex, SearchResult, VectorStore

DIM = 64
FP = Fingerprint("test", "store-contract", "r1", "document", "", DIM, True)

#: Every store the suite runs over: name -> factory(). One line per implementation.
STORES: dict[str, Callable[[], VectorStore]] = {
    "quantized-binary": lambda: QuantizedIndex(FP),
    "quantized-funnel": lambda: QuantizedIndex(FP, shortlist=16, keep_float=True),
    "qdrant-local": lambda: QdrantStore(FP, collection=f"c{uuid.uuid4().hex[:8]}", quantization="none"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> VectorStore:
    return STORES[request.param]()


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_it_is_a_store_and_finds_each_vector_first(store):
    assert isinstance(store, VectorStore) and store.dim == DIM and store.fingerprint == FP
    v = _vectors(200)
    ids = [f"doc-{i}" for i in range(200)]
    store.add(ids, v, [{"n": i} for i in range(200)])
    assert len(store) == 200
    found = store.search(v[:20], k=3, oversample=4.0)
    assert isinstance(found, SearchResult) and len(found.ids) == 20
    assert [row[0] for row in found.ids] == ids[:20]
    for row, scores in zip(found.ids, found.scores, strict=True):
        assert len(row) == len(scores) == 3 and np.all(np.diff(scores) <= 1e-6)  # best first
    assert store.get_payloads(["doc-5", "doc-7"]) == [{"n": 5}, {"n": 7}]


def test_replace_and_delete(store):
    v = _vectors(50)
    store.add([f"d{i}" for i in range(50)], v)
    store.add(["d3"], v[10:11], [{"moved": True}])  # re-adding an id replaces it
    assert len(store) == 50
    assert store.search(v[10:11], k=2).ids[0][:2] in (["d3", "d10"], ["d10", "d3"])
    assert store.get_payloads(["d3"]) == [{"moved": True}]
    assert store.delete(["d3", "d4", "no-such-id"]) == 2 and len(store) == 48
    assert "d4" not in store.search(v[4:5], k=5).ids[0]


def test_empty_store_and_k_over_size(store):
    assert store.search(_vectors(1), k=5).ids == [[]]
    store.add(["a", "b"], _vectors(2))
    assert sorted(store.search(_vectors(1, seed=9), k=10).ids[0]) == ["a", "b"]


def test_bad_input_is_refused_and_nothing_is_added(store):
    bad = _vectors(3)
    bad[1, 0] = np.nan
    with pytest.raises(InputError):
        store.add(["x", "y", "z"], bad)
    with pytest.raises(DimensionError):
        store.add(["x"], np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(InputError):
        store.add(["x", "y"], _vectors(3))
    assert len(store) == 0
