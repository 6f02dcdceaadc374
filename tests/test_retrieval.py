"""The retrieval pipeline: embed → store search with oversampling → rescore → optional rerank → top k."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedopt import ConfigError, Embedder
from embedopt.providers import FunctionProvider
from embedopt.retrieval import Retriever
from embedopt.stores import QuantizedIndex

from .conftest import WordOverlap, hash_vectors


@pytest.fixture
def plumbing(fake_provider):
    embedder = Embedder(fake_provider, cache="memory")
    index = QuantizedIndex(embedder.fingerprint("document"), keep_float=True)
    return embedder, index


def test_retriever_refuses_another_space_dim_or_precision(plumbing):
    embedder, index = plumbing
    other = Embedder(FunctionProvider(lambda t, i: hash_vectors(t, i), dim=16, model="another"))
    with pytest.raises(ConfigError, match="never meet"):
        Retriever(other, index)
    with pytest.raises(ConfigError, match="dim=16"):
        Retriever(Embedder(embedder.provider, dim=8), index)
    with pytest.raises(ConfigError, match="float32"):
        Retriever(Embedder(embedder.provider, precision="binary"), index)
    with pytest.raises(ConfigError, match="k must be"):
        Retriever(embedder, index, k=0)
    with pytest.raises(ConfigError, match="Reranker"):
        Retriever(embedder, index, reranker=object())  # type: ignore[arg-type]


def test_hits_carry_ids_payloads_text_scores_and_stage_timings(plumbing):
    embedder, index = plumbing
    r = Retriever(embedder, index, k=3, oversample=20, rescore="float")  # the shortlist holds all 50
    texts = [f"document number {i}" for i in range(50)]
    ids = r.add_texts(texts, ids=[f"id{i}" for i in range(50)], metadatas=[{"n": i} for i in range(50)])
    assert ids[:2] == ["id0", "id1"] and len(index) == 50
    res = r.retrieve("document number 7")
    assert len(res.hits) == 3 and res.candidates == 50
    q = embedder.embed_query("document number 7")
    docs = embedder.embed_documents(texts)
    exact = np.argsort(-(docs @ q))[:3]
    assert [h.id for h in res.hits] == [f"id{i}" for i in exact]
    hit = res.hits[0]
    assert hit.payload["n"] == int(hit.id[2:]) and hit.text == texts[int(hit.id[2:])]
    assert hit.score == hit.vector_score and hit.rerank_score is None
    assert {"embed", "search", "shortlist", "rescore", "total"} <= set(res.timings_ms)
    assert len(r.retrieve("document number 7", k=5).hits) == 5
    many = r.retrieve_many(["document number 7", "document number 9"], k=2)
    assert [h.id for h in many[0].hits] == [h.id for h in res.hits[:2]]
    assert r.add_texts([]) == []


async def test_rerank_stage_sees_rerank_candidates_and_async_matches_sync(plumbing):
    embedder, index = plumbing
    reranker = WordOverlap()
    r = Retriever(embedder, index, k=2, reranker=reranker, rerank_candidates=6)
    r.add_texts([f"alpha beta {i}" for i in range(30)] + ["gamma delta"], ids=[f"x{i}" for i in range(31)])
    res = r.retrieve("gamma delta zeta")
    assert len(reranker.seen[-1]) == 6 and len(res.hits) == 2 and "rerank" in res.timings_ms
    for h in res.hits:
        assert h.rerank_score is not None and h.score == h.rerank_score
    ares = await r.aretrieve("gamma delta zeta")
    assert [h.id for h in ares.hits] == [h.id for h in res.hits]
    await r.aadd_texts(["epsilon"], ids=["e"])
    assert "e" in index


def test_rerank_needs_the_documents_text(plumbing):
    embedder, index = plumbing
    index.add(["a", "b"], embedder.embed_documents(["a", "b"]))  # added without text
    r = Retriever(embedder, index, k=1, reranker=WordOverlap())
    with pytest.raises(ConfigError, match="text"):
        r.retrieve("a")


@pytest.mark.slow
def test_two_stage_on_real_models_with_the_trained_cross_encoder(sample_vectors, trained_reranker_dir):
    """MiniLM + binary/int8 store + the cross-encoder trained here, on the manpages sample."""
    from embedopt.rerank import CrossEncoderReranker

    ds, _, _, embedder = sample_vectors
    index = QuantizedIndex(embedder.fingerprint("document"))
    reranker = CrossEncoderReranker(trained_reranker_dir)
    r = Retriever(embedder, index, k=5, reranker=reranker, rerank_candidates=10)
    r.add_texts(ds.doc_texts(), ids=ds.doc_ids)
    qid = ds.query_ids[0]
    res = r.retrieve(ds.queries[qid])
    assert len(res.hits) == 5 and res.timings_ms["rerank"] > 0
    # the reranker's order is the order of its own scores over the same ten candidates
    first = Retriever(embedder, index, k=10).retrieve(ds.queries[qid])
    scores = reranker.scores(ds.queries[qid], [h.text for h in first.hits])
    assert [h.id for h in res.hits] == [first.hits[i].id for i in np.argsort(-scores, kind="stable")[:5]]
    both = asyncio.run(r.aretrieve(ds.queries[qid]))
    assert [h.id for h in both.hits] == [h.id for h in res.hits]
