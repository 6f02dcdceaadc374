"""Hybrid search through the adapters, with real LangChain and LlamaIndex objects: LangChain's vector store
(``retrieval_mode="hybrid"``, ``search_type="hybrid"``, ``fusion=`` in search kwargs) and retriever, LlamaIndex's
``VectorStoreIndex`` on our vector store (``vector_store_query_mode="hybrid"`` with ``alpha``, ``sparse_top_k``,
``text_search``), filters on both sides, deletes, persistence. Static model, manpages sample."""

from __future__ import annotations

import pytest

from embedopt import ConfigError, Embedder
from embedopt.fusion import Ranking, rrf
from embedopt.hybrid import HybridStore

from .conftest import SAMPLE

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def sample():
    from embedopt.eval import load_beir

    return load_beir(SAMPLE)


@pytest.fixture(scope="module")
def embedder(static):
    return Embedder(static, cache="memory", show_progress=False)


def _section(doc_id: str) -> str:
    return doc_id.rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------------- LangChain
@pytest.fixture
def lc_store(embedder, sample):
    from langchain_embedopt import EmbedOptVectorStore

    store = EmbedOptVectorStore(embedder, retrieval_mode="hybrid")
    store.add_texts(sample.doc_texts(), [{"section": _section(i)} for i in sample.doc_ids], ids=sample.doc_ids)
    return store


def test_langchain_hybrid_store_fuses_both_sides_under_the_filter(lc_store, sample):
    core = lc_store.store
    assert isinstance(core, HybridStore) and sorted(core.lexical.ids) == sorted(sample.doc_ids)
    query = sample.query_texts()[4]
    docs = lc_store.similarity_search(query, k=4)
    vector = lc_store.pipeline.embedder.embed([query], "query")
    depth = lc_store.pipeline.fusion_candidates
    dense = core.search(vector, depth, oversample=max(1.0, 4.0 * 4 / depth))
    expected = rrf([Ranking.from_result(dense), Ranking.from_result(core.search_lexical(query, depth))], limit=4)
    assert [d.id for d in docs] == expected.ids
    assert docs[0].page_content in sample.doc_texts()

    where = {"section": "1"}
    filtered = lc_store.similarity_search(query, k=6, filter=where)
    assert len(filtered) == 6 and all(d.metadata["section"] == "1" for d in filtered)
    # per call: vectors only, or BM25 only (convex with alpha 0), through LangChain's own retriever
    dense_only = lc_store.similarity_search(query, k=4, fusion=None)
    assert [d.id for d in dense_only] == dense.ids[0][:4]
    bm25 = lc_store.as_retriever(search_kwargs={"k": 3, "fusion": "convex:0"}).invoke(query)
    assert [d.id for d in bm25] == core.search_lexical(query, 3).ids[0]
    assert [d.id for d in lc_store.search(query, "hybrid", k=4)] == expected.ids
    scored = lc_store.similarity_search_with_relevance_scores(query, k=4)
    assert all(0 <= s <= 1 for _, s in scored)


def test_langchain_deletes_reach_the_lexical_side(lc_store, sample):
    gone = {i for i in sample.doc_ids if _section(i) == "8"}
    lc_store.delete(filter={"section": "8"})
    lc_store.delete([sample.doc_ids[0]])
    lexical = lc_store.store.lexical
    assert not (gone | {sample.doc_ids[0]}) & set(lexical.ids)
    for query in sample.query_texts()[:5]:
        assert not {d.id for d in lc_store.similarity_search(query, k=10)} & gone


def test_langchain_dense_store_refuses_hybrid_search(embedder, sample):
    from langchain_embedopt import EmbedOptVectorStore

    store = EmbedOptVectorStore(embedder)
    store.add_texts(sample.doc_texts()[:40], ids=sample.doc_ids[:40])
    with pytest.raises(ConfigError, match="retrieval_mode='hybrid'"):
        store.search("ls", "hybrid")
    with pytest.raises(ConfigError, match="HybridStore"):
        store.similarity_search("ls", fusion="rrf")
    with pytest.raises(ConfigError, match="retrieval_mode"):
        EmbedOptVectorStore(embedder, retrieval_mode="sparse")  # type: ignore[arg-type]


def test_langchain_retriever_with_fusion_reports_both_scores(embedder, sample):
    from langchain_embedopt import EmbedOptRetriever

    retriever = EmbedOptRetriever.from_texts(sample.doc_texts(), embedder, ids=sample.doc_ids,
                                             metadatas=[{"section": _section(i)} for i in sample.doc_ids],
                                             k=5, fusion="dbsf")
    docs = retriever.invoke(sample.query_texts()[1])
    assert len(docs) == 5
    assert all("fusion_score" in d.metadata and "lexical_score" in d.metadata for d in docs)
    assert any(d.metadata["lexical_score"] is not None for d in docs)
    assert [d.metadata["fusion_score"] for d in docs] == sorted((d.metadata["fusion_score"] for d in docs),
                                                                reverse=True)


# ------------------------------------------------------------------------------------------- LlamaIndex
@pytest.fixture(scope="module")
def embed_model(static_model_dir):
    from llamaindex_embedopt import EmbedOptEmbedding

    return EmbedOptEmbedding(model=f"static:{static_model_dir}")


def _index(embed_model, sample, **options):
    from llama_index.core import Document, StorageContext, VectorStoreIndex

    from llamaindex_embedopt import EmbedOptVectorStore

    vector_store = EmbedOptVectorStore(embed_model=embed_model, enable_hybrid=True, **options)
    docs = [Document(text=t, id_=i, metadata={"section": _section(i)})
            for i, t in zip(sample.doc_ids, sample.doc_texts(), strict=True)]
    storage = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=embed_model)
    return index, vector_store


def _refs(nodes) -> list[str]:
    return [n.node.ref_doc_id for n in nodes]


def test_llamaindex_hybrid_mode_alpha_sparse_top_k_filters_and_persistence(embed_model, sample, tmp_path):
    from llama_index.core import StorageContext, load_index_from_storage
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from llamaindex_embedopt import EmbedOptVectorStore

    index, vector_store = _index(embed_model, sample)
    store = vector_store.client
    assert isinstance(store, HybridStore) and len(store.lexical) == len(sample.doc_ids)
    query = sample.query_texts()[6]
    node_of = {r.id: r.payload["ref_doc_id"] for r in store.get()}
    bm25 = [node_of[i] for i in store.search_lexical(query, 3).ids[0]]
    # alpha=0 is BM25 alone, alpha=1 the vectors alone (LlamaIndex's convention), both through the real retriever
    # (BM25 searched deeper than the 3 kept: min-max puts a list's last hit at 0, level with the misses)
    lexical_only = index.as_retriever(vector_store_query_mode="hybrid", alpha=0.0, similarity_top_k=3,
                                      sparse_top_k=10)
    assert _refs(lexical_only.retrieve(query)) == bm25
    dense = _refs(index.as_retriever(similarity_top_k=10).retrieve(query))[:3]  # the same shortlist depth
    assert _refs(index.as_retriever(vector_store_query_mode="hybrid", alpha=1.0, similarity_top_k=10,
                                    hybrid_top_k=3).retrieve(query)) == dense
    assert _refs(index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=3).retrieve(query)) == bm25

    hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10,
                                hybrid_top_k=4)
    found = hybrid.retrieve(query)
    assert len(found) == 4 and set(_refs(found)) <= set(dense + bm25) | set(sample.doc_ids)
    section_5 = MetadataFilters(filters=[MetadataFilter(key="section", value="5")])
    filtered = index.as_retriever(vector_store_query_mode="hybrid", alpha=0.3, similarity_top_k=6,
                                  filters=section_5).retrieve(query)
    assert len(filtered) == 6 and all(n.node.metadata["section"] == "5" for n in filtered)
    assert all(_section(r) == "5" for r in _refs(index.as_retriever(
        vector_store_query_mode="text_search", similarity_top_k=6, filters=section_5).retrieve(query)))

    before = _refs(hybrid.retrieve(query))
    index.storage_context.persist(str(tmp_path / "storage"))
    reopened = EmbedOptVectorStore.from_persist_dir(str(tmp_path / "storage"))
    assert reopened.enable_hybrid and len(reopened.client.lexical) == len(sample.doc_ids)
    storage = StorageContext.from_defaults(vector_store=reopened, persist_dir=str(tmp_path / "storage"))
    again = load_index_from_storage(storage, embed_model=embed_model)
    assert _refs(again.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10,
                                    hybrid_top_k=4).retrieve(query)) == before


def test_llamaindex_delete_by_document_reaches_the_lexical_side(embed_model, sample):
    index, vector_store = _index(embed_model, sample)
    query = sample.query_texts()[6]
    target = _refs(index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=1).retrieve(query))[0]
    index.delete_ref_doc(target)
    assert target not in _refs(index.as_retriever(vector_store_query_mode="hybrid", alpha=0.0, similarity_top_k=10,
                                                  sparse_top_k=20).retrieve(query))
    assert len(vector_store.client.lexical) == len(sample.doc_ids) - 1


def test_llamaindex_dense_store_refuses_hybrid_modes(embed_model):
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

    from llamaindex_embedopt import EmbedOptVectorStore

    store = EmbedOptVectorStore(embed_model=embed_model)
    with pytest.raises(ConfigError, match="enable_hybrid"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 256, query_str="ls",
                                     mode=VectorStoreQueryMode.HYBRID))


def test_langchain_hybrid_on_a_sparse_qdrant_store_keeps_bm25_in_qdrant(embedder, sample):
    pytest.importorskip("qdrant_client")
    from embedopt.stores import QdrantStore
    from langchain_embedopt import EmbedOptVectorStore

    qdrant = QdrantStore(embedder.fingerprint("document"), collection="lc", sparse=True, text_key="page_content",
                         quantization="none")
    vs = EmbedOptVectorStore(embedder, qdrant, retrieval_mode="hybrid")
    assert vs.store is qdrant  # no second BM25 index beside it
    vs.add_texts(sample.doc_texts()[:150], [{"section": _section(i)} for i in sample.doc_ids[:150]],
                 ids=sample.doc_ids[:150])
    query = sample.query_texts()[0]
    docs = vs.similarity_search(query, k=5, filter={"section": "1"})
    assert len(docs) == 5 and all(d.metadata["section"] == "1" for d in docs)
    assert [d.id for d in vs.similarity_search(query, k=3, fusion="convex:0")] == qdrant.search_lexical(query, 3).ids[0]
