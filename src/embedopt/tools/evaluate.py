"""Quality against cost over a grid: model × dim × precision × oversample (× rerank), on a BEIR-format dataset.

Each model embeds the corpus and the queries once, at full dimension, through the cache (a rerun is warm);
every configuration is derived from those vectors: truncated and renormalized to ``dim``, quantized to
``precision``, searched, and scored with NDCG@10, Recall@100, MRR@10 and MAP@100.

What the rows mean:

* ``float32``, ``float16``: the vectors as they are, or halved.
* ``int8`` (label "int8 docs, float query"): documents stored as calibrated int8, the query kept in float32
  (asymmetric, as faiss's SQ8 and the rescore step of the embedded store score them).
* ``int8-symmetric`` (label "int8 symmetric"): the query quantized too, with the documents' calibration, and
  scored as the dot product of the two int8 codes: what a store that quantizes both sides computes.
* ``binary``: the sign bits alone (Hamming distance); with an ``oversample``, the bits keep ``k × oversample``
  candidates, rescored with the float query against the documents' int8 vectors (``QuantizedIndex``).

Equal scores never fall back on the corpus's order: they are ordered by a seeded hash of the doc id
(:func:`embedopt.eval.tie_keys`), in the scores here and in ``QuantizedIndex``, so a corpus sorted with its
relevant documents first scores the same as the same corpus reversed.

``retention`` ("kept") is NDCG@10 over the same model's float32 at its native dim, always computed from the
cached vectors (``None``, printed "—", only where there is nothing to compare with). ``bytes_per_vector`` is what
a search holds in RAM per document; ``bytes_total`` all it keeps (a binary shortlist with an int8 rescore keeps
the bits in RAM and the int8 vectors on disk: both). Latency is the median time of one query's search, run as a
store would run it (embedding excluded: it is the same for every configuration of a model): the int8 rows on
faiss's SQ8 scan when faiss is installed (no float copy of the matrix), else in blocks of rows; ``engine`` names
what ran.
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
from ..eval.metrics import evaluate, tie_keys, top_k
from ..quantization import Calibration, bytes_per_vector, float_int8_scores, quantize

__all__ = ["GridResult", "Row", "default_dims", "run_grid"]

PRECISIONS = ("float32", "float16", "int8", "int8-symmetric", "binary")
LABELS = {"int8": "int8 docs, float query", "int8-symmetric": "int8 symmetric"}
K, DEEP = 10, 100
BLOCK = 4096
"""Rows scored at a time where no SIMD int8 kernel is installed: bounds the float temporary."""
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
    retention: float | None = None
    """NDCG@10 over the same model's float32 at its native dim; None when there is no baseline."""
    rerank: str | None = None
    bytes_total: int | None = None
    """All that is kept per document: the RAM codes plus the int8 vectors a rescore reads (None: = RAM)."""
    engine: str = "numpy"
    """What ran the timed search."""

    @property
    def label(self) -> str:
        text = LABELS.get(self.precision, self.precision) + (f"+int8@{self.oversample:g}x" if self.oversample else "")
        return text + (" +rerank" if self.rerank else "")

    @property
    def bytes_kept(self) -> int:
        return self.bytes_total if self.bytes_total is not None else self.bytes_per_vector


@dataclass
class GridResult:
    dataset: str
    documents: int
    queries: int
    rows: list[Row]
    embed_seconds: dict[str, float] = field(default_factory=dict)
    """Per model: seconds to get the corpus and query vectors (embedding, or reading the cache when warm)."""
    total_seconds: float = 0.0
    load_seconds: dict[str, float] = field(default_factory=dict)
    """Per model: seconds to load it, distillation included (``static:distill`` distils on first use)."""
    baselines: dict[str, float] = field(default_factory=dict)
    """Per model: NDCG@10 of float32 at its native dim, what ``retention`` divides by."""
    join: str = "space"
    """How each document's title and text were joined (:func:`embedopt.eval.load_beir`)."""
    loadavg: list[float] = field(default_factory=list)
    """``os.getloadavg()`` at the end of the run: latencies measured on a busy machine are noisy."""

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the results as JSON to ``path`` (atomically: a kill leaves the old file or none)."""
        data = {**{k: v for k, v in asdict(self).items() if k != "rows"},
                "rows": [{**asdict(r), "label": r.label, "bytes_kept": r.bytes_kept} for r in self.rows]}
        return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def default_dims(native: int) -> list[int]:
    """The native dim and the usual Matryoshka steps below it."""
    return [native] + [d for d in (768, 512, 256, 128, 64) if d < native]


def _median_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray, n: int) -> float:
    sample = queries[: max(1, n)]
    search(sample[:1])  # warm
    times = []
    for q in sample:
        started = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 4)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _sq8(faiss: Any, dim: int, vmin: np.ndarray, vdiff: np.ndarray, qtype: int) -> Any:
    index = faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT)
    if qtype == faiss.ScalarQuantizer.QT_8bit:
        faiss.copy_array_to_vector(np.concatenate([vmin, vdiff]).astype(np.float32), index.sq.trained)
    index.is_trained = True
    return index


class _Scorer:
    """One precision at one dim: exact scores of every query (for quality) and a one-query search run as a store
    of that precision would run it (for latency)."""

    def __init__(self, docs: np.ndarray, precision: str, keys: np.ndarray) -> None:
        self.precision, self.keys, self.engine = precision, keys, "numpy"
        self.index: Any = None
        faiss = _faiss()
        if precision == "float32":
            self.docs = docs
        elif precision == "float16":
            self.docs = docs.astype(np.float16)
        else:
            self.cal = Calibration.fit(docs)
            self.codes = quantize(docs, "int8", calibration=self.cal)
            if faiss is not None:  # faiss's SQ8 scan decodes a code at a time: no float copy of the matrix
                if precision == "int8":  # our buckets: start + (code + 128 + 0.5) * step == faiss's 8bit decoding
                    self.index = _sq8(faiss, docs.shape[1], self.cal.starts, self.cal.steps * 255.0,
                                      faiss.ScalarQuantizer.QT_8bit)
                    self.index.add(self.cal.starts + (self.codes.astype(np.float32) + 128.5) * self.cal.steps)
                else:  # the codes themselves (8bit_direct_signed decodes a code c as c): a dot product of codes
                    self.index = _sq8(faiss, docs.shape[1], self.cal.starts, self.cal.steps,
                                      faiss.ScalarQuantizer.QT_8bit_direct_signed)
                    self.index.add(self.codes.astype(np.float32))
                self.engine = "faiss SQ8 (IndexScalarQuantizer)"
            else:
                self.engine = f"numpy, {BLOCK} rows at a time"

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Exact scores of queries ``q`` (n, dim) against every document."""
        if self.precision == "float32":
            return q @ self.docs.T
        if self.precision == "float16":
            return (q.astype(np.float16) @ self.docs.T).astype(np.float32)
        if self.precision == "int8":
            return np.concatenate([float_int8_scores(q, self.codes[i:i + BLOCK], self.cal)
                                   for i in range(0, len(self.codes), BLOCK)], axis=1)
        qc = quantize(q, "int8", calibration=self.cal).astype(np.float64)  # float64 holds int32 sums exactly
        return np.concatenate([qc @ self.codes[i:i + BLOCK].astype(np.float64).T
                               for i in range(0, len(self.codes), BLOCK)], axis=1)

    def ranked(self, q: np.ndarray, depth: int) -> list[list[int]]:
        return top_k(self.scores(q), depth, tiebreak=self.keys).tolist()

    def timed(self, q: np.ndarray) -> Any:
        """One query's top-10 the way a store of this precision searches (latency only)."""
        if self.index is None or self.precision in ("float32", "float16"):
            return self.ranked(q, K)
        if self.precision == "int8-symmetric":
            q = quantize(q, "int8", calibration=self.cal).astype(np.float32)
        faiss = _faiss()
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query, one thread, as the store's binary scan (an OpenMP team stalls)
        try:
            return self.index.search(q, K)
        finally:
            faiss.omp_set_num_threads(before)


def _binary(docs: np.ndarray, oversample: float | None, doc_ids: list[str]) -> tuple[Search, str]:
    from ..fingerprint import Fingerprint
    from ..stores import QuantizedIndex

    index = QuantizedIndex(Fingerprint("eval", "grid", "-", "document", "", docs.shape[1], True),
                           calibration=Calibration.fit(docs))
    index.add(doc_ids, docs)  # the doc ids themselves: the index breaks ties by their hash, as the scorers do
    row_of = {d: n for n, d in enumerate(doc_ids)}

    def search(q: np.ndarray, k: int) -> list[list[int]]:
        found = index.search(q, k, oversample=oversample or 1.0, rescore="int8" if oversample else "none")
        return [[row_of[i] for i in row] for row in found.ids]

    scan = getattr(index, "_scan", None)
    return search, f"QuantizedIndex ({getattr(scan, 'backend', 'numpy')} Hamming scan)"


def run_grid(dataset: str | os.PathLike[str] | BeirDataset, *, models: Sequence[str] = ("minilm",),
             dims: Sequence[int] | None = None,
             precisions: Sequence[str] = ("float32", "int8", "int8-symmetric", "binary"),
             oversample: Sequence[float | None] = (None, 4.0), cache: str | None = "sqlite",
             rerank: str | None = None, rerank_candidates: int = 20, rerank_queries: int = 200,
             latency_queries: int = 200, show_progress: bool = True, join: str | None = None,
             log: Callable[[str], None] | None = None) -> GridResult:
    """Run the grid; see the module docstring. ``join`` says how a document's title and text are joined
    (default: the dataset's, ``title + " " + text``; see :func:`embedopt.eval.load_beir`). ``rerank`` names a
    cross-encoder (folder or hub id): it reranks the top ``rerank_candidates`` of each model's native-dim
    binary + int8 search, on ``rerank_queries`` queries."""
    from ..embedder import Embedder

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"precisions must be among {PRECISIONS}, got {bad}")
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, join=join or "space")
    join = join or ds.join
    doc_ids, qids = ds.doc_ids, ds.query_ids
    if not doc_ids or not qids:
        raise ConfigError(f"{ds.name} has {len(doc_ids)} documents and {len(qids)} judged queries: nothing to "
                          "evaluate. Its qrels must name query ids of queries.jsonl and document ids of "
                          "corpus.jsonl (columns: query-id, corpus-id, score)")
    keys = tie_keys(doc_ids)
    rows: list[Row] = []
    embed_seconds: dict[str, float] = {}
    load_seconds: dict[str, float] = {}
    baselines: dict[str, float] = {}

    def metrics(top: list[list[int]], deep: list[list[int]]) -> dict[str, float]:
        served = dict(zip(qids, ([doc_ids[i] for i in r] for r in top), strict=True))
        wide = dict(zip(qids, ([doc_ids[i] for i in r] for r in deep), strict=True))
        a = evaluate(served, ds.qrels, ndcg_k=K, mrr_k=K)
        b = evaluate(wide, ds.qrels, recall_k=DEEP, map_k=DEEP)
        return {"ndcg": a[f"ndcg@{K}"], "mrr": a[f"mrr@{K}"], "recall": b[f"recall@{DEEP}"], "map": b[f"map@{DEEP}"]}

    for model in models:
        t0 = time.perf_counter()
        say(f"{model}: loading" + (" (distilled from its source model on first use, about 90 s on 2 CPU cores, "
                                   "then cached)" if "distill" in model else ""))
        embedder = Embedder.from_spec(model, cache=cache, show_progress=show_progress)
        load_seconds[model] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        full_docs = embedder.embed_full(ds.doc_texts(join), "document")
        full_queries = embedder.embed_full(ds.query_texts(), "query")
        embed_seconds[model] = round(time.perf_counter() - t0, 1)
        native = full_docs.shape[1]
        say(f"{model}: loaded in {load_seconds[model]}s; {len(doc_ids)} documents and {len(qids)} queries in "
            f"{embed_seconds[model]}s")
        base_scorer = _Scorer(Codec(native).derive_float(full_docs), "float32", keys)
        base_queries = Codec(native).derive_float(full_queries)
        base_run = base_scorer.ranked(base_queries, K)
        baseline = metrics(base_run, base_run)["ndcg"]
        baselines[model] = round(baseline, 4)
        for dim in (dims or default_dims(native)):
            if dim > native:
                continue
            truncated = Codec(dim)
            docs, queries = truncated.derive_float(full_docs), truncated.derive_float(full_queries)
            for precision in precisions:
                for over in (oversample if precision == "binary" else [None]):
                    if precision == "binary" and dim % 8:
                        continue
                    if precision == "binary":
                        search, engine = _binary(docs, over, doc_ids)
                        m = metrics(search(queries, K), search(queries, DEEP))
                        ms = _median_ms(lambda q: search(q, K), queries, latency_queries)  # noqa: B023
                        ram = bytes_per_vector(dim, "binary")
                        total = ram + dim if over else ram
                    else:
                        scorer = _Scorer(docs, precision, keys)
                        deep = scorer.ranked(queries, DEEP)
                        m = metrics([r[:K] for r in deep], deep)
                        ms = _median_ms(scorer.timed, queries, latency_queries)
                        engine, ram = scorer.engine, bytes_per_vector(dim, precision.split("-")[0])
                        total = ram
                    row = Row(model, dim, precision, over, ram, round(m["ndcg"], 4), round(m["recall"], 4),
                              round(m["mrr"], 4), round(m["map"], 4), ms,
                              round(m["ndcg"] / baseline, 4) if baseline else None, bytes_total=total,
                              engine=engine)
                    rows.append(row)
                    kept = f"{row.retention:.1%}" if row.retention is not None else "—"
                    say(f"  {model} {dim:>4}d {row.label:<24} NDCG@10 {row.ndcg_at_10:.4f} kept {kept}  "
                        f"{row.ms_per_query} ms")
        if rerank is not None:
            rows.append(_rerank_row(ds, model, full_docs, full_queries, rerank, rerank_candidates, rerank_queries,
                                    base_run))
    return GridResult(ds.name, len(doc_ids), len(qids), rows, embed_seconds,
                      round(time.perf_counter() - started, 1), load_seconds, baselines, join,
                      [round(x, 2) for x in os.getloadavg()])


def _rerank_row(ds: BeirDataset, model: str, docs: np.ndarray, queries: np.ndarray, rerank: str,
                candidates: int, n_queries: int, base_run: list[list[int]]) -> Row:
    from ..rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(rerank)
    search, engine = _binary(docs, 4.0 * K / candidates if candidates > K else 4.0, ds.doc_ids)
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
    # the baseline on the same queries: a subset's NDCG over the whole set's would not be what it kept
    base = evaluate({q: [ds.doc_ids[i] for i in base_run[n]] for n, q in enumerate(qids)}, qrels, ndcg_k=K)
    ndcg, dim = round(m[f"ndcg@{K}"], 4), docs.shape[1]
    return Row(model, dim, "binary", 4.0, bytes_per_vector(dim, "binary"), ndcg,
               round(m[f"recall@{K}"], 4), round(m[f"mrr@{K}"], 4), round(m[f"map@{K}"], 4),
               round(statistics.median(times), 2),
               round(ndcg / base[f"ndcg@{K}"], 4) if base[f"ndcg@{K}"] else None,
               rerank=f"{reranker.name}: top {candidates} of binary+int8 on the first {len(qids)} queries "
                      f"(NDCG@10 {before:.4f} there without it, float32 {base[f'ndcg@{K}']:.4f}; Recall and MAP "
                      "at 10)", bytes_total=bytes_per_vector(dim, "binary") + dim, engine=engine)
