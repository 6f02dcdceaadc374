"""Encode throughput on the manpages corpus: raw sentence-transformers, embedopt's Embedder, and a static model.

    .venv/bin/python bench/embed.py [--dataset ../shared/datasets/manpages] [--repeats 2]

Writes bench/results/embed.json. Peers are measured in the same run, interleaved, on the same texts, and every
figure is reported with its ratio: Embedder vs raw `SentenceTransformer.encode` (the overhead embedopt adds, no
cache), and the static model vs the transformer. Two text sets: the documents (DESCRIPTION sections, up to 300
words, truncated by MiniLM at 256 tokens) and the queries (one-line sentences).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from embedopt.distill import cached_distill

from embedopt import Embedder
from embedopt.eval import load_beir
from embedopt.providers import SentenceTransformerProvider, StaticProvider

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, texts: list[str]) -> float:
    started = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - started)


def measure(texts: list[str], st_model, embedder: Embedder, static: Embedder, repeats: int) -> dict:
    raw, ours, stat = [], [], []
    st_model.encode(texts[:64], batch_size=32)  # warm-up
    static.embed_documents(texts[:64])
    for r in range(repeats):
        # alternate the order so that neither side always runs on a warmer machine
        pair = [("raw", lambda t: st_model.encode(t, batch_size=32)), ("ours", embedder.embed_documents)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            (raw if name == "raw" else ours).append(timed(fn, texts))
        for _ in range(5):
            stat.append(timed(static.embed_documents, texts))
    raw_s, ours_s, stat_s = statistics.median(raw), statistics.median(ours), statistics.median(stat)
    return {
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "sentence_transformers_encode_per_s": round(raw_s, 2),
        "embedder_no_cache_per_s": round(ours_s, 2),
        "embedder_overhead_pct": round(100 * (raw_s / ours_s - 1), 2),
        "static_per_s": round(stat_s, 1),
        "static_vs_transformer_x": round(stat_s / raw_s, 1),
        "runs": {"sentence_transformers": raw, "embedder": ours, "static": stat},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "manpages"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N documents and queries")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = parser.parse_args()

    import torch

    ds = load_beir(args.dataset)
    docs, queries = ds.doc_texts()[: args.limit], ds.query_texts()[: args.limit]
    provider = SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    embedder = Embedder(provider, show_progress=False)
    static = Embedder(StaticProvider(cached_distill("sentence-transformers/all-MiniLM-L6-v2")), show_progress=False)
    results = {
        "benchmark": "embed",
        "dataset": ds.name,
        "model": provider.info.model,
        "static_model": static.provider.info.model,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "processor": platform.processor() or platform.machine()},
        "repeats": args.repeats,
        "documents": measure(docs, provider.model, embedder, static, args.repeats),
        "queries": measure(queries, provider.model, embedder, static, args.repeats),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for part in ("documents", "queries"):
        r = results[part]
        print(f"{part:10} ST encode {r['sentence_transformers_encode_per_s']:>9,.1f}/s   "
              f"Embedder {r['embedder_no_cache_per_s']:>9,.1f}/s (overhead {r['embedder_overhead_pct']:+.1f}%)   "
              f"static {r['static_per_s']:>11,.0f}/s ({r['static_vs_transformer_x']:,.0f}x)")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
