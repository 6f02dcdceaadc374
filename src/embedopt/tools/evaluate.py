"""Quality against cost over a grid: model × dim × precision × oversample (× rerank), on a BEIR-format dataset.

Each model embeds the corpus and the queries once, at full dimension, through the cache (a rerun is warm);
every configuration is derived from those vectors: truncated and renormalized to ``dim``, quantized to
``precision``, searched (binary with an int8 rescore of ``k × oversample`` candidates, or the bits alone), and
scored with NDCG@10, Recall@100, MRR@10 and MAP@100. Latency is the median time of one query's search
(embedding excluded: it is the same for every configuration of a model).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_text
from ..codec import Codec
from ..errors import ConfigError
from ..eval.beir import BeirDataset, load_beir
from ..eval.metrics import evaluate, top_k
from ..quantization import Calibration, bytes_per_vector, float_int8_scores

__all__ = ["GridResult", "Row", "default_dims", "run_grid"]

PRECISIONS = ("float32", "float16", "int8", "binary")
K, DEEP = 10, 100
Search = Callable[[np.ndarray, int], list[list[int]]]


@dataclass(frozen=True)
class Row:
    model: str
    dim: int
    precision: str
    oversample: float | None
    """Binary only: candidates rescored with int8 = k × oversample; None = the bits alone."""
    bytes_per_vector: int
    """What the search holds in RAM per document."""
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    map_at_100: float
    ms_per_query: float
    retention: float = 1.0
    """NDCG@10 over the same model's float32 at its native dim."""
    rerank: str | None = None

    @property
    def label(self) -> str:
        text = f"{self.precision}" + (f"+int8@{self.oversample:g}x" if self.oversample else "")
        return text + (" +rerank" if self.rerank else "")


@dataclass
class GridResult:
    dataset: str
    documents: int
    queries: int
    rows: list[Row]
    embed_seconds: dict[str, float] = field(default_factory=dict)
    """Per model: seconds to get the corpus and query vectors (embedding, or reading the cache when warm)."""
    total_seconds: float = 0.0

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the results as JSON to ``path`` (atomically: a kill leaves the old file or none)."""
        data = {**{k: v for k, v in asdict(self).items() if k != "rows"},
                "rows": [{**asdict(r), "label": r.label} for r in self.rows]}
        return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def default_dims(native: int) -> list[int]:
    """The native dim and the usual Matryoshka steps below it."""
    return [native] + [d for d in (768, 512, 256, 128, 64) if d < native]


def _median_ms(search: Search, queries: np.ndarray, n: int) -> float:
    sample = queries[: max(1, n)]
    search(sample[:1], K)  # warm
    times = []
    for q in sample:
        started = time.perf_counter()
        search(q[None, :], K)
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 4)


def _scored(scores: Callable[[np.ndarray], np.ndarray]) -> Search:
    def search(q: np.ndarray, k: int) -> list[list[int]]:
        return top_k(scores(q), k).tolist()

    return search


def _searches(docs: np.ndarray, precision: str, oversample: float | None) -> Search:
    if precision == "float32":
        return _scored(lambda q: q @ docs.T)
    if precision == "float16":
        d16 = docs.astype(np.float16)
        return _scored(lambda q: (q.astype(np.float16) @ d16.T).astype(np.float32))
    int8 = Codec(docs.shape[1], precision="int8", calibration=Calibration.fit(docs))
    cal, codes = int8.calibration, int8.derive(docs)
    assert cal is not None
    if precision == "int8":
        return _scored(lambda q: float_int8_scores(q, codes, cal))
    from ..fingerprint import Fingerprint
    from ..stores import QuantizedIndex

    index = QuantizedIndex(Fingerprint("eval", "grid", "-", "document", "", docs.shape[1], True), calibration=cal)
    index.add([str(i) for i in range(len(docs))], docs)

    def search(q: np.ndarray, k: int) -> list[list[int]]:
        found = index.search(q, k, oversample=oversample or 1.0, rescore="int8" if oversample else "none")
        return [[int(i) for i in row] for row in found.ids]

    return search


def run_grid(dataset: str | os.PathLike[str] | BeirDataset, *, models: Sequence[str] = ("minilm",),
             dims: Sequence[int] | None = None, precisions: Sequence[str] = ("float32", "int8", "binary"),
             oversample: Sequence[float | None] = (None, 4.0), cache: str | None = "sqlite",
             rerank: str | None = None, rerank_candidates: int = 20, rerank_queries: int = 200,
             latency_queries: int = 200, show_progress: bool = True,
             log: Callable[[str], None] | None = None) -> GridResult:
    """Run the grid; see the module docstring. ``rerank`` names a cross-encoder (folder or hub id): it reranks
    the top ``rerank_candidates`` of each model's native-dim binary + int8 search, on ``rerank_queries`` queries."""
    from ..embedder import Embedder

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"precisions must be among {PRECISIONS}, got {bad}")
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset)
    doc_ids, qids = ds.doc_ids, ds.query_ids
    if not doc_ids or not qids:
        raise ConfigError(f"{ds.name} has {len(doc_ids)} documents and {len(qids)} judged queries: nothing to "
                          "evaluate. Its qrels must name query ids of queries.jsonl and document ids of "
                          "corpus.jsonl (columns: query-id, corpus-id, score)")
    rows: list[Row] = []
    embed_seconds: dict[str, float] = {}

    def score(search: Search, q: np.ndarray, ids: list[str] | None = None) -> dict[str, float]:
        served = dict(zip(qids, ([doc_ids[i] for i in r] for r in search(q, K)), strict=True))
        deep = dict(zip(qids, ([doc_ids[i] for i in r] for r in search(q, DEEP)), strict=True))
        top = evaluate(served, ds.qrels, ndcg_k=K, mrr_k=K)
        wide = evaluate(deep, ds.qrels, recall_k=DEEP, map_k=DEEP)
        return {"ndcg": top[f"ndcg@{K}"], "mrr": top[f"mrr@{K}"], "recall": wide[f"recall@{DEEP}"],
                "map": wide[f"map@{DEEP}"]}

    for model in models:
        embedder = Embedder.from_spec(model, cache=cache, show_progress=show_progress)
        t0 = time.perf_counter()
        full_docs = embedder.embed_full(ds.doc_texts(), "document")
        full_queries = embedder.embed_full(ds.query_texts(), "query")
        embed_seconds[model] = round(time.perf_counter() - t0, 1)
        native = full_docs.shape[1]
        say(f"{model}: {len(doc_ids)} documents and {len(qids)} queries in {embed_seconds[model]}s")
        baseline = None
        for dim in (dims or default_dims(native)):
            if dim > native:
                continue
            truncated = Codec(dim)
            docs, queries = truncated.derive_float(full_docs), truncated.derive_float(full_queries)
            for precision in precisions:
                for over in (oversample if precision == "binary" else [None]):
                    if precision == "binary" and dim % 8:
                        continue
                    search = _searches(docs, precision, over)
                    m = score(search, queries)
                    ram = bytes_per_vector(dim, precision)
                    row = Row(model, dim, precision, over, ram, round(m["ndcg"], 4), round(m["recall"], 4),
                              round(m["mrr"], 4), round(m["map"], 4), _median_ms(search, queries, latency_queries))
                    if baseline is None and precision == "float32" and dim == native:
                        baseline = row.ndcg_at_10
                    rows.append(row)
                    say(f"  {model} {dim:>4}d {row.label:<16} NDCG@10 {row.ndcg_at_10:.4f}  {row.ms_per_query} ms")
        if baseline:
            rows[:] = [Row(**{**asdict(r), "retention": round(r.ndcg_at_10 / baseline, 4)}) if r.model == model
                       else r for r in rows]
        if rerank is not None:
            rows.append(_rerank_row(ds, model, embedder, full_docs, full_queries, rerank, rerank_candidates,
                                    rerank_queries, baseline))
    return GridResult(ds.name, len(doc_ids), len(qids), rows, embed_seconds,
                      round(time.perf_counter() - started, 1))


def _rerank_row(ds: BeirDataset, model: str, embedder: Any, docs: np.ndarray, queries: np.ndarray, rerank: str,
                candidates: int, n_queries: int, baseline: float | None) -> Row:
    from ..rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(rerank)
    search = _searches(docs, "binary", 4.0 * K / candidates if candidates > K else 4.0)
    texts = ds.doc_texts()
    qids = ds.query_ids[:n_queries]
    plain: dict[str, list[str]] = {}
    runs: dict[str, list[str]] = {}
    times = []
    for n, q in enumerate(qids):
        started = time.perf_counter()
        cand = search(queries[n][None, :], candidates)[0]
        ranked = reranker.rank(ds.queries[q], [texts[i] for i in cand], top_n=K)
        times.append((time.perf_counter() - started) * 1e3)
        runs[q] = [ds.doc_ids[cand[r.index]] for r in ranked]
        plain[q] = [ds.doc_ids[i] for i in cand[:K]]
    qrels = {q: ds.qrels[q] for q in qids}
    m = evaluate(runs, qrels, ndcg_k=K, recall_k=K, mrr_k=K, map_k=K)
    before = evaluate(plain, qrels, ndcg_k=K)[f"ndcg@{K}"]
    ndcg = round(m[f"ndcg@{K}"], 4)
    return Row(model, docs.shape[1], "binary", 4.0, bytes_per_vector(docs.shape[1], "binary"), ndcg,
               round(m[f"recall@{K}"], 4), round(m[f"mrr@{K}"], 4), round(m[f"map@{K}"], 4),
               round(statistics.median(times), 2), round(ndcg / baseline, 4) if baseline else 1.0,
               rerank=f"{reranker.name}: top {candidates} of binary+int8 on the first {len(qids)} queries "
                      f"(NDCG@10 {before:.4f} there without it; Recall and MAP at 10)")
