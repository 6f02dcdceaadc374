"""The embedded QuantizedIndex: binary shortlist + int8/float rescoring, the Matryoshka funnel, persistence."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from embedopt import ConfigError, DimensionError, Fingerprint, IndexCorruptError, InputError
from embedopt.eval import evaluate, top_k
from embedopt.quantization import Calibration, hamming_distances, quantize
from embedopt.stores import QuantizedIndex

FP = Fingerprint("test", "unit-vectors", "r1", "document", "", 64, True)
HAS_FAISS = importlib.util.find_spec("faiss") is not None


def unit(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"d{i}" for i in range(start, start + n)]


@pytest.fixture(params=["numpy", pytest.param("faiss", marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss"))])
def backend(request) -> str:
    return request.param


def test_shortlist_is_the_exact_hamming_top_and_rescoring_uses_int8_not_bits(backend):
    docs, q = unit(3000), unit(5, seed=1)
    index = QuantizedIndex(FP, backend=backend)
    index.add(ids(3000), docs)
    found = index.search(q, 10, oversample=4, rescore="none")
    dist = hamming_distances(quantize(q, "ubinary"), quantize(docs, "ubinary"))
    for j in range(len(q)):
        want = np.sort(dist[j])[:10]
        np.testing.assert_array_equal(-found.scores[j], want)  # exact top distances, whatever the tie order
    rescored = index.search(q, 10, oversample=4, rescore="int8")
    for j in range(len(q)):
        rows = [int(i[1:]) for i in rescored.ids[j]]
        exact = docs[rows] @ q[j]
        assert np.all(np.diff(rescored.scores[j]) <= 1e-7)  # best first
        np.testing.assert_allclose(rescored.scores[j], exact, atol=0.02)  # int8 ≈ float, unlike Hamming
    assert rescored.candidates == 40 and set(rescored.timings_ms) == {"shortlist", "rescore"}


def test_faiss_and_numpy_backends_find_the_same_distances():
    if not HAS_FAISS:
        pytest.skip("faiss-cpu not installed")
    docs, q = unit(2000), unit(8, seed=2)
    a, b = QuantizedIndex(FP, backend="faiss"), QuantizedIndex(FP, backend="numpy")
    for index in (a, b):
        index.add(ids(2000), docs)
    fa, fb = a.search(q, 20, oversample=1, rescore="none"), b.search(q, 20, oversample=1, rescore="none")
    for sa, sb in zip(fa.scores, fb.scores, strict=True):
        np.testing.assert_array_equal(sa, sb)


def test_delete_re_add_payloads_and_ids(backend):
    docs = unit(100)
    index = QuantizedIndex(FP, backend=backend, keep_float=True)
    index.add(ids(100), docs, [{"n": i} for i in range(100)])
    assert len(index) == 100 and "d5" in index and "zz" not in index
    assert index.delete(["d5", "d6", "zz"]) == 2 and len(index) == 98 and "d5" not in index
    top = index.search(docs[5], 3, rescore="float").ids[0]
    assert "d5" not in top
    index.add(["d5"], docs[7][None, :], [{"n": "new"}])  # d5 back, now with d7's vector
    assert index.search(docs[7], 2, rescore="float").ids[0] == ["d5", "d7"] or \
        index.search(docs[7], 2, rescore="float").ids[0] == ["d7", "d5"]
    assert index.get_payloads(["d5", "d6", "d1"]) == [{"n": "new"}, {}, {"n": 1}]
    index.add(["d1"], docs[1][None, :])  # re-adding replaces: one d1, never two
    assert index.ids.count("d1") == 1 and len(index) == 99


def test_bad_input_is_refused_and_nothing_is_added():
    index = QuantizedIndex(FP)
    index.add(ids(40), unit(40))
    bad = unit(3)
    bad[1, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        index.add(ids(3, 100), bad)
    with pytest.raises(DimensionError, match="64-d"):
        index.add(ids(3, 100), unit(3, dim=32))
    with pytest.raises(InputError, match="unique"):
        index.add(["x", "x"], unit(2))
    with pytest.raises(InputError, match="non-empty strings"):
        index.add([1, 2], unit(2))
    with pytest.raises(InputError, match="JSON"):
        index.add(["x"], unit(1), [{"f": object()}])
    assert len(index) == 40
    with pytest.raises(ConfigError, match="keep_float"):
        index.search(unit(1), 3, rescore="float")
    with pytest.raises(ConfigError, match="oversample"):
        index.search(unit(1), 3, oversample=0.5)


def test_a_small_first_add_uses_a_symmetric_range_then_stays_correct():
    """Fewer than 32 vectors cannot fit per-dimension ranges; the index must still add and rank them."""
    docs = unit(5)
    index = QuantizedIndex(FP)
    index.add(ids(5), docs)
    assert index.calibration is not None and index.calibration.n_samples == 5
    assert index.search(docs[3], 1).ids[0] == ["d3"]


def test_save_load_roundtrip_maps_vectors_from_disk_and_refuses_another_model(tmp_path, backend):
    docs, q = unit(500), unit(4, seed=3)
    index = QuantizedIndex(FP, keep_float=True, backend=backend)
    index.add(ids(500), docs, [{"n": i} for i in range(500)])
    index.delete(["d0"])
    before = index.search(q, 5)
    index.save(tmp_path / "idx")
    assert index.memory_bytes()["vectors_in_ram"] == 0 and index.memory_bytes()["vectors_on_disk"] > 0
    loaded = QuantizedIndex.load(tmp_path / "idx", expect=FP, backend=backend)
    assert isinstance(loaded._int8, np.memmap)
    after = loaded.search(q, 5)
    assert after.ids == before.ids and all(np.allclose(a, b) for a, b in zip(after.scores, before.scores, strict=True))
    assert len(loaded) == 499 and "d0" not in loaded and loaded.get_payloads(["d9"]) == [{"n": 9}]
    assert loaded.search(q, 5, rescore="float").ids == index.search(q, 5, rescore="float").ids
    other = Fingerprint("test", "another-model", "r1", "document", "", 64, True)
    with pytest.raises(ConfigError, match="another model"):
        QuantizedIndex.load(tmp_path / "idx", expect=other)
    loaded.add(["new"], unit(1, seed=9))  # adding to a mapped index works; the next save maps again
    assert "new" in loaded and loaded.memory_bytes()["vectors_in_ram"] > 0


def test_a_damaged_index_is_refused_with_advice(tmp_path):
    """Damaged folders are refused with IndexCorruptError naming the file and saying to rebuild or restore (the
    full set of damages is tests/robustness/test_index_damage.py)."""
    index = QuantizedIndex(FP)
    index.add(ids(50), unit(50))
    index.save(tmp_path / "idx")
    np.save(tmp_path / "idx" / "ids.npy", np.array([b"a", b"b"]))
    with pytest.raises(IndexCorruptError, match=r"ids\.npy .*rebuild") as info:
        QuantizedIndex.load(tmp_path / "idx")
    assert info.value.path == str(tmp_path / "idx" / "ids.npy")
    with pytest.raises(IndexCorruptError, match="no embedopt index"):
        QuantizedIndex.load(tmp_path / "nothing-here")
    meta_dir = tmp_path / "other"
    meta_dir.mkdir()
    (meta_dir / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexCorruptError, match="not an embedopt quantized index"):
        QuantizedIndex.load(meta_dir, verify=False)


@pytest.mark.slow
def test_binary_plus_rescore_keeps_float_quality_on_real_minilm_vectors(sample_vectors):
    """The recipe on real vectors (400 man pages, MiniLM): binary alone loses quality, rescoring wins it back.
    The full-set study with retention figures is bench/retrieval_quality.py."""
    ds, docs, queries, embedder = sample_vectors
    fp = embedder.fingerprint("document")

    def ndcg(found_ids: list[list[str]]) -> float:
        return evaluate(dict(zip(ds.query_ids, found_ids, strict=True)), ds.qrels)["ndcg@10"]

    exact = ndcg([[ds.doc_ids[i] for i in row] for row in top_k(queries @ docs.T, 10)])
    index = QuantizedIndex(fp, calibration=Calibration.fit(docs), keep_float=True)
    index.add(ds.doc_ids, docs)
    binary = ndcg(index.search(queries, 10, oversample=1, rescore="none").ids)
    rescored = ndcg(index.search(queries, 10, oversample=4, rescore="int8").ids)
    floated = ndcg(index.search(queries, 10, oversample=4, rescore="float").ids)
    assert binary < exact - 0.01  # the bits alone lose ranking quality
    assert rescored >= 0.98 * exact and floated >= 0.98 * exact
    funnel = QuantizedIndex(fp, calibration=index.calibration, keep_float=True, shortlist=64)
    funnel.add(ds.doc_ids, docs)
    # With a shortlist as big as the corpus, the funnel's float rescoring is the exact float ranking.
    full = funnel.search(queries, 10, oversample=len(docs) / 10, rescore="float")
    assert ndcg(full.ids) == pytest.approx(exact, abs=1e-3)
    assert ndcg(funnel.search(queries, 10, oversample=4, rescore="float").ids) >= 0.95 * exact
