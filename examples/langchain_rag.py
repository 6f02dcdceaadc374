"""embedopt under LangChain: index the manpages sample, retrieve, rerank, print hits and cache statistics.

    .venv/bin/python examples/langchain_rag.py

Offline: MiniLM ships in a package, Qdrant runs in qdrant-client's local mode, and the cross-encoder is one
embedopt trains from MiniLM's weights on ../shared/datasets/debian-packages (no trained cross-encoder ships in
any package; `make reranker` trains the full-size one, this example a small one, about 40 s once, cached).

* InMemoryVectorStore and langchain-qdrant's QdrantVectorStore, both fed by EmbedOptEmbeddings (one class swap
  from OpenAIEmbeddings / HuggingFaceEmbeddings). The Qdrant collection asks for binary quantization; local
  mode ignores quantization (it is an exact float search), a Qdrant server honours it.
* ContextualCompressionRetriever with EmbedOptReranker over the Qdrant retriever.
* EmbedOptRetriever: embedopt's own store (binary codes in RAM, int8 rescoring).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

from embedopt.eval import load_beir
from langchain_embedopt import EmbedOptEmbeddings, EmbedOptReranker, EmbedOptRetriever

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "manpages-sample"
TRAIN_SET = ROOT.parent / "shared" / "datasets" / "debian-packages"
QUERIES = ["find the process ID of a running program", "copy files and directories",
           "change the owner of a file"]


def show(title: str, docs: list[Document]) -> None:
    print(f"  {title}")
    for d in docs:
        score = d.metadata.get("relevance_score", d.metadata.get("score"))
        extra = f"  score={score:.3f}" if isinstance(score, float) else ""
        print(f"    {d.metadata.get('doc_id', d.id)[:24]:24}{extra}")


def main() -> None:
    ds = load_beir(SAMPLE)
    docs = [Document(id=i, page_content=t, metadata={"title": ds.corpus[i]["title"], "doc_id": i})
            for i, t in zip(ds.doc_ids, ds.doc_texts(), strict=True)]
    embeddings = EmbedOptEmbeddings(cache="memory,sqlite")  # MiniLM; vectors persist in $EMBEDOPT_HOME

    started = time.perf_counter()
    memory_store = InMemoryVectorStore.from_documents(docs, embeddings)
    qdrant = QdrantVectorStore.from_documents(  # Qdrant point ids are UUIDs: the page name stays in metadata
        docs, embeddings, ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, d.metadata["doc_id"])) for d in docs],
        location=":memory:", collection_name="manpages",
        collection_create_options={"quantization_config": models.BinaryQuantization(
            binary=models.BinaryQuantizationConfig(always_ram=True))})
    ours = EmbedOptRetriever.from_texts([d.page_content for d in docs], embeddings, ids=ds.doc_ids,
                                        metadatas=[d.metadata for d in docs], k=3)
    print(f"indexed {len(docs)} man pages three ways in {time.perf_counter() - started:.1f}s "
          "(MiniLM computed each document once; the other two indexes read it from the cache)")

    compressor = None
    if TRAIN_SET.is_dir():
        from embedopt.rerank import CrossEncoderReranker
        from embedopt.tools.train_reranker import TrainSettings, cached_cross_encoder

        folder = cached_cross_encoder(TRAIN_SET, settings=TrainSettings(max_queries=100), show_progress=False)
        compressor = EmbedOptReranker(reranker=CrossEncoderReranker(folder), top_n=3)
    else:
        print(f"({TRAIN_SET} is missing: no training data for the cross-encoder, so no reranking)")

    for query in QUERIES:
        print(f"\nquery: {query}")
        show("InMemoryVectorStore", memory_store.similarity_search(query, k=3))
        show("QdrantVectorStore (local mode)", qdrant.similarity_search(query, k=3))
        if compressor is not None:
            ccr = ContextualCompressionRetriever(base_compressor=compressor,
                                                 base_retriever=qdrant.as_retriever(search_kwargs={"k": 10}))
            show("Qdrant top 10 -> EmbedOptReranker (cross-encoder) top 3", ccr.invoke(query))
        show("EmbedOptRetriever (binary + int8 rescore)", ours.invoke(query))

    stats = embeddings.core.stats
    print(f"\ncache: {stats.requested} texts asked for, {stats.cache_hits} cache hits, {stats.computed} computed "
          f"by MiniLM, {stats.provider_calls} model calls")
    tiers = getattr(embeddings.core.cache, "tier_stats", None)
    if tiers is not None:
        for name, s in tiers().items():
            print(f"  {name}: hits={s['hits']} misses={s['misses']} errors={s['errors']}")


if __name__ == "__main__":
    main()
