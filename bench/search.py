"""Search throughput, RAM per vector and retention: embedopt's binary + int8 rescore against float32 exact numpy
and sentence-transformers' semantic_search_faiss / semantic_search_usearch (binary + rescore), in one run.

    .venv/bin/python bench/search.py [--n 1000000] [--oversample 4] [--skip-real]

Two corpora:
  * random: --n random unit vectors of 384 dims, 1,000 random unit queries; retention is Recall@10 against the
    exact float32 top 10 (random vectors have no structure, so every binary method retains little here: the
    figure compares methods, not a use case);
  * real: the MiniLM embeddings of debian-packages (20,000 documents, 2,000 queries with judgements) through the
    SQLite cache; retention is NDCG@10 over float32's. 20,000 is the largest real corpus here, so the 1M
    figures come from the random set.
Per method: queries/s for single queries and for batches of 100, RAM per vector (what stays in memory for
search; embedopt's int8 vectors are memory-mapped from disk and listed apart), retention. Every method uses the
same k (10) and the same oversampling (k x --oversample candidates rescored). Writes bench/results/search.json.

Growth with N (--growth, alone with --skip-random --skip-real): the flat binary scan (QuantizedIndex, int8
rescore) against qdrant-edge's HNSW + binary + rescoring, at each of --growth-sizes (default 100,000 and
1,000,000) REAL vectors: the static model over text units of both shared datasets. The corpora hold about
100,000 sentences, so the units are every sentence (4+ words) plus overlapping windows of 6, 9 and 12 words at a
stride of 2 words within each sentence (1.28M distinct texts), shuffled with seed 0; the first N are indexed.
Queries: the first 500 queries of each dataset. Per size and method: build time, RAM (the flat index's codes and
ids; qdrant-edge's resident-memory growth while it loads and optimizes, and its folder on disk), single-query q/s
(median of 3 passes over 300 queries, one search thread) and Recall@10 against the exact float32 top 10, for a
few (oversample, hnsw_ef) points; the flat scan rescored with int8 (its default) and with float16 vectors.
qdrant-edge builds one index per --growth-quantizations (default 1-bit and 2-bit binary: the static model's sign
bits alone do not reach Recall@10 0.95 at any oversampling tried at 100k). Writes bench/results/search-growth.json.
Runtime on 2 vCPUs (measured under a load of 20-30, so an upper bound): 100k about 25 minutes (10 per qdrant-edge
build); 1M about 10 minutes to embed once (then cached in --cache) and, extrapolating, 1.5-3 hours, most of it
the two HNSW builds; a quiet machine should take a third of that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from _common import ROOT, machine, write_results

from embedopt import Fingerprint
from embedopt.eval import evaluate, load_beir, top_k
from embedopt.quantization import Calibration, quantize
from embedopt.stores import QuantizedIndex

K = 10
Search = Callable[[np.ndarray], list[list[int]]]


def timed(fn: Search, queries: np.ndarray, batch: int, repeats: int) -> tuple[float, list[list[int]]]:
    """Queries per second of ``fn`` over ``queries`` in batches of ``batch`` (median of repeats)."""
    fn(queries[:batch])  # warm
    rates, found = [], []
    for r in range(repeats):
        found = []
        started = time.perf_counter()
        for at in range(0, len(queries), batch):
            found.extend(fn(queries[at: at + batch]))
        rates.append(len(queries) / (time.perf_counter() - started))
        del r
    return statistics.median(rates), found


def recall_vs(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K].tolist())) / K for f, t in zip(found, truth, strict=True)]))


def methods(docs: np.ndarray, fp: Fingerprint, oversample: int, workdir: Path) -> dict[str, tuple[Search, float]]:
    """Each method's search function and its RAM bytes per vector."""
    from sentence_transformers.util.quantization import semantic_search_faiss, semantic_search_usearch

    n, dim = docs.shape
    out: dict[str, tuple[Search, float]] = {}

    def float32_numpy(q: np.ndarray) -> list[list[int]]:
        return top_k(q @ docs.T, K).tolist()

    out["float32 exact (numpy)"] = (float32_numpy, docs.nbytes / n)

    cal = Calibration.fit(docs[:100_000], fingerprint_id=fp.id)
    index = QuantizedIndex(fp, calibration=cal)
    ids = [f"doc{i:07d}" for i in range(n)]
    for at in range(0, n, 100_000):
        index.add(ids[at: at + 100_000], docs[at: at + 100_000])
    index.save(workdir / "embedopt-index")  # int8 vectors now memory-mapped from disk
    row_of = {i: r for r, i in enumerate(ids)}
    mem = index.memory_bytes()

    def ours(q: np.ndarray) -> list[list[int]]:
        return [[row_of[i] for i in hit] for hit in index.search(q, K, oversample=oversample, rescore="int8").ids]

    out["embedopt binary + int8 rescore"] = (ours, (mem["codes"] + mem["ids"]) / n)

    ubinary = quantize(docs, "ubinary")
    def st_method(semantic_search: Callable[..., Any], ram: Callable[[Any], float]) -> tuple[Search, float]:
        """A sentence-transformers search over binary codes (index built once, outside the timing) and its RAM."""
        options = {"corpus_precision": "ubinary", "top_k": K, "rescore": True, "rescore_multiplier": oversample,
                   "exact": True}
        _, _, index = semantic_search(docs[:1], corpus_embeddings=ubinary, output_index=True, **options)

        def search(q: np.ndarray) -> list[list[int]]:
            hits, _ = semantic_search(q, corpus_index=index, **options)
            return [[h["corpus_id"] for h in row] for row in hits]

        return search, ram(index) / n

    out["sentence-transformers semantic_search_faiss (ubinary + rescore)"] = st_method(
        semantic_search_faiss, lambda index: index.ntotal * dim / 8)
    out["sentence-transformers semantic_search_usearch (ubinary + rescore)"] = st_method(
        semantic_search_usearch, lambda index: index.memory_usage)
    return out


def measure(docs: np.ndarray, queries: np.ndarray, fp: Fingerprint, oversample: int, repeats: int,
            retention: Callable[[list[list[int]]], float]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="embedopt-search-") as tmp:
        for name, (fn, ram) in methods(docs, fp, oversample, Path(tmp)).items():
            single_q = queries[:100] if "float32" in name else queries[:300]
            qps_single, _ = timed(fn, single_q, 1, repeats)
            qps_batch, found = timed(fn, queries, 100, max(1, repeats // 2))
            results[name] = {"qps_single": round(qps_single, 1), "qps_batch100": round(qps_batch, 1),
                             "ram_bytes_per_vector": round(ram, 1), "retention": round(retention(found), 4)}
            print(name, results[name], flush=True)
    base = results["float32 exact (numpy)"]
    for r in results.values():
        r["throughput_vs_float32_single_x"] = round(r["qps_single"] / base["qps_single"], 1)
        r["throughput_vs_float32_batch100_x"] = round(r["qps_batch100"] / base["qps_batch100"], 1)
        r["ram_vs_float32_x"] = round(base["ram_bytes_per_vector"] / r["ram_bytes_per_vector"], 1)
    return results


def text_units(limit: int) -> list[str]:
    """Sentences of both shared corpora and overlapping word windows within them (see the module docstring)."""
    import re

    units: dict[str, None] = {}
    for name in ("manpages", "debian-packages"):
        ds = load_beir(ROOT.parent / "shared" / "datasets" / name)
        for text in ds.doc_texts():
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
                words = sentence.split()
                if len(words) < 4:
                    continue
                units[" ".join(words)] = None
                for size in (6, 9, 12):
                    for at in range(0, max(1, len(words) - size + 1), 2):
                        units[" ".join(words[at: at + size])] = None
    out = list(units)
    order = np.random.default_rng(0).permutation(len(out))
    return [out[i] for i in order[:limit]]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _growth_flat(docs: np.ndarray, ids: list[str], fp: Fingerprint, queries: np.ndarray, truth: np.ndarray,
                 tmp: Path, repeats: int) -> dict:
    n, row_of, res = len(docs), {i: r for r, i in enumerate(ids)}, {}
    t0 = time.perf_counter()
    index = QuantizedIndex(fp, calibration=Calibration.fit(docs[:100_000], fingerprint_id=fp.id), threads=1,
                           keep_float=True)
    for at in range(0, n, 100_000):
        index.add(ids[at: at + 100_000], docs[at: at + 100_000])
    index.save(tmp / "flat")
    build = time.perf_counter() - t0
    mem = index.memory_bytes()
    for rescore, over in (("int8", 4), ("int8", 8), ("int8", 16), ("float", 16), ("float", 32)):
        def flat(q: np.ndarray, over: int = over, rescore: Any = rescore) -> list[list[int]]:
            return [[row_of[i] for i in hit] for hit in index.search(q, K, oversample=over, rescore=rescore).ids]

        name = f"flat binary + {rescore} rescore x{over}"
        res[name] = _point(flat, queries, truth, repeats, build_s=round(build, 1),
                           ram_mb=round((mem["codes"] + mem["ids"]) / 2**20, 1),
                           disk_mb=round(folder_mb(tmp / "flat"), 1))
        print(n, name, res[name], flush=True)
    return res


def _point(search: Search, queries: np.ndarray, truth: np.ndarray, repeats: int, **facts: float) -> dict:
    """Single-query q/s (300 queries) and Recall@10 (every query, batches of 100) of one setting."""
    qps, _ = timed(search, queries[:300], 1, repeats)
    _, found = timed(search, queries, 100, 1)
    return {"qps_single": round(qps, 1), "recall@10": round(recall_vs(found, truth), 4), **facts}


def _growth_edge(docs: np.ndarray, ids: list[str], fp: Fingerprint, queries: np.ndarray, truth: np.ndarray,
                 tmp: Path, repeats: int, quantization: str) -> dict:
    from embedopt.stores import EdgeStore, HnswConfig, QuantizationConfig

    n, row_of, res = len(docs), {i: r for r, i in enumerate(ids)}, {}
    before = rss_mb()
    t0 = time.perf_counter()
    edge = EdgeStore(fp, tmp / f"edge-{quantization}", quantization=QuantizationConfig.of(quantization),
                     hnsw=HnswConfig(m=16, ef_construct=100), optimize_after=None, search_threads=1)
    for at in range(0, n, 10_000):
        edge.add(ids[at: at + 10_000], docs[at: at + 10_000])
    loaded = time.perf_counter() - t0
    edge.optimize()
    build = time.perf_counter() - t0
    ram = rss_mb() - before
    print(n, f"edge {quantization} loaded in {loaded:.0f} s, built in {build:.0f} s, {edge.info()}", flush=True)
    for over, ef in ((4, 64), (4, 128), (8, 128), (16, 256), (32, 512)):
        def hnsw(q: np.ndarray, over: int = over, ef: int = ef) -> list[list[int]]:
            return [[row_of[i] for i in hit] for hit in edge.search(q, K, oversample=over, ef=ef).ids]

        name = f"qdrant-edge hnsw + {quantization} + rescore x{over} ef{ef}"
        res[name] = _point(hnsw, queries, truth, repeats, build_s=round(build, 1), load_s=round(loaded, 1),
                           ram_mb=round(ram, 1), disk_mb=round(folder_mb(tmp / f"edge-{quantization}"), 1))
        print(n, name, res[name], flush=True)
    edge.close()
    shutil.rmtree(tmp / f"edge-{quantization}", ignore_errors=True)
    return res


def growth(args: argparse.Namespace) -> dict:
    from embedopt import Embedder

    sizes = sorted(args.growth_sizes)
    texts = text_units(max(sizes))
    if len(texts) < max(sizes):
        raise SystemExit(f"only {len(texts)} text units; lower --growth-sizes")
    embedder = Embedder.from_spec("static:distill", cache=args.cache, show_progress=True)
    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed_documents(texts[at: at + 100_000])
                              for at in range(0, len(texts), 100_000)])
    queries = np.concatenate([embedder.embed(load_beir(ROOT.parent / "shared" / "datasets" / n).query_texts()[:500],
                                             "query") for n in ("manpages", "debian-packages")])
    print(f"embedded {vectors.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    fp = embedder.fingerprint("document")
    out: dict = {"model": "static (MiniLM distilled, 256-d)", "queries": len(queries), "k": K,
                 "units": "sentences + 6/9/12-word windows (stride 2) of manpages and debian-packages, shuffled",
                 "sizes": {}}
    for n in sizes:
        docs = vectors[:n]
        truth = np.concatenate([top_k(queries[at: at + 100] @ docs.T, K) for at in range(0, len(queries), 100)])
        ids = [f"u{i}" for i in range(n)]
        res: dict = {}
        with tempfile.TemporaryDirectory(prefix="embedopt-growth-", dir=args.workdir) as tmp:
            res.update(_growth_flat(docs, ids, fp, queries, truth, Path(tmp), args.repeats))
            for quantization in args.growth_quantizations:
                res.update(_growth_edge(docs, ids, fp, queries, truth, Path(tmp), args.repeats, quantization))
        flat_qps = res["flat binary + int8 rescore x4"]["qps_single"]  # embedopt's default setting
        for r in res.values():
            r["qps_single_vs_flat_x4"] = round(r["qps_single"] / flat_qps, 2)
        out["sizes"][str(n)] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--oversample", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "datasets" / "debian-packages"))
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-random", action="store_true")
    parser.add_argument("--growth", action="store_true", help="the growth study (see the module docstring)")
    parser.add_argument("--growth-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--growth-quantizations", nargs="+", default=["binary", "binary-2bit"],
                        help="qdrant-edge quantizations to build an HNSW index with (QuantizationConfig.of names)")
    parser.add_argument("--cache", default="sqlite:/work/scratch/wt20/vectors.sqlite",
                        help="the vector cache of the growth study")
    parser.add_argument("--workdir", default=None, help="where the growth study builds its indexes (a temp folder)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "search.json"))
    args = parser.parse_args()

    if args.growth:
        result = growth(args)
        out_path = Path(args.output).with_name("search-growth.json") if args.output.endswith("search.json") \
            else Path(args.output)
        write_results(out_path, {**result, "machine": machine(load=os.getloadavg())})
        if args.skip_random and args.skip_real:
            return
    out: dict = {"k": K, "oversample": args.oversample, "machine": machine()}
    if not args.skip_random:
        rng = np.random.default_rng(0)
        docs = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        queries = rng.standard_normal((1000, args.dim), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        truth = np.concatenate([top_k(queries[at: at + 100] @ docs.T, K) for at in range(0, len(queries), 100)])
        fp = Fingerprint("random", "unit-vectors", "seed0", "document", "", args.dim, True)
        print(f"random: {args.n} x {args.dim}", flush=True)
        out["random"] = {"n": args.n, "dim": args.dim, "retention": "Recall@10 vs exact float32 top 10",
                         "results": measure(docs, queries, fp, args.oversample, args.repeats,
                                            lambda found: recall_vs(found, truth))}
        del docs

    if not args.skip_real:
        from embedopt import Embedder
        from embedopt.providers import SentenceTransformerProvider

        ds = load_beir(args.real)
        embedder = Embedder(SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2", device="cpu"),
                            cache="sqlite", show_progress=True)
        real = embedder.embed_documents(ds.doc_texts())
        rq = embedder.embed(ds.query_texts(), "query")
        doc_ids, qids = ds.doc_ids, ds.query_ids

        def ndcg(found: list[list[int]]) -> float:
            run = {q: [doc_ids[i] for i in f] for q, f in zip(qids, found, strict=True)}
            return evaluate(run, ds.qrels)["ndcg@10"]

        float_ndcg = ndcg(top_k(rq @ real.T, K).tolist())
        print(f"real: {ds.name} {real.shape}, float32 NDCG@10 {float_ndcg:.4f}", flush=True)
        res = measure(real, rq, embedder.fingerprint("document"), args.oversample, args.repeats,
                      lambda found: ndcg(found) / float_ndcg)
        out["real"] = {"dataset": ds.name, "n": len(real), "dim": real.shape[1], "float32_ndcg@10": round(float_ndcg, 4),
                       "retention": "NDCG@10 over float32's", "results": res}
    write_results(args.output, out)
    print(json.dumps({k: v for k, v in out.items() if k in ("random", "real")}, indent=1))


if __name__ == "__main__":
    main()
