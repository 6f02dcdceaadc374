"""The seed-2 study with Qdrant's real engine: qdrant-edge (in-process, HNSW, the quantization a server runs)
beside embedopt's QuantizedIndex, on both shared datasets, with MiniLM and the static model.

    .venv/bin/python bench/qdrant_edge.py [--datasets manpages debian-packages] [--models minilm static]
        [--cache sqlite:/work/scratch/wt20/vectors.sqlite] [--latency-queries 300]

Vectors come through an embedopt SQLite cache (--cache), so a rerun embeds nothing. Per dataset and model, the
settings: float (no quantization), binary without rescoring, binary rescored from the original vectors at
oversampling 1, 2 and 4, 1.5-bit and 2-bit binary (without and with rescoring at oversampling 2), int8 scalar
(without and with rescoring at 2), and two exact scans in the engine (float, binary rescored x4) that separate
what HNSW loses from what quantization loses. qdrant-edge builds one shard per quantization (HNSW m=16,
ef_construct=100, search ef=128, indexing threshold 1 KB so every segment gets its graph and codes; optimize()
after the load) and answers every
query through query_batch for NDCG@10; ms per query is the median of --latency-queries single-query searches,
with one search thread everywhere (qdrant-edge's search pool, faiss, BLAS).
QuantizedIndex answers the same settings where it has them: exact float32, binary (Hamming) alone, binary
rescored with int8 codes and with float16 vectors, and the exact int8 scan; 1.5/2-bit codes it does not have.
Writes bench/results/qdrant-edge.json. About 4 minutes on 2 vCPUs once the vectors are cached (MiniLM embeds
the two corpora in about 10 minutes the first time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one search thread for every engine
    os.environ.setdefault(_var, "1")


import numpy as np  # noqa: E402
from _common import DATASETS, ROOT, machine, write_results  # noqa: E402  (it also unshadows qdrant_edge)

from embedopt import Embedder  # noqa: E402
from embedopt.eval import evaluate, load_beir, top_k  # noqa: E402
from embedopt.quantization import Calibration, float_int8_scores, quantize  # noqa: E402
from embedopt.stores import EdgeStore, HnswConfig, QuantizationConfig, QuantizedIndex  # noqa: E402

K = 10
MODELS = {"minilm": "minilm", "static": "static:distill"}
HNSW = HnswConfig(m=16, ef_construct=100, ef=128)
#: (row name, quantization config, rescore, oversampling, exact scan instead of HNSW) for qdrant-edge
EDGE_SETTINGS: list[tuple[str, QuantizationConfig, bool, float, bool]] = [
    ("float (exact scan)", QuantizationConfig("none"), False, 1.0, True),
    ("binary+rescore x4 (exact scan)", QuantizationConfig("binary"), True, 4.0, True),
    ("float", QuantizationConfig("none"), False, 1.0, False),
    ("binary", QuantizationConfig("binary"), False, 1.0, False),
    ("binary+rescore x1", QuantizationConfig("binary"), True, 1.0, False),
    ("binary+rescore x2", QuantizationConfig("binary"), True, 2.0, False),
    ("binary+rescore x4", QuantizationConfig("binary"), True, 4.0, False),
    ("binary 1.5-bit", QuantizationConfig("binary", bits=1.5), False, 1.0, False),
    ("binary 1.5-bit+rescore x2", QuantizationConfig("binary", bits=1.5), True, 2.0, False),
    ("binary 2-bit", QuantizationConfig("binary", bits=2), False, 1.0, False),
    ("binary 2-bit+rescore x2", QuantizationConfig("binary", bits=2), True, 2.0, False),
    ("int8", QuantizationConfig("scalar"), False, 1.0, False),
    ("int8+rescore x2", QuantizationConfig("scalar"), True, 2.0, False),
]


def ndcg(found: list[list[str]], qids: list[str], qrels: dict) -> float:
    return round(evaluate(dict(zip(qids, found, strict=True)), qrels)["ndcg@10"], 4)


def latency_ms(search: Any, queries: np.ndarray, n: int) -> float:
    search(queries[:1])
    runs = []
    for q in queries[:n]:
        started = time.perf_counter()
        search(q[None, :])
        runs.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(runs), 3)


def edge_rows(docs: np.ndarray, doc_ids: list[str], queries: np.ndarray, qids: list[str], qrels: dict,
              fp: Any, n_latency: int, workdir: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    shards: dict[str, EdgeStore] = {}
    for name, config, rescore, over, exact in EDGE_SETTINGS:
        store = shards.get(config.label)
        if store is None:
            started = time.perf_counter()
            store = EdgeStore(fp, workdir / config.label, quantization=config, hnsw=HNSW,
                              indexing_threshold_kb=1, optimize_after=None, search_threads=1)
            for at in range(0, len(docs), 5000):
                store.add(doc_ids[at: at + 5000], docs[at: at + 5000])
            store.optimize()
            shards[config.label] = store
            build_s = round(time.perf_counter() - started, 2)
            print(f"  edge {config.label}: built in {build_s} s, {store.info()}", flush=True)
        mode = "none" if not rescore else "float"

        def search(q: np.ndarray, store: EdgeStore = store, over: float = over, mode: str = mode,
                   exact: bool = exact) -> list[list[str]]:
            return store.search(q, K, oversample=over, rescore=mode, exact=exact).ids  # type: ignore[arg-type]

        found = []
        for at in range(0, len(queries), 256):
            found.extend(search(queries[at: at + 256]))
        out[name] = {"ndcg@10": ndcg(found, qids, qrels), "ms_per_query": latency_ms(search, queries, n_latency),
                     "quantization": config.label, "rescore": rescore, "oversample": over, "exact_scan": exact}
        print(f"  edge {name}: {out[name]}", flush=True)
    for store in shards.values():
        store.close()
    return out


def flat_rows(docs: np.ndarray, doc_ids: list[str], queries: np.ndarray, qids: list[str], qrels: dict,
              fp: Any, n_latency: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    cal = Calibration.fit(docs, fingerprint_id=fp.id)
    index = QuantizedIndex(fp, calibration=cal, keep_float=True, threads=1)
    index.add(doc_ids, docs)

    def exact(q: np.ndarray) -> list[list[str]]:
        return [[doc_ids[i] for i in row] for row in top_k(q @ docs.T, K)]

    codes = quantize(docs, "int8", calibration=cal)

    def int8_exact(q: np.ndarray) -> list[list[str]]:
        return [[doc_ids[i] for i in row] for row in top_k(float_int8_scores(q, codes, cal), K)]

    rows: list[tuple[str, Any]] = [("float", exact), ("int8", int8_exact)]
    for rescore, over, name in (("none", 1.0, "binary"), ("float", 1.0, "binary+rescore x1"),
                                ("float", 2.0, "binary+rescore x2"), ("float", 4.0, "binary+rescore x4"),
                                ("int8", 1.0, "binary+int8 rescore x1"), ("int8", 2.0, "binary+int8 rescore x2"),
                                ("int8", 4.0, "binary+int8 rescore x4")):
        rows.append((name, lambda q, r=rescore, o=over: index.search(q, K, oversample=o, rescore=r).ids))
    for name, fn in rows:
        found = fn(queries)
        out[name] = {"ndcg@10": ndcg(found, qids, qrels), "ms_per_query": latency_ms(fn, queries, n_latency)}
        print(f"  flat {name}: {out[name]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["manpages", "debian-packages"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cache", default="sqlite:/work/scratch/wt20/vectors.sqlite")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "qdrant-edge.json"))
    args = parser.parse_args()
    import qdrant_edge

    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="embedopt-edge-bench-"))
    try:
        for model in args.models:
            embedder = Embedder.from_spec(MODELS[model], cache=args.cache, show_progress=True)
            fp = embedder.fingerprint("document")
            for name in args.datasets:
                ds = load_beir(DATASETS / name)
                docs = embedder.embed_documents(ds.doc_texts())
                queries = embedder.embed(ds.query_texts(), "query")
                print(f"{model} / {name}: {docs.shape}, {len(queries)} queries", flush=True)
                key = f"{model}/{name}"
                edge = edge_rows(docs, ds.doc_ids, queries, ds.query_ids, ds.qrels, fp, args.latency_queries,
                                 workdir / key.replace("/", "_"))
                flat = flat_rows(docs, ds.doc_ids, queries, ds.query_ids, ds.qrels, fp, args.latency_queries)
                base = flat["float"]["ndcg@10"]
                for table in (edge, flat):
                    for row in table.values():
                        row["retention"] = round(row["ndcg@10"] / base, 4)
                results[key] = {"documents": len(docs), "queries": len(queries), "dim": int(docs.shape[1]),
                                "qdrant_edge": edge, "quantized_index": flat}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_results(args.output, {
        "k": K, "hnsw": HNSW.to_dict(), "qdrant_edge_version": getattr(qdrant_edge, "__version__", "0.9"),
        "note": "retention is NDCG@10 over the exact float32 scan's; qdrant-edge rescoring uses the original "
                "float32 vectors; QuantizedIndex's int8 row is the exact calibrated int8 scan",
        "machine": machine(load=os.getloadavg()), "results": results})


if __name__ == "__main__":
    main()
