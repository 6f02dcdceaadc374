"""QdrantStore on qdrant-client's local mode (no Qdrant server ships here): versions behind an alias, named
Matryoshka vectors searched with prefetch, payload filters. Local mode is exact float search and ignores
quantization, so these tests check behaviour, not the memory savings a server gives."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from embedopt import ConfigError, DimensionError, Fingerprint, InputError
from embedopt.eval import top_k

pytestmark = pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client")

FP = Fingerprint("test", "unit-vectors", "r1", "document", "", 64, True)


def unit(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def store():
    from embedopt.stores import QdrantStore

    s = QdrantStore(FP, collection="docs", matryoshka_dims=[16], quantization="binary")
    docs = unit(300)
    s.add([f"d{i}" for i in range(300)], docs, [{"group": i % 3, "text": f"doc {i}"} for i in range(300)])
    return s, docs


def test_search_filters_funnel_and_payloads(store):
    s, docs = store
    q = unit(4, seed=1)
    found = s.search(q, 5)
    want = top_k(q @ docs.T, 5)
    assert found.ids == [[f"d{i}" for i in row] for row in want]  # local mode: exact float
    np.testing.assert_allclose(found.scores[0], (q @ docs.T)[0, want[0]], rtol=1e-5)
    only = s.search(q, 5, where={"group": 1})
    assert all(int(i[1:]) % 3 == 1 for row in only.ids for i in row)
    anyof = s.search(q, 5, where={"group": [0, 2]})
    assert all(int(i[1:]) % 3 != 1 for row in anyof.ids for i in row)
    # The funnel shortlists on the 16-d prefix, then ranks its shortlist with the full vector.
    funnel = s.search(q, 5, funnel=16, oversample=60)  # a 300-point shortlist: the exact answer
    assert funnel.ids == found.ids
    assert s.get_payloads(["d4", "nope"]) == [{"group": 1, "text": "doc 4"}, {}]
    with pytest.raises(ConfigError, match="matryoshka_dims"):
        s.search(q, 5, funnel=32)


def test_upsert_replaces_delete_and_bad_input(store):
    s, docs = store
    s.add(["d1"], docs[2][None, :], [{"group": 9}])
    assert len(s) == 300 and s.get_payloads(["d1"]) == [{"group": 9}]
    assert s.delete(["d1", "d2", "nope"]) == 2 and len(s) == 298
    bad = unit(1)
    bad[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinity"):
        s.add(["x"], bad)
    with pytest.raises(DimensionError):
        s.add(["x"], unit(1, dim=32))


def test_versions_behind_an_alias_refuse_another_space_until_cut_over(store):
    from embedopt.stores import QdrantStore

    s, _ = store
    assert s.live_collection() == s.name
    other_fp = Fingerprint("test", "another-model", "r1", "document", "", 64, True)
    with pytest.raises(ConfigError, match="never meet"):
        QdrantStore(other_fp, collection="docs", client=s.client)
    v2 = QdrantStore(other_fp, collection="docs", client=s.client, activate=False)
    assert s.live_collection() == s.name  # building v2 left the live version alone
    assert v2.activate() == s.name and s.live_collection() == v2.name
    with pytest.raises(ConfigError, match="same settings"):
        QdrantStore(FP, collection="docs", client=s.client, quantization="scalar", activate=False)
    assert len(QdrantStore(FP, collection="docs", client=s.client, matryoshka_dims=[16], activate=False)) == 300


def test_a_persistent_local_collection_reopens(tmp_path):
    from embedopt.stores import QdrantStore

    s = QdrantStore(FP, collection="docs", path=str(tmp_path / "q"))
    s.add(["a", "b"], unit(2))
    s.client.close()
    again = QdrantStore(FP, collection="docs", path=str(tmp_path / "q"))
    assert len(again) == 2 and again.search(unit(2)[0], 1).ids == [["a"]]
    again.client.close()
