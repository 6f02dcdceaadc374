"""The LangChain adapter: langchain-tests' standard suites subclassed with no overrides, real LangChain objects,
and the differences from LangChain's own CacheBackedEmbeddings."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite
from langchain_tests.unit_tests import EmbeddingsUnitTests

from embedopt.eval import load_beir
from langchain_embedopt import (
    EmbedOptEmbeddings,
    EmbedOptReranker,
    EmbedOptRetriever,
    EmbedOptSemanticCache,
)

from .conftest import SAMPLE, WordOverlap

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class TestEmbedOptEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[EmbedOptEmbeddings]:
        return EmbedOptEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": MINILM}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"OPENAI_API_KEY": "sk-from-env-0123456789"},
                {"model": "openai:text-embedding-3-small", "base_url": "http://127.0.0.1:9/v1"},
                {"api_key": "sk-from-env-0123456789"})


class TestEmbedOptEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[EmbedOptEmbeddings]:
        return EmbedOptEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": MINILM}


@functools.cache
def sample_retriever_pipeline():
    """The manpages sample in an embedded binary + int8 store, MiniLM, built once."""
    ds = load_beir(SAMPLE)
    retriever = EmbedOptRetriever.from_texts(ds.doc_texts(), EmbedOptEmbeddings(model=MINILM), ids=ds.doc_ids,
                                             metadatas=[{"title": d["title"]} for d in ds.corpus.values()])
    return retriever.pipeline


class TestEmbedOptRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[EmbedOptRetriever]:
        return EmbedOptRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"pipeline": sample_retriever_pipeline()}

    @property
    def retriever_query_example(self) -> str:
        return "find the process ID of a running program"


def _fresh_cache() -> EmbedOptSemanticCache:
    return EmbedOptSemanticCache(EmbedOptEmbeddings(model=MINILM, cache=None))


class TestEmbedOptSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> EmbedOptSemanticCache:
        return _fresh_cache()


class TestEmbedOptSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> EmbedOptSemanticCache:
        return _fresh_cache()


# ------------------------------------------------------------------------------------------------ our own tests
def test_embeddings_are_python_floats_equal_to_the_core_and_keys_stay_secret(monkeypatch):
    e = EmbedOptEmbeddings(model=MINILM, dim=128)
    docs = e.embed_documents(["list directory contents", "copy files"])
    assert len(docs) == 2 and len(docs[0]) == 128 and type(docs[0][0]) is float
    np.testing.assert_allclose(docs, e.core.embed_documents(["list directory contents", "copy files"]), rtol=1e-6)
    assert e.embed_documents([]) == []
    monkeypatch.setenv("VOYAGE_API_KEY", "vk-secret-0123456789")
    v = EmbedOptEmbeddings(model="voyage:voyage-3", base_url="http://127.0.0.1:9/v1")
    assert "vk-secret-0123456789" not in repr(v) and "vk-secret-0123456789" not in str(v.model_dump())
    assert "vk-secret" not in v.core.fingerprint("document").id
    with pytest.raises(Exception, match="extra"):
        EmbedOptEmbeddings(model=MINILM, modle="typo")  # extra="forbid": a typo is an error, not a pass-through


async def test_async_embedding_never_blocks_the_event_loop():
    e = EmbedOptEmbeddings(model=MINILM, cache=None)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    vectors = await e.aembed_documents([f"manual page number {i} " * 30 for i in range(64)])
    task.cancel()
    assert len(vectors) == 64 and ticks > 5  # the loop kept running while MiniLM worked


def test_retriever_documents_keep_ids_and_carry_scores_and_timings():
    r = EmbedOptRetriever(pipeline=sample_retriever_pipeline(), k=3)
    docs = r.invoke("find the process ID of a running program")
    ds = load_beir(SAMPLE)
    assert len(docs) == 3 and all(d.id in ds.corpus for d in docs)
    first = docs[0]
    assert first.metadata["title"] == ds.corpus[first.id]["title"] and first.page_content
    assert first.metadata["score"] >= docs[1].metadata["score"] and "total" in first.metadata["timings_ms"]
    assert [d.id for d in r.invoke("find the process ID of a running program", k=2)] == [d.id for d in docs[:2]]
    adocs = asyncio.run(r.ainvoke("find the process ID of a running program"))
    assert [d.id for d in adocs] == [d.id for d in docs]


def test_reranker_returns_copies_with_relevance_score_and_keeps_ids():
    docs = [Document(id="a", page_content="bake bread", metadata={"n": 1}),
            Document(id="b", page_content="copy files quickly", metadata={"n": 2}),
            Document(id="c", page_content="copy", metadata={"n": 3})]
    out = EmbedOptReranker(reranker=WordOverlap(), top_n=2).compress_documents(docs, "copy files")
    assert [d.id for d in out] == ["b", "c"] and [d.metadata["n"] for d in out] == [2, 3]
    assert out[0].metadata["relevance_score"] == 2.0 and "relevance_score" not in docs[1].metadata
    aout = asyncio.run(EmbedOptReranker(reranker=WordOverlap(), top_n=2).acompress_documents(docs, "copy files"))
    assert aout == out
    assert EmbedOptReranker(reranker=WordOverlap()).compress_documents([], "q") == []


@pytest.mark.slow
def test_contextual_compression_with_the_trained_cross_encoder(trained_reranker_dir):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    from embedopt.rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(trained_reranker_dir)
    base = EmbedOptRetriever(pipeline=sample_retriever_pipeline(), k=8)
    ccr = ContextualCompressionRetriever(base_compressor=EmbedOptReranker(reranker=reranker, top_n=3),
                                         base_retriever=base)
    query = "copy files and directories"
    out = ccr.invoke(query)
    candidates = base.invoke(query)
    scores = reranker.scores(query, [d.page_content for d in candidates])
    assert [d.id for d in out] == [candidates[i].id for i in np.argsort(-scores, kind="stable")[:3]]
    assert all("relevance_score" in d.metadata and "title" in d.metadata for d in out)


def test_set_llm_cache_answers_a_paraphrase_and_never_across_llms():
    from langchain_core.globals import set_llm_cache
    from langchain_core.language_models.fake import FakeListLLM

    cache = _fresh_cache()
    set_llm_cache(cache)
    try:
        llm = FakeListLLM(responses=["use pidof", "second answer"])
        assert llm.invoke("How do I find the process id of a running program?") == "use pidof"
        assert llm.invoke("how can I find a running program's process ID?") == "use pidof"  # a cache hit
        assert llm.i == 1  # the LLM answered once
        other = FakeListLLM(responses=["another model's answer"], sleep=0.0)  # another llm_string
        assert other.invoke("How do I find the process id of a running program?") == "another model's answer"
        assert cache.semantic.stats()["hits"] == 1
    finally:
        set_llm_cache(None)


def test_beside_langchain_cache_backed_embeddings_queries_and_model_changes(tmp_path):
    """LangChain's CacheBackedEmbeddings keys on namespace + text: with query caching on, a query gets the
    document vector of the same text, and a model changed under an unchanged namespace serves stale vectors.
    embedopt keys on the model's fingerprint and the input type, so neither happens."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import InMemoryByteStore

    text = "find the process ID of a running program"
    asymmetric = {"query_prompt": "query: ", "document_prompt": "passage: "}  # as E5-style models do
    plain = EmbedOptEmbeddings(model=MINILM, cache=None, model_kwargs=asymmetric)
    truth_doc, truth_query = plain.embed_documents([text])[0], plain.embed_query(text)
    assert not np.allclose(truth_doc, truth_query)

    store = InMemoryByteStore()
    lc = CacheBackedEmbeddings.from_bytes_store(plain, store, namespace="minilm", query_embedding_cache=True,
                                                key_encoder="sha256")
    lc.embed_documents([text])
    assert np.allclose(lc.embed_query(text), truth_doc)  # LangChain: the query got the document's vector

    ours = EmbedOptEmbeddings(model=MINILM, cache=f"sqlite:{tmp_path / 'v.sqlite3'}", model_kwargs=asymmetric)
    ours.embed_documents([text])
    np.testing.assert_allclose(ours.embed_query(text), truth_query, rtol=1e-5)  # ours: the query's own

    # The model changes (here: prompts removed, as after a model update) but the namespace does not.
    changed = EmbedOptEmbeddings(model=MINILM, cache=None)
    lc_changed = CacheBackedEmbeddings.from_bytes_store(changed, store, namespace="minilm", key_encoder="sha256")
    assert np.allclose(lc_changed.embed_documents([text])[0], truth_doc)  # LangChain: stale vector served
    ours_changed = EmbedOptEmbeddings(model=MINILM, cache=f"sqlite:{tmp_path / 'v.sqlite3'}")
    np.testing.assert_allclose(ours_changed.embed_documents([text])[0], changed.embed_documents([text])[0],
                               rtol=1e-5)  # ours: recomputed for the new model
    assert ours_changed.core.stats.computed == 1
