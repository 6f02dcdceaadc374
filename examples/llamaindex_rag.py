"""embedopt under LlamaIndex: index the manpages sample, retrieve, rerank, print.

    .venv/bin/python examples/llamaindex_rag.py

Offline: MiniLM ships in a package, Qdrant runs in qdrant-client's local mode (exact search: it ignores
quantization), and the cross-encoder is one embedopt trains from MiniLM's weights on
../shared/datasets/debian-packages (no trained cross-encoder ships in any package; small here, cached).

* VectorStoreIndex over the in-memory SimpleVectorStore and over llama-index-vector-stores-qdrant, both with
  EmbedOptEmbedding (Settings.embed_model).
* EmbedOptRerank as a node postprocessor of the Qdrant retriever's top 10.
* EmbedOptRetriever: embedopt's own store (binary codes in RAM, int8 rescoring).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from embedopt.eval import load_beir
from llamaindex_embedopt import EmbedOptEmbedding, EmbedOptRerank, EmbedOptRetriever

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "manpages-sample"
TRAIN_SET = ROOT.parent / "shared" / "datasets" / "debian-packages"
QUERIES = ["find the process ID of a running program", "copy files and directories",
           "change the owner of a file"]


def show(title: str, hits: list[NodeWithScore]) -> None:
    print(f"  {title}")
    for h in hits:
        print(f"    {h.node.metadata.get('page', h.node.node_id)[:24]:24}  score={h.score:.3f}")


def main() -> None:
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")  # said above
    ds = load_beir(SAMPLE)
    # Qdrant point ids are UUIDs: the page name stays in metadata, out of what is embedded
    nodes = [TextNode(id_=str(uuid.uuid5(uuid.NAMESPACE_URL, i)), text=t, metadata={"page": i},
                      excluded_embed_metadata_keys=["page"]) for i, t in zip(ds.doc_ids, ds.doc_texts(), strict=True)]
    Settings.embed_model = embed_model = EmbedOptEmbedding(cache="memory,sqlite")

    started = time.perf_counter()
    simple = VectorStoreIndex(nodes)
    qdrant = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(
        vector_store=QdrantVectorStore(client=QdrantClient(location=":memory:"), collection_name="manpages")))
    ours = EmbedOptRetriever.from_nodes(nodes, embed_model, similarity_top_k=3)
    print(f"indexed {len(nodes)} man pages three ways in {time.perf_counter() - started:.1f}s "
          "(MiniLM computed each document once; the other indexes read it from the cache)")

    rerank = None
    if TRAIN_SET.is_dir():
        from embedopt.rerank import CrossEncoderReranker
        from embedopt.tools.train_reranker import TrainSettings, cached_cross_encoder

        folder = cached_cross_encoder(TRAIN_SET, settings=TrainSettings(max_queries=100), show_progress=False)
        rerank = EmbedOptRerank(reranker=CrossEncoderReranker(folder), top_n=3)
    else:
        print(f"({TRAIN_SET} is missing: no training data for the cross-encoder, so no reranking)")

    for query in QUERIES:
        print(f"\nquery: {query}")
        show("VectorStoreIndex (SimpleVectorStore)", simple.as_retriever(similarity_top_k=3).retrieve(query))
        top10 = qdrant.as_retriever(similarity_top_k=10).retrieve(query)
        show("VectorStoreIndex (Qdrant, local mode)", top10[:3])
        if rerank is not None:
            show("Qdrant top 10 -> EmbedOptRerank (cross-encoder) top 3", rerank.postprocess_nodes(top10, query_str=query))
        show("EmbedOptRetriever (binary + int8 rescore)", ours.retrieve(query))

    stats = embed_model.core.stats
    print(f"\ncache: {stats.requested} texts asked for, {stats.cache_hits} cache hits, {stats.computed} computed "
          f"by MiniLM, {stats.provider_calls} model calls")


if __name__ == "__main__":
    main()
