"""The LlamaIndex vector store: a VectorStoreIndex built on it answers, filters (nested MetadataFilters), deletes by
document, persists through StorageContext and reloads, over the embedded index and over qdrant-edge."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from embedopt import ConfigError
from embedopt.stores import EdgeStore, QuantizedIndex
from llamaindex_embedopt import EmbedOptEmbedding, EmbedOptVectorStore
from llamaindex_embedopt.vector_store import to_where

needs_edge = pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None, reason="qdrant-edge-py missing")
STORES = ["embedded", pytest.param("edge", marks=needs_edge)]

PAGES = {
    "ls": ("ls lists the files and directories in a folder, with sizes and dates when asked.", "1", 2019),
    "cp": ("cp copies files and directories from a source to a destination.", "1", 2015),
    "mount": ("mount attaches a file system found on a device to the directory tree.", "8", 2021),
    "crontab": ("crontab edits the table of jobs that cron runs at fixed times.", "5", 2012),
    "passwd": ("passwd changes the password of a user account.", "1", 2020),
    "fstab": ("fstab describes the file systems mounted at boot and their options.", "5", 2018),
}


@pytest.fixture(scope="module")
def embed_model(static_model_dir) -> EmbedOptEmbedding:
    return EmbedOptEmbedding(model=f"static:{static_model_dir}")


def _documents() -> list[Document]:
    return [Document(text=text, id_=name, metadata={"name": name, "section": section, "year": year,
                                                    "tags": ["manual", f"s{section}"]})
            for name, (text, section, year) in PAGES.items()]


def _vector_store(kind: str, embed_model: EmbedOptEmbedding, tmp_path: Path) -> EmbedOptVectorStore:
    if kind == "embedded":
        return EmbedOptVectorStore(embed_model=embed_model)
    return EmbedOptVectorStore(lambda fp, dim: EdgeStore(fp, tmp_path / "edge", dim=dim), embed_model=embed_model)


def _names(nodes) -> list[str]:
    return [n.node.metadata["name"] for n in nodes]


@pytest.mark.parametrize("kind", STORES)
def test_an_index_on_the_store_answers_filters_persists_and_reloads(kind, embed_model, tmp_path):
    vector_store = _vector_store(kind, embed_model, tmp_path)
    storage = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(_documents(), storage_context=storage, embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=2)
    assert _names(retriever.retrieve("copy files to another directory"))[0] == "cp"
    assert _names(retriever.retrieve("which file systems are mounted at boot"))[0] in ("fstab", "mount")

    section_5 = MetadataFilters(filters=[MetadataFilter(key="section", value="5")])
    found = index.as_retriever(similarity_top_k=3, filters=section_5).retrieve("copy files")
    assert sorted(_names(found)) == ["crontab", "fstab"]  # every section-5 page, however far from the query
    nested = MetadataFilters(condition=FilterCondition.OR, filters=[
        MetadataFilter(key="year", value=2021, operator=FilterOperator.GTE),
        MetadataFilters(condition=FilterCondition.AND, filters=[
            MetadataFilter(key="section", value="1"),
            MetadataFilter(key="year", value=2016, operator=FilterOperator.LT)])])
    assert sorted(_names(index.as_retriever(similarity_top_k=5, filters=nested).retrieve("files"))) == ["cp", "mount"]
    node = found[0].node
    assert node.get_content() == PAGES[node.metadata["name"]][0] and node.ref_doc_id == node.metadata["name"]

    index.storage_context.persist(tmp_path / "storage")
    del index
    if kind == "edge":
        vector_store.client.close()  # type: ignore[attr-defined]
    reloaded_store = EmbedOptVectorStore.from_persist_dir(str(tmp_path / "storage"))
    storage = StorageContext.from_defaults(vector_store=reloaded_store, persist_dir=str(tmp_path / "storage"))
    again = load_index_from_storage(storage, embed_model=embed_model)
    assert _names(again.as_retriever(similarity_top_k=1).retrieve("change a user's password")) == ["passwd"]
    again.delete_ref_doc("passwd")
    assert "passwd" not in _names(again.as_retriever(similarity_top_k=6).retrieve("change a user's password"))
    assert len(reloaded_store.client) == 5


@pytest.mark.parametrize("kind", STORES)
async def test_store_operations_and_async(kind, embed_model, tmp_path):
    vector_store = _vector_store(kind, embed_model, tmp_path)
    index = VectorStoreIndex.from_documents(_documents(), storage_context=StorageContext.from_defaults(
        vector_store=vector_store), embed_model=embed_model)
    query = embed_model.get_query_embedding("files and folders")
    result = await vector_store.aquery(VectorStoreQuery(query_embedding=query, similarity_top_k=2, filters=
                                                        MetadataFilters(filters=[MetadataFilter(
                                                            key="tags", value=["s8"], operator=FilterOperator.ANY)])))
    assert [n.metadata["name"] for n in result.nodes] == ["mount"] and len(result.similarities) == 1
    only = vector_store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=5, node_ids=[
        n.node_id for n in vector_store.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(
            key="name", value=["ls", "passwd"], operator=FilterOperator.IN)]))]))
    assert sorted(n.metadata["name"] for n in only.nodes) == ["ls", "passwd"]
    mmr = vector_store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=3,
                                              mode=VectorStoreQueryMode.MMR, mmr_threshold=0.3))
    assert len({n.metadata["name"] for n in mmr.nodes}) == 3
    none_of = MetadataFilters(condition=FilterCondition.NOT, filters=[MetadataFilter(key="section", value="1")])
    assert sorted(n.metadata["name"] for n in await vector_store.aget_nodes(filters=none_of)) == [
        "crontab", "fstab", "mount"]
    await vector_store.adelete_nodes(filters=none_of)
    assert len(vector_store.get_nodes()) == 3
    await vector_store.adelete("ls")
    assert sorted(n.metadata["name"] for n in vector_store.get_nodes()) == ["cp", "passwd"]
    await vector_store.aclear()
    assert vector_store.get_nodes() == []
    del index


def test_filters_translate_and_unsupported_ones_are_refused():
    f = MetadataFilters(filters=[MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ALL),
                                 MetadataFilter(key="x", value=None, operator=FilterOperator.IS_EMPTY)])
    assert to_where(f) == {"$and": [{"$and": [{"tags": {"$eq": "a"}}, {"tags": {"$eq": "b"}}]},
                                    {"x": {"$exists": False}}]}
    with pytest.raises(ConfigError, match="text_match"):
        to_where(MetadataFilters(filters=[MetadataFilter(key="t", value="a", operator=FilterOperator.TEXT_MATCH)]))


def test_a_plain_llamaindex_embedding_names_the_space_and_another_space_is_refused(embed_model):
    mock = MockEmbedding(embed_dim=8)
    store = EmbedOptVectorStore(embed_model=mock)
    assert store.client.dim == 8 and "MockEmbedding" in store.client.fingerprint.id
    with pytest.raises(ConfigError, match="never meet"):
        EmbedOptVectorStore(QuantizedIndex(store.client.fingerprint, dim=8), embed_model=embed_model)
