"""Cache hits vs recomputing, and vs LangChain's CacheBackedEmbeddings, in one run.

    .venv/bin/python bench/cache.py [--dataset ../shared/datasets/manpages] [--texts 2000] [--repeats 5]

Per-vector microseconds of an all-hit `embed_documents` call over the same texts:
  - embedopt's Embedder (MiniLM) with a memory tier, a SQLite tier, a Redis tier, and the three tiered
    (memory → Redis → SQLite, served by memory); the output is an (n, 384) float32 array;
  - the same Embedder output turned into Python lists (`.tolist()`), which is what a LangChain caller gets;
  - LangChain's CacheBackedEmbeddings (langchain-classic) over InMemoryByteStore and over langchain-community's
    RedisStore, sha256 keys, MiniLM underneath; its output is lists of Python floats;
  - recomputing with MiniLM and no cache: the documents once (their vectors then fill every cache, ours and
    LangChain's, so no cache is filled by a second model run), and the short queries.
Redis: a redis-server of the bench's own on a free loopback port (Debian's package), so nothing else is timed.
Each figure is the median of --repeats runs; ratios are taken within this run. Writes bench/results/cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from _common import ROOT, machine, write_results

from embedopt import Embedder
from embedopt.cache import MemoryTier, RedisTier, SQLiteTier, TieredCache, cache_key
from embedopt.eval import load_beir
from embedopt.providers import SentenceTransformerProvider

warnings.filterwarnings("ignore", category=DeprecationWarning)  # langchain-community announces its sunset


def per_vector_us(fn, texts: list[str], repeats: int) -> tuple[float, list[float]]:
    fn(texts)  # fill / warm
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(texts)
        runs.append((time.perf_counter() - started) / len(texts) * 1e6)
    return statistics.median(runs), [round(r, 3) for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "manpages"))
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=500, help="queries to time recomputing on")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "cache.json"))
    args = parser.parse_args()

    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import InMemoryByteStore
    from langchain_community.storage import RedisStore
    from langchain_core.embeddings import Embeddings
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    ds = load_beir(args.dataset)
    docs = ds.doc_texts()[: args.texts]
    queries = ds.query_texts()[: args.queries]
    provider = SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2", device="cpu")

    plain = Embedder(provider, show_progress=False)
    plain.embed_documents(docs[:32])  # warm-up
    started = time.perf_counter()
    vectors = plain.embed_full(docs, "document")
    recompute_docs_us = (time.perf_counter() - started) / len(docs) * 1e6
    known = dict(zip(docs, vectors.tolist(), strict=True))

    class MiniLMVectors(Embeddings):
        """MiniLM's vectors of these documents under LangChain's interface: it only fills LangChain's stores."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [known[t] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return known[text]

    workdir = Path(tempfile.mkdtemp(prefix="embedopt-bench-"))
    server = RedisServer(workdir).start()
    results: dict[str, dict] = {}
    try:
        def ours(cache) -> Embedder:
            e = Embedder(provider, cache=cache, show_progress=False)
            fp = e.fingerprint("document")
            e.cache.set_many([(cache_key(fp, t), v) for t, v in zip(docs, vectors, strict=True)])
            return e

        redis_tier = RedisTier(server.url)
        embedders = {
            "embedopt_memory": ours(MemoryTier()),
            "embedopt_sqlite": ours(SQLiteTier(workdir / "v.sqlite3")),
            "embedopt_redis": ours(redis_tier),
            "embedopt_tiered_memory_redis_sqlite": ours(TieredCache(
                [MemoryTier(), RedisTier(server.url, prefix="t:"), SQLiteTier(workdir / "t.sqlite3")])),
        }
        for name, e in embedders.items():
            med, runs = per_vector_us(e.embed_documents, docs, args.repeats)
            results[name] = {"us_per_vector": round(med, 3), "runs": runs}
            assert e.stats.computed == 0, name  # every call was all hits
        med, runs = per_vector_us(lambda t: embedders["embedopt_memory"].embed_documents(t).tolist(), docs,
                                  args.repeats)
        results["embedopt_memory_as_lists"] = {"us_per_vector": round(med, 3), "runs": runs}

        lc_memory = CacheBackedEmbeddings.from_bytes_store(MiniLMVectors(), InMemoryByteStore(), namespace="minilm",
                                                           key_encoder="sha256")
        lc_redis = CacheBackedEmbeddings.from_bytes_store(
            MiniLMVectors(), RedisStore(redis_url=server.url, namespace="lc"), namespace="minilm",
            key_encoder="sha256")
        for name, lc in (("langchain_cachebacked_inmemory", lc_memory), ("langchain_cachebacked_redis", lc_redis)):
            med, runs = per_vector_us(lc.embed_documents, docs, args.repeats)
            results[name] = {"us_per_vector": round(med, 3), "runs": runs}

        results["recompute_minilm_documents"] = {"us_per_vector": round(recompute_docs_us, 1), "texts": len(docs)}
        med, runs = per_vector_us(lambda t: plain.embed(t, "query"), queries, 2)
        results["recompute_minilm_queries"] = {"us_per_vector": round(med, 1), "runs": runs, "texts": len(queries)}
    finally:
        server.kill()

    us = {k: v["us_per_vector"] for k, v in results.items()}
    tiers = ["embedopt_memory", "embedopt_sqlite", "embedopt_redis", "embedopt_tiered_memory_redis_sqlite"]
    ratios = {
        "memory_vs_langchain_inmemory_x": round(us["langchain_cachebacked_inmemory"] / us["embedopt_memory"], 1),
        "memory_as_lists_vs_langchain_inmemory_x": round(
            us["langchain_cachebacked_inmemory"] / us["embedopt_memory_as_lists"], 1),
        "redis_vs_langchain_redis_x": round(us["langchain_cachebacked_redis"] / us["embedopt_redis"], 1),
        **{f"{t}_vs_recompute_documents_x": round(us["recompute_minilm_documents"] / us[t]) for t in tiers},
        **{f"{t}_vs_recompute_queries_x": round(us["recompute_minilm_queries"] / us[t]) for t in tiers},
    }
    out = {
        "benchmark": "cache",
        "dataset": ds.name,
        "texts": len(docs),
        "mean_chars": round(sum(map(len, docs)) / len(docs), 1),
        "model": provider.info.model,
        "us_per_vector": us,
        "ratios": ratios,
        "goals": {"memory_vs_langchain_inmemory_x": ">= 3", "any_tier_vs_recompute_x": ">= 1000"},
        "details": results,
        "machine": machine(),
        "command": "python bench/cache.py",
    }
    write_results(args.output, out)
    print(json.dumps({"us_per_vector": us, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
