"""The LlamaIndex adapter with real LlamaIndex objects: VectorStoreIndex over SimpleVectorStore and over
llama-index-vector-stores-qdrant (qdrant-client local mode), the rerank postprocessor, instrumentation events."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.storage.kvstore import SimpleKVStore
from pydantic import Field

from embedopt import Embedder
from embedopt.eval import load_beir
from embedopt.providers import FunctionProvider
from llamaindex_embedopt import EmbedOptEmbedding, EmbedOptRerank, EmbedOptRetriever

from .conftest import SAMPLE, Recorder, WordOverlap

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class Events(BaseEventHandler):
    events: list = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def nodes() -> list[TextNode]:
    ds = load_beir(SAMPLE)
    return [TextNode(id_=i, text=t, metadata={"title": ds.corpus[i]["title"]})
            for i, t in zip(ds.doc_ids, ds.doc_texts(), strict=True)]


@pytest.fixture(scope="module")
def embed_model() -> EmbedOptEmbedding:
    return EmbedOptEmbedding(model_name=MINILM)


@pytest.fixture(scope="module")
def simple_index(nodes, embed_model) -> VectorStoreIndex:
    return VectorStoreIndex(nodes, embed_model=embed_model)


@pytest.fixture
def events():
    handler = Events(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler.events
    root.event_handlers.remove(handler)


def test_vector_store_index_retrieves_and_emits_embedding_events(simple_index, embed_model, events):
    hits = simple_index.as_retriever(similarity_top_k=5).retrieve("change the owner of a file")
    assert hits[0].node.node_id == "chown.1" and hits[0].node.metadata["title"]
    q = np.asarray(embed_model.get_query_embedding("change the owner of a file"))
    d = np.asarray(embed_model.get_text_embedding(hits[0].node.get_content(metadata_mode="embed")))
    assert hits[0].score == pytest.approx(float(q @ d), abs=1e-4)
    assert any(isinstance(e, EmbeddingStartEvent) for e in events)
    assert any(isinstance(e, EmbeddingEndEvent) for e in events)
    start = next(e for e in events if isinstance(e, EmbeddingStartEvent))
    assert start.model_dict["class_name"] == "EmbedOptEmbedding" and "fingerprint" in start.model_dict


def test_qdrant_local_mode_index_agrees_with_the_simple_store(nodes, embed_model, simple_index):
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    simple_index.as_retriever(similarity_top_k=1).retrieve("warm")  # the simple index embedded every node
    computed = embed_model.core.stats.computed
    store = QdrantVectorStore(client=QdrantClient(location=":memory:"), collection_name="manpages")
    # Qdrant point ids are UUIDs: the page name moves to metadata (excluded from what is embedded)
    qnodes = [TextNode(id_=str(uuid.uuid5(uuid.NAMESPACE_URL, n.node_id)), text=n.text,
                       metadata={**n.metadata, "page": n.node_id}, excluded_embed_metadata_keys=["page"])
              for n in nodes]
    index = VectorStoreIndex(qnodes, embed_model=embed_model,
                             storage_context=StorageContext.from_defaults(vector_store=store))
    query = "find the process ID of a running program"
    q_hits = index.as_retriever(similarity_top_k=5).retrieve(query)
    s_hits = simple_index.as_retriever(similarity_top_k=5).retrieve(query)
    assert [h.node.metadata["page"] for h in q_hits] == [h.node.node_id for h in s_hits]
    assert embed_model.core.stats.computed == computed + 1  # only the query: every document came from the cache


def test_rerank_postprocessor_emits_events_and_never_mutates_nodes(simple_index, events):
    hits = simple_index.as_retriever(similarity_top_k=8).retrieve("change the owner of a file")
    before = [(h.node.node_id, h.score, dict(h.node.metadata)) for h in hits]
    rerank = EmbedOptRerank(reranker=WordOverlap(), top_n=3)
    out = rerank.postprocess_nodes(hits, query_str="change the owner of a file")
    assert len(out) == 3 and all(isinstance(n, NodeWithScore) for n in out)
    assert [(h.node.node_id, h.score, dict(h.node.metadata)) for h in hits] == before
    assert all(o is not h for o in out for h in hits)
    start = next(e for e in events if isinstance(e, ReRankStartEvent))
    end = next(e for e in events if isinstance(e, ReRankEndEvent))
    assert start.top_n == 3 and start.model_name == "overlap" and len(start.nodes) == 8
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in out]
    aout = asyncio.run(rerank.apostprocess_nodes(hits, query_bundle=QueryBundle("change the owner of a file")))
    assert [(n.node.node_id, n.score) for n in aout] == [(n.node.node_id, n.score) for n in out]
    assert EmbedOptRerank.class_name() == "EmbedOptRerank"


@pytest.mark.slow
def test_query_engine_style_retrieve_then_cross_encoder_rerank(simple_index, trained_reranker_dir):
    from embedopt.rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(trained_reranker_dir)
    hits = simple_index.as_retriever(similarity_top_k=10).retrieve("copy files and directories")
    out = EmbedOptRerank(reranker=reranker, top_n=3).postprocess_nodes(hits, query_str="copy files and directories")
    scores = reranker.scores("copy files and directories", [h.node.get_content(metadata_mode="embed") for h in hits])
    assert [n.node.node_id for n in out] == [hits[i].node.node_id for i in np.argsort(-scores, kind="stable")[:3]]
    assert [n.score for n in out] == pytest.approx(sorted(scores, reverse=True)[:3], rel=1e-5)


def test_embedopt_retriever_returns_nodes_with_ids_and_metadata(nodes, embed_model):
    r = EmbedOptRetriever.from_nodes(nodes, embed_model, similarity_top_k=3)
    hits = r.retrieve("change the owner of a file")
    assert len(hits) == 3 and hits[0].node.node_id == "chown.1"
    assert hits[0].node.metadata["title"] and hits[0].node.get_content() and "total" in r.last_timings_ms
    ahits = asyncio.run(r.aretrieve("change the owner of a file"))
    assert [h.node.node_id for h in ahits] == [h.node.node_id for h in hits]


async def test_async_batches_go_to_the_core_one_call_per_batch():
    recorder = Recorder(dim=16)
    provider = FunctionProvider(recorder, dim=16, model="recorder", max_batch=1000)
    e = EmbedOptEmbedding(embedder=Embedder(provider), embed_batch_size=7)
    vectors = await e.aget_text_embedding_batch([f"text {i}" for i in range(20)])
    assert len(vectors) == 20
    assert sorted(len(batch) for batch, _ in recorder.calls) == [6, 7, 7]  # not 20 calls of one text
    assert len(e.get_text_embedding_batch([f"other {i}" for i in range(20)])) == 20
    assert sorted(len(b) for b, _ in recorder.calls[3:]) == [6, 7, 7]


def test_no_secret_in_payload_or_repr(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-0123456789abcdef")
    from_env = EmbedOptEmbedding(model_name="openai:text-embedding-3-small", base_url="http://127.0.0.1:9/v1")
    given = EmbedOptEmbedding(model_name="openai:text-embedding-3-small", base_url="http://127.0.0.1:9/v1",
                              api_key="sk-secret-given-0123456789")
    assert from_env.core.provider._key == "sk-secret-0123456789abcdef"  # the provider read the env var
    for text in (repr(e) for e in (from_env, given)):
        assert "sk-secret" not in text
    for e in (from_env, given):
        texts = (str(e.to_payload()), e.to_json(), str(e.to_dict()), repr(e.core), e.core.fingerprint().id)
        assert not any("sk-secret" in t for t in texts)


def test_llamaindex_embeddings_cache_keys_on_text_alone_and_ours_does_not(tmp_path):
    """LlamaIndex's ``embeddings_cache`` keys on the text alone: a second model sharing it gets the first model's
    vectors. embedopt's cache keys on the fingerprint and input type: each model, and a query vs a document of
    the same text, get their own vectors."""
    text = "find the process ID of a running program"
    prompts = {"query_prompt": "query: ", "document_prompt": "passage: "}
    kv = SimpleKVStore()
    a = EmbedOptEmbedding(model_name=MINILM, cache=None, embeddings_cache=kv)
    b = EmbedOptEmbedding(model_name=MINILM, cache=None, embeddings_cache=kv, model_kwargs=prompts)
    truth_b = EmbedOptEmbedding(model_name=MINILM, cache=None, model_kwargs=prompts).get_text_embedding(text)
    va = a.get_text_embedding_batch([text])[0]
    vb = b.get_text_embedding_batch([text])[0]
    assert np.allclose(vb, va) and not np.allclose(vb, truth_b)  # LlamaIndex served model A's vector to B

    shared = f"sqlite:{tmp_path / 'v.sqlite3'}"
    oa = EmbedOptEmbedding(model_name=MINILM, cache=shared)
    ob = EmbedOptEmbedding(model_name=MINILM, cache=shared, model_kwargs=prompts)
    oa.get_text_embedding_batch([text])
    np.testing.assert_allclose(ob.get_text_embedding_batch([text])[0], truth_b, rtol=1e-5)
    q, d = ob.get_query_embedding(text), ob.get_text_embedding(text)
    assert not np.allclose(q, d)  # a query and a document of the same text: two vectors
