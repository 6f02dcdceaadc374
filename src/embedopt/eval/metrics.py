"""Ranking metrics with trec_eval's definitions (linear gain NDCG, as BEIR and pytrec_eval report it)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DimensionError

__all__ = ["average_precision_at_k", "evaluate", "mrr_at_k", "ndcg_at_k", "recall_at_k", "tie_keys", "top_k"]

Run = Mapping[str, Sequence[str]]
"""query id → doc ids, best first."""
Qrels = Mapping[str, Mapping[str, int]]


def tie_keys(ids: Sequence[str | bytes], seed: int = 0) -> np.ndarray:
    """An order-independent tie-breaking key per id (uint64): a seeded hash of the id itself.

    Equal scores ranked by these keys come out in the same order whatever order the documents were stored or
    listed in; ranking them by position instead lets a file's order decide (and a corpus whose relevant documents
    come first then scores too high)."""
    salt = seed.to_bytes(8, "little", signed=True)
    out = np.empty(len(ids), dtype=np.uint64)
    for n, i in enumerate(ids):
        raw = i.encode() if isinstance(i, str) else bytes(i)
        out[n] = int.from_bytes(hashlib.blake2b(raw, digest_size=8, key=salt).digest(), "little")
    return out


def top_k(scores: np.ndarray, k: int, *, largest: bool = True, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores per row, best first.

    ``tiebreak`` (one key per column, e.g. :func:`tie_keys` of the doc ids) orders equal scores by that key, the
    smaller first, exactly, even across the k-th place; without it, ties are ordered by argpartition, which
    depends on the columns' order."""
    s = np.atleast_2d(scores)
    k = min(k, s.shape[1])
    keyed = -s if largest else s
    part = np.argpartition(keyed, k - 1, axis=1)[:, :k]
    if tiebreak is None:
        order = np.take_along_axis(keyed, part, axis=1).argsort(axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    tiebreak = np.asarray(tiebreak)
    if tiebreak.shape != (s.shape[1],):
        raise DimensionError(f"tiebreak needs one key per column ({s.shape[1]}), got shape {tiebreak.shape}")
    edge = np.take_along_axis(keyed, part, axis=1).max(axis=1)  # the k-th best score of each row
    out = np.empty((len(s), k), dtype=np.int64)
    for i in range(len(s)):
        cand = np.flatnonzero(keyed[i] <= edge[i])  # every column at least as good as the k-th, ties included
        out[i] = cand[np.lexsort((tiebreak[cand], keyed[i, cand]))[:k]]
    return out


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    """Precision at each relevant hit within the top ``k``, summed, over the number of relevant documents."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def evaluate(run: Run, qrels: Qrels, *, ndcg_k: int = 10, recall_k: int = 100, mrr_k: int = 10,
             map_k: int | None = None) -> dict[str, float]:
    """Mean NDCG@k, Recall@k, MRR@k (and MAP@k when ``map_k`` is given) over the queries of ``qrels``
    (a query missing from ``run`` scores 0)."""
    qids = [q for q, r in qrels.items() if any(v > 0 for v in r.values())]
    metrics = {f"ndcg@{ndcg_k}": (ndcg_at_k, ndcg_k), f"recall@{recall_k}": (recall_at_k, recall_k),
               f"mrr@{mrr_k}": (mrr_at_k, mrr_k)}
    if map_k is not None:
        metrics[f"map@{map_k}"] = (average_precision_at_k, map_k)
    if not qids:
        return dict.fromkeys(metrics, 0.0)
    return {name: sum(fn(run.get(q, []), qrels[q], k) for q in qids) / len(qids)
            for name, (fn, k) in metrics.items()}
