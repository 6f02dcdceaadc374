"""``embedopt eval --fusion``: how much hybrid retrieval gains on a dataset, with the fusion weight fit on one part
of the queries and every figure reported on the other.

The queries with a relevant document are split by a stable hash of their ids (:func:`embedopt.fusion.split_queries`):
the *fit* part chooses the weight ``alpha`` of the convex combination (grid 0, 0.05, ..., 1, best mean NDCG@10,
:func:`embedopt.fusion.fit_alpha`); the *test* part — queries the weight never saw — scores BM25 alone, the vector
search alone, RRF, DBSF and the convex combination at the fitted weight (NDCG@10, Recall@100). Each side returns
its best ``depth`` documents (exact float32 search on the vector side), fused lists are cut at ``depth``. The weight
goes into a retriever as ``fusion="convex:ALPHA"``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..eval.beir import BeirDataset, load_beir
from ..eval.metrics import evaluate, top_k
from ..fusion import DBSF, RRF, Convex, Fusion, Normalization, Ranking, fit_alpha, split_queries
from ..lexical import LexicalIndex

__all__ = ["FusionEval", "run_fusion_eval"]


@dataclass(frozen=True)
class FusionEval:
    """The held-out comparison; ``rows`` maps a method to its test-part ``ndcg@10`` and ``recall@<depth>``."""

    dataset: str
    model: str
    alpha: float
    normalization: str
    fit_queries: list[str]
    test_queries: list[str]
    rows: dict[str, dict[str, float]]
    fit_curve: dict[str, float]
    """Mean NDCG@10 on the fit part at each weight tried."""
    depth: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> str:
        """The method with the best test NDCG@10 (reported, not chosen on the test part for anything)."""
        return max(self.rows, key=lambda m: self.rows[m]["ndcg@10"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"fusion_spec": f"convex:{self.alpha:g}" + (
            ":zscore" if self.normalization == "zscore" else "")}

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return out

    def table(self) -> str:
        lines = [f"{self.dataset} with {self.model}: alpha={self.alpha:g} ({self.normalization}) fit on "
                 f"{len(self.fit_queries)} queries; scored on the other {len(self.test_queries)}",
                 f"{'method':16} {'NDCG@10':>8} {'R@' + str(self.depth):>8}"]
        for name, m in self.rows.items():
            lines.append(f"{name:16} {m['ndcg@10']:8.4f} {m[f'recall@{self.depth}']:8.4f}")
        return "\n".join(lines)


def _dense(docs: np.ndarray, queries: np.ndarray, doc_ids: list[str], query_ids: list[str],
           depth: int) -> dict[str, Ranking]:
    out: dict[str, Ranking] = {}
    for start in range(0, len(queries), 256):
        scores = queries[start:start + 256] @ docs.T
        for j, row in enumerate(top_k(scores, depth)):
            out[query_ids[start + j]] = Ranking([doc_ids[i] for i in row], scores[j, row].astype(np.float64))
    return out


def run_fusion_eval(dataset: str | os.PathLike[str] | BeirDataset, *, model: str = "minilm",
                    cache: str | None = "sqlite", fit_fraction: float = 0.5, seed: int = 0, depth: int = 100,
                    normalization: Normalization = "minmax", grid: Sequence[float] | None = None,
                    lexical: LexicalIndex | None = None, show_progress: bool = True,
                    log: Callable[[str], None] | None = None) -> FusionEval:
    """Fit the convex weight on a ``fit_fraction`` of the queries and score every method on the rest; see the
    module docstring. ``lexical``: an empty index with the BM25 settings to use (default ``LexicalIndex()``)."""
    from ..embedder import Embedder

    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10:
        raise ConfigError(f"depth must be an int >= 10 (NDCG@10 needs ten hits), got {depth!r}")
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset)
    labelled = [q for q in ds.query_ids if any(v > 0 for v in ds.qrels.get(q, {}).values())]
    fit_q, test_q = split_queries(labelled, fraction=fit_fraction, seed=seed)
    if not fit_q or not test_q:
        raise InputError(f"{ds.name} has {len(labelled)} labelled queries: too few to split into a fit part and a "
                         "test part; use a dataset with more queries or another fit_fraction")
    index = lexical if lexical is not None else LexicalIndex()
    if len(index):
        raise ConfigError("give an empty LexicalIndex (its settings are used; the documents are added here)")
    embedder = Embedder.from_spec(model, cache=cache, show_progress=show_progress)
    say(f"{ds.name}: embedding {len(ds.corpus)} documents and {len(ds.queries)} queries with {model}")
    query_ids = ds.query_ids
    dense = _dense(embedder.embed_documents(ds.doc_texts()), embedder.embed(ds.query_texts(), "query"),
                   ds.doc_ids, query_ids, depth)
    say(f"{ds.name}: BM25 over the same texts")
    index.add(ds.doc_ids, ds.doc_texts())
    found = index.search(ds.query_texts(), depth)
    bm25 = {q: Ranking.from_result(found, n) for n, q in enumerate(query_ids)}

    fit_qrels = {q: ds.qrels[q] for q in fit_q}
    test_qrels = {q: ds.qrels[q] for q in test_q}
    fitted = fit_alpha({q: dense[q] for q in fit_q}, {q: bm25[q] for q in fit_q}, fit_qrels, grid=grid,
                       normalization=normalization)
    say(f"{ds.name}: alpha={fitted.alpha:g} fit on {len(fit_q)} queries")

    def score(run: dict[str, Ranking]) -> dict[str, float]:
        m = evaluate({q: r.ids for q, r in run.items()}, test_qrels, ndcg_k=10, recall_k=depth)
        return {"ndcg@10": round(m["ndcg@10"], 4), f"recall@{depth}": round(m[f"recall@{depth}"], 4)}

    methods: dict[str, Fusion] = {"rrf": RRF(), "dbsf": DBSF(), "convex": Convex(fitted.alpha, normalization)}
    rows = {"bm25": score({q: bm25[q] for q in test_q}), "dense": score({q: dense[q] for q in test_q})}
    for name, how in methods.items():
        rows[name] = score({q: how.fuse(dense[q], bm25[q], depth) for q in test_q})
    return FusionEval(ds.name, embedder.fingerprint("document").id, fitted.alpha, normalization, fit_q, test_q, rows,
                      {f"{a:g}": round(v, 4) for a, v in fitted.ndcg.items()}, depth,
                      round(time.perf_counter() - started, 1),
                      {"fit_fraction": fit_fraction, "seed": seed, "split": "embedopt.fusion.split_queries",
                       "bm25": {"method": index.method, "k1": index.k1, "b": index.b}})
