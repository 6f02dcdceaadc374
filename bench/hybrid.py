"""Hybrid lexical + dense retrieval, measured: BM25 alone, dense alone and each fusion, per model and dataset.

    .venv/bin/python bench/hybrid.py --tuned DIR [--datasets ../shared/datasets] [--cache SPEC]
        [--timing-queries 200] [--speed-docs 256] [--output bench/results/hybrid.json]

DIR is the static model tuned on manpages (``make finetune``, or ``embedopt distill --train
../shared/datasets/manpages -o DIR``). Three models: all-MiniLM-L6-v2 (sentence-transformers), the static model
distilled from it (``static:distill``), and DIR. Three evaluation sets:

* ``manpages-heldout``: the documents DIR never trained on (its own split by document, read from DIR's
  ``embedopt-finetune.json``) and the queries whose relevant pages are all among them — the only manpages set on
  which the tuned model may be scored.
* ``manpages``: the whole set, without the tuned model (it trained on 80% of these pages).
* ``debian-packages``: 20,000 package descriptions; out of domain for the tuned model (trained on manual pages).

Per set the queries are split in two by a stable hash (``embedopt.fusion.split_queries``): the convex weight
``alpha`` (min-max and z-score normalization) is fit on the *fit* half (grid 0..1 by 0.05, best mean NDCG@10),
and which fusion to call "the" fusion (RRF k=60, DBSF, convex min-max, convex z-score) is also chosen on the fit
half; every figure reported is on the other, *test*, half. Dense retrieval is exact (float32 inner product over
all documents); each side returns its top 100, and fused lists are cut at 100. NDCG@10 and Recall@100 use
``embedopt.eval`` (trec_eval's definitions); the difference between the chosen fusion and the better single
retriever carries a 95% bootstrap interval over test queries.

Milliseconds per query (median over --timing-queries test queries, one at a time): BM25 (tokenize + score +
top 100), dense (encode the query without cache + exact search), fusion = both + the fusion itself, run one after
the other. Encode speed: documents per second over the same --speed-docs documents for every model, no cache
(the best of five runs for static models, one run after a warm-up for MiniLM). BM25 indexing speed likewise.

Vectors go through an embedopt cache (default ``memory,sqlite``): a rerun only re-encodes what changed. The first
run encodes debian-packages and manpages with MiniLM (22,571 documents: about 15 minutes on 2 idle CPU cores at
~25 documents/s; it took 100 minutes on a machine shared by six sessions); a warm rerun takes about 5 minutes
(24 under that load). Writes bench/results/hybrid.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from embedopt import Embedder
from embedopt.eval import BeirDataset, evaluate, load_beir, top_k
from embedopt.fusion import DBSF, RRF, Ranking, fit_alpha, split_queries
from embedopt.lexical import LexicalIndex

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 100
GRID = [round(a, 2) for a in np.linspace(0, 1, 21)]
FUSIONS = ("rrf", "dbsf", "convex_minmax", "convex_zscore")


# ------------------------------------------------------------------------------------------- data
def heldout_manpages(path: Path, tuned: Path) -> BeirDataset:
    """The manpages documents the tuned model never saw in training, with the queries judged on them only."""
    from embedopt.tools.finetune import held_out, load_documents, split_documents

    settings = json.loads((tuned / "embedopt-finetune.json").read_text())["settings"]
    _, test_docs = split_documents(load_documents(path), test_fraction=settings["test_fraction"],
                                   seed=settings["seed"])
    ds = held_out(path, test_docs, seed=settings["seed"])
    report = tuned / "finetune-report.json"
    if report.is_file():  # the split must be the one the model's own report scored
        r = json.loads(report.read_text())
        if (r["test_documents"], r["test_queries"]) != (len(ds.corpus), len(ds.queries)):
            raise SystemExit(f"held-out split differs from {report}: {len(ds.corpus)} documents and "
                             f"{len(ds.queries)} queries here, {r['test_documents']} and {r['test_queries']} there")
    return ds


def subset(qrels: dict[str, dict[str, int]], qids: Sequence[str]) -> dict[str, dict[str, int]]:
    return {q: qrels[q] for q in qids}


def metrics(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    m = evaluate(run, qrels, ndcg_k=10, recall_k=DEPTH)
    return {"ndcg@10": round(m["ndcg@10"], 4), "recall@100": round(m[f"recall@{DEPTH}"], 4)}


def per_query_ndcg(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> np.ndarray:
    from embedopt.eval import ndcg_at_k

    return np.array([ndcg_at_k(run.get(q, []), qrels[q], 10) for q in qrels])


def bootstrap_ci(diff: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


# ------------------------------------------------------------------------------------------- retrieval
def dense_rankings(embedder: Embedder, ds: BeirDataset) -> tuple[dict[str, Ranking], np.ndarray]:
    docs = embedder.embed_documents(ds.doc_texts())
    queries = embedder.embed(ds.query_texts(), "query")
    out: dict[str, Ranking] = {}
    doc_ids = ds.doc_ids
    for start in range(0, len(queries), 256):
        scores = queries[start:start + 256] @ docs.T
        rows = top_k(scores, DEPTH)
        for j, row in enumerate(rows):
            out[ds.query_ids[start + j]] = Ranking([doc_ids[i] for i in row],
                                                   scores[j, row].astype(np.float64))
    return out, docs


def lexical_rankings(index: LexicalIndex, ds: BeirDataset) -> dict[str, Ranking]:
    found = index.search(ds.query_texts(), DEPTH)
    return {q: Ranking.from_result(found, n) for n, q in enumerate(ds.query_ids)}


def run_of(rankings: dict[str, Ranking]) -> dict[str, list[str]]:
    return {q: r.ids for q, r in rankings.items()}


def ms(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


# ------------------------------------------------------------------------------------------- one model
def study_model(name: str, embedder: Embedder, timing_embedder: Embedder, ds: BeirDataset, lexical: LexicalIndex,
                bm25: dict[str, Ranking], fit_q: list[str], test_q: list[str], timing_q: list[str],
                bm25_ms: dict[str, float]) -> dict[str, Any]:
    started = time.perf_counter()
    dense, doc_vectors = dense_rankings(embedder, ds)
    embed_s = time.perf_counter() - started
    fit_qrels, test_qrels = subset(ds.qrels, fit_q), subset(ds.qrels, test_q)
    fits = {how: fit_alpha({q: dense[q] for q in fit_q}, {q: bm25[q] for q in fit_q}, fit_qrels, grid=GRID,
                           normalization=how) for how in ("minmax", "zscore")}
    fusions = {"rrf": RRF(60), "dbsf": DBSF(), "convex_minmax": fits["minmax"].fusion,
               "convex_zscore": fits["zscore"].fusion}
    runs: dict[str, dict[str, list[str]]] = {"dense": run_of(dense)}
    for key, f in fusions.items():
        runs[key] = {q: f.fuse(dense[q], bm25[q], DEPTH).ids for q in ds.query_ids}
    # Which fusion is "the" fusion is decided on the fit half too.
    on_fit = {key: metrics(runs[key], fit_qrels)["ndcg@10"] for key in FUSIONS}
    chosen = max(FUSIONS, key=lambda key: (on_fit[key], -FUSIONS.index(key)))

    # Milliseconds per query, one query at a time: encode (no cache) + exact search; BM25; the fusion itself.
    texts = dict(zip(ds.query_ids, ds.query_texts(), strict=True))
    dense_ms: list[float] = []
    fuse_ms: dict[str, list[float]] = {key: [] for key in FUSIONS}
    timing_embedder.embed_query(texts[timing_q[0]])  # warm-up
    for q in timing_q:
        t0 = time.perf_counter()
        v = timing_embedder.embed_query(texts[q])
        s = doc_vectors @ v
        row = top_k(s, DEPTH)[0]
        d = Ranking([ds.doc_ids[i] for i in row], s[row].astype(np.float64))
        dense_ms.append((time.perf_counter() - t0) * 1e3)
        for key, f in fusions.items():
            fuse_ms[key].append(ms(lambda f=f, d=d, q=q: f.fuse(d, bm25[q], DEPTH)))
    med_dense = statistics.median(dense_ms)
    out: dict[str, Any] = {"model": embedder.fingerprint("document").model, "dim": embedder.dim,
                           "embed_seconds_this_run": round(embed_s, 1)}
    out["dense"] = metrics(runs["dense"], test_qrels) | {"ms_per_query": round(med_dense, 3)}
    for key in FUSIONS:
        fuse = statistics.median(fuse_ms[key])
        out[key] = metrics(runs[key], test_qrels) | {
            "ms_per_query": round(med_dense + bm25_ms["median"] + fuse, 3), "fusion_ms": round(fuse, 3),
            "ndcg@10_on_fit_half": on_fit[key]}
    for how in ("minmax", "zscore"):
        fit = fits[how]
        # A diagnostic, never used to choose anything: the weight the test half itself would have picked.
        oracle = fit_alpha({q: dense[q] for q in test_q}, {q: bm25[q] for q in test_q}, test_qrels, grid=GRID,
                           normalization=how)
        out[f"convex_{how}"] |= {"alpha": fit.alpha, "fit_curve": {f"{a:g}": round(v, 4) for a, v in fit.ndcg.items()},
                                 "diagnostic_best_alpha_on_test": oracle.alpha,
                                 "diagnostic_ndcg@10_at_that_alpha": round(oracle.ndcg[oracle.alpha], 4)}
    single = {"bm25": per_query_ndcg(run_of(bm25), test_qrels), "dense": per_query_ndcg(runs["dense"], test_qrels)}
    better = max(single, key=lambda key: single[key].mean())
    diff = per_query_ndcg(runs[chosen], test_qrels) - single[better]
    out["chosen_fusion"] = {"method": chosen, "chosen_on": "fit half", "better_single": better,
                            "ndcg@10_gain": round(float(diff.mean()), 4), "gain_95ci": (ci := bootstrap_ci(diff)),
                            "beats_better_single": bool(diff.mean() > 0), "ci_above_zero": ci[0] > 0}
    best_test = max(FUSIONS, key=lambda key: out[key]["ndcg@10"])
    out["best_fusion_on_test"] = {"method": best_test, "ndcg@10": out[best_test]["ndcg@10"],
                                  "beats_better_single": bool(out[best_test]["ndcg@10"] > single[better].mean())}
    return out


def encode_speed(embedder: Embedder, texts: list[str], *, repeats: int) -> float:
    embedder.embed_documents(texts[:8])  # warm-up
    best = min(ms(lambda: embedder.embed_documents(texts)) for _ in range(repeats))
    return round(len(texts) / (best / 1e3), 1)


# ------------------------------------------------------------------------------------------- one dataset
def study_dataset(ds: BeirDataset, models: dict[str, tuple[Embedder, Embedder]], args: argparse.Namespace,
                  note: str) -> dict[str, Any]:
    qids = ds.query_ids
    fit_q, test_q = split_queries(qids, fraction=0.5, seed=0)
    timing_q = test_q[: args.timing_queries]
    texts = ds.doc_texts()

    lexical = LexicalIndex()
    index_ms = ms(lambda: (lexical.add(ds.doc_ids, texts), lexical.rebuild()))
    bm25 = lexical_rankings(lexical, ds)
    qtext = dict(zip(qids, ds.query_texts(), strict=True))
    times = [ms(lambda q=q: lexical.search(qtext[q], DEPTH)) for q in timing_q]
    bm25_ms = {"median": statistics.median(times)}
    out: dict[str, Any] = {
        "note": note, "documents": len(ds.corpus), "queries": len(qids), "fit_queries": len(fit_q),
        "test_queries": len(test_q), "timing_queries": len(timing_q),
        "bm25": metrics(run_of(bm25), subset(ds.qrels, test_q)) | {"ms_per_query": round(bm25_ms["median"], 3)},
        "bm25_index_docs_per_s": round(len(texts) / (index_ms / 1e3), 1), "models": {}, "encode_docs_per_s": {}}
    sample = texts[: args.speed_docs]
    for name, (embedder, timing_embedder) in models.items():
        print(f"[{ds.name}] {name}: embedding {len(texts)} documents and {len(qids)} queries (cached)", flush=True)
        out["models"][name] = study_model(name, embedder, timing_embedder, ds, lexical, bm25, fit_q, test_q,
                                          timing_q, bm25_ms)
        static = "minilm" not in name
        out["encode_docs_per_s"][name] = encode_speed(timing_embedder, sample, repeats=5 if static else 1)
    out["encode_sample_docs"] = len(sample)
    return out


def goals(results: dict[str, Any]) -> dict[str, Any]:
    g: dict[str, Any] = {"fusion_beats_better_single": {}, "tuned_static_plus_bm25_vs_minilm_dense": {}}
    for name, r in results.items():
        for model, m in r["models"].items():
            g["fusion_beats_better_single"][f"{name}/{model}"] = {
                "chosen": m["chosen_fusion"]["method"], "gain": m["chosen_fusion"]["ndcg@10_gain"],
                "gain_95ci": m["chosen_fusion"]["gain_95ci"], "met": m["chosen_fusion"]["beats_better_single"],
                "ci_above_zero": m["chosen_fusion"]["ci_above_zero"]}
        if "static-tuned" in r["models"] and "minilm" in r["models"]:
            tuned, minilm = r["models"]["static-tuned"], r["models"]["minilm"]
            method = tuned["chosen_fusion"]["method"]
            quality = tuned[method]["ndcg@10"] / minilm["dense"]["ndcg@10"]
            speed = r["encode_docs_per_s"]["static-tuned"] / r["encode_docs_per_s"]["minilm"]
            g["tuned_static_plus_bm25_vs_minilm_dense"][name] = {
                "fusion": method, "ndcg@10_ratio": round(quality, 4), "encode_speed_ratio": round(speed, 1),
                "met": bool(quality >= 0.95 and speed >= 100),
                "in_domain": name.startswith("manpages")}
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuned", required=True, help="the static model tuned on manpages (make finetune)")
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--only", default="manpages-heldout,manpages,debian-packages")
    parser.add_argument("--cache", default="memory,sqlite", help="embedopt cache spec for the vectors")
    parser.add_argument("--timing-queries", type=int, default=200)
    parser.add_argument("--speed-docs", type=int, default=256)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "hybrid.json"))
    args = parser.parse_args()

    from embedopt.providers import SentenceTransformerProvider, StaticProvider

    tuned = Path(args.tuned)
    root = Path(args.datasets)
    minilm = SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    static = Embedder.from_spec("static:distill", cache=None, show_progress=False).provider
    tuned_p = StaticProvider(tuned)

    def pair(p: Any) -> tuple[Embedder, Embedder]:
        return Embedder(p, cache=args.cache, show_progress=True), Embedder(p, cache=None, show_progress=False)

    all_models = {"minilm": pair(minilm), "static": pair(static), "static-tuned": pair(tuned_p)}
    plan = {
        "manpages-heldout": (lambda: heldout_manpages(root / "manpages", tuned), list(all_models),
                             "manpages pages held out of the tuned model's training (its own split by document) "
                             "and the queries judged on them only"),
        "manpages": (lambda: load_beir(root / "manpages"), ["minilm", "static"],
                     "all of manpages; no tuned model (it trained on 80% of these pages)"),
        "debian-packages": (lambda: load_beir(root / "debian-packages"), list(all_models),
                            "the tuned model is out of domain here (trained on manual pages)"),
    }
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        load, names, note = plan[name]
        ds = load()
        ds.name = name
        load_start = [round(x, 2) for x in os.getloadavg()]
        results[name] = study_dataset(ds, {n: all_models[n] for n in names}, args, note)
        results[name]["loadavg_start"] = load_start  # 1, 5, 15 min: the machine is shared, figures are noisy
        results[name]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        print_table(name, results[name])
    lex = LexicalIndex()
    out = {"bm25": {"library": "bm25s", "method": lex.method, "k1": lex.k1, "b": lex.b,
                    "tokenizer": lex.tokenizer.to_dict() | {"stopwords": f"{len(lex.tokenizer.stopwords)} words"}},
           "depth": DEPTH, "alpha_grid": GRID, "split": "split_queries(fraction=0.5, seed=0): fit half / test half",
           "dense": "exact float32 inner product over all documents", "cpus": os.cpu_count(),
           "machine": platform.machine(), "tuned_model": str(tuned), "results": results, "goals": goals(results)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["goals"], indent=2))


def print_table(name: str, r: dict[str, Any]) -> None:
    print(f"\n{name}: {r['documents']} documents, {r['test_queries']} test queries ({r['fit_queries']} fit)")
    print(f"{'model':14} {'method':14} {'NDCG@10':>8} {'R@100':>7} {'ms/q':>8} {'alpha':>6}")
    print(f"{'-':14} {'bm25':14} {r['bm25']['ndcg@10']:8.4f} {r['bm25']['recall@100']:7.4f} "
          f"{r['bm25']['ms_per_query']:8.2f}")
    for model, m in r["models"].items():
        for key in ("dense", *FUSIONS):
            mark = " *" if key == m["chosen_fusion"]["method"] else ""
            alpha = f"{m[key]['alpha']:6.2f}" if "alpha" in m[key] else ""
            print(f"{model:14} {key + mark:14} {m[key]['ndcg@10']:8.4f} {m[key]['recall@100']:7.4f} "
                  f"{m[key]['ms_per_query']:8.2f} {alpha}")
    print("encode docs/s:", r["encode_docs_per_s"], "| BM25 index docs/s:", r["bm25_index_docs_per_s"])


if __name__ == "__main__":
    main()
