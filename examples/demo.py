"""What embedopt buys you, on one screen.

Embeds a 400-page sample of the Linux manual (examples/data/manpages-sample) with all-MiniLM-L6-v2 and with a
static model distilled from it, stores the documents as float32, int8 and binary, and prints bytes per vector,
retrieval quality (NDCG@10 over 373 real queries) and encode speed. Runs offline: MiniLM ships in a package,
and the static model is distilled from it on first use (about 15 s) and cached.

    make demo          # or: .venv/bin/python examples/demo.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # a process that never forks

from embedopt import Calibration, Embedder
from embedopt.eval import evaluate, load_beir, top_k
from embedopt.providers import SentenceTransformerProvider, StaticProvider
from embedopt.providers.static import cached_distill
from embedopt.quantization import bytes_per_vector, float_int8_scores, hamming_distances, quantize

DATA = Path(__file__).parent / "data" / "manpages-sample"
RESCORE_TOP = 40


def ndcg(scores: np.ndarray, doc_ids: list[str], query_ids: list[str], qrels, *, largest: bool = True) -> float:
    ranked = top_k(scores, 10, largest=largest)
    run = {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, ranked, strict=True)}
    return evaluate(run, qrels)["ndcg@10"]


def study(name: str, embedder: Embedder, docs: list[str], queries: list[str], ds, *,
          timing_runs: int) -> tuple[list[tuple], float]:
    embedder.embed_documents(docs[:16])  # warm-up, so the timing below is the steady state
    best = 0.0
    for _ in range(timing_runs):  # no cache here: every run embeds every document again
        started = time.perf_counter()
        d = embedder.embed_documents(docs)
        best = max(best, len(docs) / (time.perf_counter() - started))
    q = embedder.embed(queries, "query")
    dim = d.shape[1]
    cal = Calibration.fit(d, fingerprint_id=embedder.fingerprint("document").id)
    d_int8 = quantize(d, "int8", calibration=cal)
    d_bin, q_bin = quantize(d, "ubinary"), quantize(q, "ubinary")
    ham = hamming_distances(q_bin, d_bin)

    # binary first stage, then rescore the top 40 candidates with the float query against the int8 documents
    cand = top_k(ham, RESCORE_TOP, largest=False)
    rescored = np.full(ham.shape, -np.inf, dtype=np.float32)
    for i, row in enumerate(cand):
        rescored[i, row] = float_int8_scores(q[i], d_int8[row], cal)

    ids, qids = ds.doc_ids, ds.query_ids
    base = ndcg(q @ d.T, ids, qids, ds.qrels)
    rows = [
        (name, "float32", bytes_per_vector(dim, "float32"), base),
        (name, "int8", bytes_per_vector(dim, "int8"), ndcg(float_int8_scores(q, d_int8, cal), ids, qids, ds.qrels)),
        (name, "binary", bytes_per_vector(dim, "binary"), ndcg(ham, ids, qids, ds.qrels, largest=False)),
        (name, f"binary+int8 rescore@{RESCORE_TOP}", bytes_per_vector(dim, "binary"),
         ndcg(rescored, ids, qids, ds.qrels)),
    ]
    return [(*r, r[3] / base) for r in rows], best


def main() -> None:
    ds = load_beir(DATA)
    docs, queries = ds.doc_texts(), ds.query_texts()
    print(f"Corpus: {len(docs)} manual pages, {len(queries)} queries ({DATA.relative_to(Path.cwd()) if DATA.is_relative_to(Path.cwd()) else DATA})")
    minilm = Embedder(SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2"), show_progress=False)
    print("Distilling (first run only, cached) a static model from MiniLM ...", flush=True)
    static = Embedder(StaticProvider(cached_distill("sentence-transformers/all-MiniLM-L6-v2")), show_progress=False)
    rows_t, speed_t = study("MiniLM-L6 (384-d)", minilm, docs, queries, ds, timing_runs=1)
    rows_s, speed_s = study("static (256-d)", static, docs, queries, ds, timing_runs=3)

    print()
    print(f"{'model':20} {'stored as':26} {'bytes/vector':>12} {'NDCG@10':>8} {'kept':>6}")
    print("-" * 76)
    for rows in (rows_t, rows_s):
        for model, precision, nbytes, score, kept in rows:
            print(f"{model:20} {precision:26} {nbytes:>12} {score:>8.3f} {kept:>6.1%}")
        print()
    print(f"Encode speed on this CPU: MiniLM {speed_t:,.0f} docs/s, static {speed_s:,.0f} docs/s "
          f"({speed_s / speed_t:,.0f}x; `make bench` measures it properly)")
    best = rows_t[3]
    print(f"Binary codes + int8 rescoring keep {best[4]:.1%} of MiniLM's NDCG@10 in RAM at "
          f"{rows_t[0][2] // best[2]}x less memory than float32.")


if __name__ == "__main__":
    main()
