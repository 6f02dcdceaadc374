"""The store contract, run over every store: one line in ``STORES`` gives a new store the whole suite."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from embedopt import DimensionError, InputError
from embedopt.fingerprint import Fingerprint
from embedopt.stores import EdgeStore, QdrantStore, QuantizedIndex, Record, SearchResult, VectorStore

DIM = 64
FP = Fingerprint("test", "store-contract", "r1", "document", "", DIM, True)

#: Every store the suite runs over: name -> factory(). One line per implementation.
STORES: dict[str, Callable[[], VectorStore]] = {
    "quantized-binary": lambda: QuantizedIndex(FP),
    "quantized-funnel": lambda: QuantizedIndex(FP, shortlist=16, keep_float=True),
    "qdrant-local": lambda: QdrantStore(FP, collection=f"c{uuid.uuid4().hex[:8]}", quantization="none"),
    "qdrant-edge": lambda: EdgeStore(FP, tempfile.mkdtemp(prefix="edge-contract-"), quantization="binary"),
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


def _tagged(store: VectorStore, n: int = 300) -> np.ndarray:
    v = _vectors(n, seed=3)
    store.add([f"d{i}" for i in range(n)], v, [{"n": i, "colour": ["red", "green", "blue"][i % 3],
                                                "tags": ["all", f"t{i % 5}"], "meta": {"even": i % 2 == 0}}
                                               for i in range(n)])
    return v


@pytest.mark.parametrize(("where", "expect"), [
    ({"colour": "red"}, lambda i: i % 3 == 0),
    ({"colour": ["red", "blue"]}, lambda i: i % 3 != 1),
    ({"colour": {"$ne": "red"}}, lambda i: i % 3 != 0),
    ({"colour": {"$nin": ["red", "green"]}}, lambda i: i % 3 == 2),
    ({"n": {"$gte": 10, "$lt": 20}}, lambda i: 10 <= i < 20),
    ({"n": {"$gt": 290}}, lambda i: i > 290),
    ({"n": {"$lte": 3}}, lambda i: i <= 3),
    ({"tags": "t2"}, lambda i: i % 5 == 2),
    ({"meta.even": True}, lambda i: i % 2 == 0),
    ({"$or": [{"n": 7}, {"$and": [{"colour": "green"}, {"n": {"$lt": 10}}]}]}, lambda i: i == 7 or (i % 3 == 1 and i < 10)),
    ({"$not": {"colour": "red"}, "n": {"$lt": 12}}, lambda i: i % 3 != 0 and i < 12),
    ({"missing": {"$exists": False}, "n": {"$in": [1, 2]}}, lambda i: i in (1, 2)),
])
def test_filters_apply_during_the_search_and_still_return_k(store, where, expect):
    """A filtered search keeps k hits when k entries match (filtering after a top-k would return fewer), and
    every store reads the filter the same way."""
    v = _tagged(store)
    matching = [f"d{i}" for i in range(300) if expect(i)]
    found = store.search(v[:4], k=5, where=where)
    for row in found.ids:
        assert len(row) == min(5, len(matching)) and set(row) <= set(matching)
    assert sorted(r.id for r in store.get(where=where)) == sorted(matching)


def test_get_delete_by_filter_and_clear(store):
    v = _tagged(store, 60)
    got = store.get(["d5", "nope", "d2"], with_vectors=True)
    assert [r.id for r in got] == ["d5", "d2"] and isinstance(got[0], Record)
    assert got[0].payload["n"] == 5 and got[0].vector is not None
    assert float(got[0].vector @ v[5]) > 0.95 * float(np.linalg.norm(got[0].vector))  # the stored vector, decoded
    assert store.get(["d5", "d6"], where={"colour": "red"})[0].id == "d6"
    assert store.delete(where={"colour": "red"}) == 20 and len(store) == 40
    assert store.delete(["d1", "d2", "d3"], where={"colour": "green"}) == 1 and len(store) == 39
    store.clear()
    assert len(store) == 0 and store.search(v[:1], k=3).ids == [[]]


def test_a_filter_sees_every_later_write(store):
    """Regression: the embedded store keeps each filter's matches between searches; rows added, replaced with
    another payload or deleted after the first filtered search must count the next time."""
    v = _vectors(120, seed=5)
    store.add([f"d{i}" for i in range(60)], v[:60], [{"t": i % 2} for i in range(60)])
    assert len(store.search(v[:1], k=100, where={"t": 1}).ids[0]) == 30
    store.add([f"d{i}" for i in range(60, 120)], v[60:], [{"t": i % 2} for i in range(60, 120)])
    store.add(["d1"], v[1:2], [{"t": 0}])
    store.delete(["d3"])
    found = store.search(v[:1], k=100, where={"t": 1}).ids[0]
    assert len(found) == 58 and "d1" not in found and "d3" not in found
    assert "d1" in store.search(v[:1], k=100, where={"t": 0}).ids[0]
