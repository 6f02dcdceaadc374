"""LangChain's standard VectorStore suites (sync and async, no overrides) over the embedded index and over
Qdrant's engine in-process, then what the suites leave out: filters, scores, MMR, the indexing API."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from embedopt.stores import EdgeStore, QuantizedIndex
from langchain_embedopt import EmbedOptEmbeddings, EmbedOptVectorStore

needs_edge = pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None, reason="qdrant-edge-py missing")


class TestEmbeddedIndexStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        yield EmbedOptVectorStore(self.get_embeddings())


@needs_edge
class TestQdrantEdgeStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = EmbedOptVectorStore(self.get_embeddings(),
                                    store=lambda fp, dim: EdgeStore(fp, tmp_path / "edge", dim=dim))
        yield store
        store.store.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ beyond the suite
STORES = ["embedded", pytest.param("edge", marks=needs_edge)]


def _store(kind: str, tmp_path: Path, size: int = 32) -> EmbedOptVectorStore:
    embedding = DeterministicFakeEmbedding(size=size)
    if kind == "embedded":
        return EmbedOptVectorStore(embedding)
    return EmbedOptVectorStore(embedding, store=lambda fp, dim: EdgeStore(fp, tmp_path / "edge", dim=dim))


def _corpus(n: int = 120) -> list[Document]:
    return [Document(page_content=f"document number {i}", id=f"d{i}",
                     metadata={"group": "abc"[i % 3], "n": i, "tags": ["all", f"t{i % 4}"]}) for i in range(n)]


@pytest.mark.parametrize("kind", STORES)
def test_filters_are_applied_inside_the_search(kind, tmp_path):
    """A filtered search returns k documents when k match: the filter is applied during the store's search,
    not to a top-k found without it."""
    store = _store(kind, tmp_path)
    store.add_documents(_corpus())
    for flt, ok in [({"group": "b"}, lambda m: m["group"] == "b"),
                    ({"n": {"$gte": 100}, "group": {"$ne": "a"}}, lambda m: m["n"] >= 100 and m["group"] != "a"),
                    ({"$or": [{"tags": "t1"}, {"n": {"$in": [0, 2]}}]}, lambda m: "t1" in m["tags"] or m["n"] in (0, 2))]:
        docs = store.similarity_search("document number 7", k=6, filter=flt)
        assert len(docs) == 6 and all(ok(d.metadata) for d in docs), flt
    assert [d.id for d in store.similarity_search("x", k=3, filter={"n": 5})] == ["d5"]
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"group": "c"}})
    assert [d.metadata["group"] for d in retriever.invoke("document number 1")] == ["c", "c"]


@pytest.mark.parametrize("kind", STORES)
async def test_scores_relevance_and_async_filters(kind, tmp_path):
    store = _store(kind, tmp_path)
    await store.aadd_documents(_corpus(30))
    (best, score), *_ = store.similarity_search_with_score("document number 4", k=3)
    assert best.id == "d4" and score == pytest.approx(1.0, abs=0.02)  # the same text embeds to the same vector
    relevance = store.similarity_search_with_relevance_scores("document number 4", k=3)
    assert all(0.0 <= s <= 1.0 for _, s in relevance) and relevance[0][1] == pytest.approx(1.0, abs=0.01)
    docs = await store.asimilarity_search("document number 4", k=4, filter={"group": "a"})
    assert len(docs) == 4 and {d.metadata["group"] for d in docs} == {"a"}
    vector = DeterministicFakeEmbedding(size=32).embed_query("document number 9")
    assert store.similarity_search_by_vector(vector, k=1)[0].id == "d9"
    assert (await store.asimilarity_search_by_vector(vector, k=1))[0].id == "d9"
    await store.adelete(["d9"])
    assert store.get_by_ids(["d9", "d8"])[0].id == "d8"
    store.delete(filter={"group": "b"})
    assert {d.metadata["group"] for d in store.similarity_search("document", k=30)} == {"a", "c"}
    store.delete()
    assert store.similarity_search("document", k=3) == []


@pytest.mark.parametrize("kind", STORES)
async def test_mmr_trades_similarity_for_diversity(kind, tmp_path):
    """Three copies of one text (same vector) and other texts: plain search returns the copies first, MMR returns
    one copy and then something else."""
    store = _store(kind, tmp_path)
    texts = ["install a package"] * 3 + ["remove a package", "list files", "copy files", "show disk usage"]
    store.add_texts(texts, ids=[f"t{i}" for i in range(len(texts))])
    plain = [d.page_content for d in store.similarity_search("install a package", k=3)]
    assert plain == ["install a package"] * 3
    picked = store.max_marginal_relevance_search("install a package", k=3, fetch_k=7, lambda_mult=0.25)
    assert picked[0].page_content == "install a package"
    assert [d.page_content for d in picked[1:]].count("install a package") == 0
    apicked = await store.amax_marginal_relevance_search("install a package", k=3, fetch_k=7, lambda_mult=0.25)
    assert [d.id for d in apicked] == [d.id for d in picked]
    mmr_retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 7, "lambda_mult": 0.25})
    assert len({d.page_content for d in mmr_retriever.invoke("install a package")}) == 2


@pytest.mark.parametrize("kind", STORES)
def test_langchain_indexing_api_with_record_managers(kind, tmp_path):
    """index() with an InMemoryRecordManager and a SQLRecordManager: adds once, skips unchanged documents, and the
    incremental cleanup deletes what a changed source no longer holds."""
    from langchain_classic.indexes import SQLRecordManager
    from langchain_core.indexing import InMemoryRecordManager, index

    for manager in (InMemoryRecordManager("embedopt/test"),
                    SQLRecordManager("embedopt/test", db_url=f"sqlite:///{tmp_path / 'records.db'}")):
        manager.create_schema()
        store = _store(kind, tmp_path / type(manager).__name__)
        docs = [Document(page_content=f"page {i} of the manual", metadata={"source": f"man{i % 2}"}) for i in range(6)]
        first = index(docs, manager, store, cleanup="incremental", source_id_key="source", key_encoder="sha256")
        assert first["num_added"] == 6 and first["num_deleted"] == 0
        again = index(docs, manager, store, cleanup="incremental", source_id_key="source", key_encoder="sha256")
        assert again["num_added"] == 0 and again["num_skipped"] == 6
        changed = [d for d in docs if d.metadata["source"] == "man0"][:1]  # man0 now holds one page
        third = index(changed, manager, store, cleanup="incremental", source_id_key="source", key_encoder="sha256")
        assert third["num_deleted"] == 2 and len(store.store) == 4


async def test_async_indexing_api():
    from langchain_core.indexing import InMemoryRecordManager, aindex

    manager = InMemoryRecordManager("embedopt/async")
    await manager.acreate_schema()
    store = EmbedOptVectorStore(DeterministicFakeEmbedding(size=16))
    docs = [Document(page_content=f"entry {i}", metadata={"source": "s"}) for i in range(5)]
    result = await aindex(docs, manager, store, cleanup="full", key_encoder="sha256")
    assert result["num_added"] == 5 and len(store.store) == 5


def test_a_store_refuses_unknown_arguments_and_another_space():
    store = EmbedOptVectorStore(DeterministicFakeEmbedding(size=16))
    with pytest.raises(Exception, match="unexpected arguments"):
        store.similarity_search("x", k=1, filtr={"a": 1})
    other = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=8))
    with pytest.raises(Exception, match="two embedding spaces never meet"):
        EmbedOptVectorStore(DeterministicFakeEmbedding(size=16), store=QuantizedIndex(
            other.core.fingerprint("document"), dim=8))
