"""Fuse a dense and a lexical ranking of one query into one ranking, and fit the weight that does it best.

Three methods, each a small frozen object with ``fuse(dense, lexical, limit)`` (and a function doing the same):

* :class:`RRF` — reciprocal rank fusion: ``sum 1 / (k + rank)`` over the lists a document is in (rank from 1,
  ``k = 60`` by default, as Cormack et al.; Qdrant counts positions from 0, so its ``k`` is ours plus one).
  Scores are ignored; a list that lacks a document adds nothing.
* :class:`DBSF` — distribution-based score fusion, as Qdrant does it: each list's scores are mapped by
  ``(s - (mean - 3 std)) / (6 std)`` (sample std), then summed; a list that lacks a document adds 0; a list of
  one hit, or of equal scores, maps to 0.5.
* :class:`Convex` — ``alpha * dense' + (1 - alpha) * lexical'`` on normalized scores (Bruch et al., TOIS 2023):
  ``"minmax"`` (default) maps each list to [0, 1]; ``"zscore"`` to ``(s - mean) / std`` (population std). A
  document missing from a list gets that list's lowest normalized score (0 for min-max): it ranks no better there
  than the worst hit the list returned. A list of one hit, or of equal scores, normalizes to 1 (min-max) or 0
  (z-score), and a document it lacks gets one unit less (0 or -1). ``alpha`` is fit on labelled queries with
  :func:`fit_alpha` — on other queries than those it is scored on (:func:`split_queries`).

  Which normalization, measured (``bench/hybrid.py``: three sets, MiniLM and two static models, BM25): at its
  fitted weight z-score was 0.001-0.005 NDCG@10 ahead of min-max on all eight fitting halves, and ahead on five
  of the eight test halves (by at most 0.006 either way). Min-max stays the default because it keeps a list's
  lone hit — the one document holding a rare identifier — at full weight (1 against 0), where z-score gives it
  one unit while the dense list's best z-scores reach 3: against a dense top 100 that hit ranked about 25th with
  z-score (and about 20th-40th with DBSF), 1st-2nd with min-max and RRF (tests/test_fusion.py shows it).

Ties are broken the same way everywhere: by the best rank the document has in any list, then by id. Empty lists
are allowed (a query with no lexical match); all empty gives an empty ranking.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError, InputError
from .eval.metrics import ndcg_at_k

__all__ = ["DBSF", "RRF", "AlphaFit", "Convex", "Fusion", "Normalization", "Ranking", "convex", "dbsf",
           "fit_alpha", "fuse_results", "parse_fusion", "rrf", "split_queries"]

Normalization = Literal["minmax", "zscore"]
_NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore")


@dataclass(frozen=True)
class Ranking:
    """One query's hits from one retriever (or fused), best first."""

    ids: list[str]
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """float64, one per id, non-increasing."""

    def __post_init__(self) -> None:
        ids = list(self.ids)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(ids) != len(scores):
            raise InputError(f"a ranking needs one score per id: {len(ids)} ids, {len(scores)} scores")
        if len(set(ids)) != len(ids):
            raise InputError("a ranking lists each id once; deduplicate the hits before fusing")
        if not np.isfinite(scores).all():
            raise InputError("ranking scores must be finite numbers (no NaN or infinity)")
        if len(scores) > 1 and (np.diff(scores) > 0).any():
            raise InputError("a ranking must be sorted best first (scores non-increasing), as stores return hits")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_result(cls, result: Any, query: int = 0) -> Ranking:
        """The ``query``-th query of a store's or a :class:`~embedopt.lexical.LexicalIndex`'s ``SearchResult``."""
        return cls(list(result.ids[query]), np.asarray(result.scores[query], dtype=np.float64))


# ---------------------------------------------------------------------------------------------- the methods
def _union(rankings: Sequence[Ranking]) -> tuple[list[str], list[list[int]], np.ndarray]:
    """The ids of every list in first-seen order, where each list's ids sit in that union, and each id's best
    rank in any list."""
    ids = list(dict.fromkeys(itertools.chain.from_iterable(r.ids for r in rankings)))
    where = dict(zip(ids, range(len(ids)), strict=True))
    best = np.full(len(where), np.iinfo(np.int64).max, dtype=np.int64)
    positions = []
    for r in rankings:
        pos = [where[i] for i in r.ids]
        best[pos] = np.minimum(best[pos], np.arange(len(pos)))
        positions.append(pos)
    return ids, positions, best


def _order(ids: list[str], fused: np.ndarray, best: np.ndarray, limit: int | None) -> Ranking:
    if not ids:
        return Ranking([], np.zeros(0))
    order = np.lexsort((np.array(ids), best, -fused))[:limit]
    return Ranking([ids[n] for n in order], fused[order])


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")


def _check_rankings(rankings: Any) -> list[Ranking]:
    out = list(rankings)
    for n, r in enumerate(out):
        if not isinstance(r, Ranking):
            raise InputError(f"ranking #{n} is a {type(r).__name__}; wrap hits in fusion.Ranking(ids, scores) "
                             "(Ranking.from_result for a SearchResult)", n)
    return out


def rrf(rankings: Sequence[Ranking], *, k: int = 60, limit: int | None = None) -> Ranking:
    """Reciprocal rank fusion: ``sum over lists of 1 / (k + rank)``, rank counted from 1."""
    if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"the RRF constant k must be a number >= 0, got {k!r}")
    _check_limit(limit)
    lists = _check_rankings(rankings)
    ids, positions, best = _union(lists)
    fused = np.zeros(len(ids))
    for pos in positions:
        fused[pos] += 1.0 / (k + np.arange(1, len(pos) + 1))
    return _order(ids, fused, best, limit)


def _dbsf_scores(s: np.ndarray) -> np.ndarray:
    if len(s) < 2:
        return np.full(len(s), 0.5)
    std = float(np.std(s, ddof=1))
    if std == 0:
        return np.full(len(s), 0.5)
    low = float(np.mean(s)) - 3 * std
    return (s - low) / (6 * std)


def dbsf(rankings: Sequence[Ranking], *, limit: int | None = None) -> Ranking:
    """Distribution-based score fusion (Qdrant's): scores mapped by mean ± 3 sample std, then summed."""
    _check_limit(limit)
    lists = _check_rankings(rankings)
    ids, positions, best = _union(lists)
    fused = np.zeros(len(ids))
    for r, pos in zip(lists, positions, strict=True):
        fused[pos] += _dbsf_scores(r.scores)
    return _order(ids, fused, best, limit)


def _normalized(r: Ranking, how: str) -> tuple[np.ndarray, float]:
    """(normalized scores, the value for a document the list lacks)."""
    s = r.scores
    if how == "minmax":
        span = float(s.max() - s.min()) if len(s) else 0.0
        if span == 0:
            return np.ones(len(s)), 0.0
        return (s - s.min()) / span, 0.0
    std = float(np.std(s)) if len(s) else 0.0
    if std == 0:
        return np.zeros(len(s)), -1.0
    z = (s - float(np.mean(s))) / std
    return z, float(z.min())


def _convex_parts(dense: Ranking, lexical: Ranking, how: str) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    ids, positions, best = _union([dense, lexical])
    parts = []
    for r, pos in zip((dense, lexical), positions, strict=True):
        norm, missing = _normalized(r, how)
        col = np.full(len(ids), missing)
        col[pos] = norm
        parts.append(col)
    return ids, parts[0], parts[1], best


def _check_alpha(alpha: Any) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be between 0 (lexical only) and 1 (dense only), got {alpha!r}")
    return float(alpha)


def _check_normalization(how: Any) -> None:
    if how not in _NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {_NORMALIZATIONS}, got {how!r}")


def convex(dense: Ranking, lexical: Ranking, *, alpha: float, normalization: Normalization = "minmax",
           limit: int | None = None) -> Ranking:
    """``alpha * dense' + (1 - alpha) * lexical'`` over the union of both lists, on normalized scores."""
    a = _check_alpha(alpha)
    _check_normalization(normalization)
    _check_limit(limit)
    dense, lexical = _check_rankings([dense, lexical])
    ids, d, lx, best = _convex_parts(dense, lexical, normalization)
    return _order(ids, a * d + (1 - a) * lx, best, limit)


# ---------------------------------------------------------------------------------------------- as options
@runtime_checkable
class Fusion(Protocol):
    """How a hybrid retriever merges its dense and its lexical hits."""

    @property
    def name(self) -> str: ...

    def fuse(self, dense: Ranking, lexical: Ranking, limit: int | None = None) -> Ranking: ...


@dataclass(frozen=True)
class RRF:
    """Reciprocal rank fusion with constant ``k``."""

    k: int = 60

    def __post_init__(self) -> None:
        rrf([], k=self.k)  # validates k

    @property
    def name(self) -> str:
        return f"rrf:{self.k}"

    def fuse(self, dense: Ranking, lexical: Ranking, limit: int | None = None) -> Ranking:
        return rrf([dense, lexical], k=self.k, limit=limit)


@dataclass(frozen=True)
class DBSF:
    """Distribution-based score fusion (mean ± 3 std per list, summed)."""

    @property
    def name(self) -> str:
        return "dbsf"

    def fuse(self, dense: Ranking, lexical: Ranking, limit: int | None = None) -> Ranking:
        return dbsf([dense, lexical], limit=limit)


@dataclass(frozen=True)
class Convex:
    """``alpha * dense + (1 - alpha) * lexical`` on normalized scores; fit ``alpha`` with :func:`fit_alpha`."""

    alpha: float = 0.5
    normalization: Normalization = "minmax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _check_alpha(self.alpha))
        _check_normalization(self.normalization)

    @property
    def name(self) -> str:
        return f"convex:{self.alpha:g}" + (":zscore" if self.normalization == "zscore" else "")

    def fuse(self, dense: Ranking, lexical: Ranking, limit: int | None = None) -> Ranking:
        return convex(dense, lexical, alpha=self.alpha, normalization=self.normalization, limit=limit)


def parse_fusion(spec: str | Fusion) -> Fusion:
    """A fusion from a short spec, as a CLI option or a config file gives it: ``rrf``, ``rrf:K``, ``dbsf``,
    ``convex:ALPHA`` or ``convex:ALPHA:zscore``. A :class:`Fusion` object is returned as it is."""
    if not isinstance(spec, str):
        if isinstance(spec, Fusion):
            return spec
        raise ConfigError(f"fusion must be a spec string or a Fusion (RRF, DBSF, Convex), got {type(spec).__name__}")
    head, *rest = spec.strip().lower().split(":")
    try:
        if head == "rrf" and len(rest) <= 1:
            return RRF(int(rest[0])) if rest else RRF()
        if head == "dbsf" and not rest:
            return DBSF()
        if head == "convex" and 1 <= len(rest) <= 2:
            return Convex(float(rest[0]), rest[1] if len(rest) == 2 else "minmax")  # type: ignore[arg-type]
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad number in fusion spec {spec!r}: {exc}") from exc
    raise ConfigError(f"unknown fusion spec {spec!r}; use rrf, rrf:K, dbsf, convex:ALPHA or convex:ALPHA:zscore "
                      "(fit ALPHA with embedopt.fusion.fit_alpha on labelled queries)")


def fuse_results(dense: Any, lexical: Any, fusion: str | Fusion, *, limit: int | None = None) -> list[Ranking]:
    """Per query, fuse a vector store's ``SearchResult`` and a :class:`~embedopt.lexical.LexicalIndex`'s
    ``LexicalResult`` for the same queries (in the same order): what a hybrid search does after its two searches."""
    f = parse_fusion(fusion)
    if len(dense.ids) != len(lexical.ids):
        raise InputError(f"{len(dense.ids)} dense and {len(lexical.ids)} lexical result lists: search both sides "
                         "with the same queries")
    return [f.fuse(Ranking.from_result(dense, n), Ranking.from_result(lexical, n), limit)
            for n in range(len(dense.ids))]


# ---------------------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class AlphaFit:
    """The weight :func:`fit_alpha` chose, and the mean NDCG@k on the fitting queries at every weight tried."""

    alpha: float
    normalization: Normalization
    ndcg: dict[float, float]
    queries: int
    k: int

    @property
    def fusion(self) -> Convex:
        return Convex(self.alpha, self.normalization)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "normalization": self.normalization, "queries": self.queries, "k": self.k,
                f"ndcg@{self.k}": {f"{a:g}": round(v, 6) for a, v in self.ndcg.items()}}


def fit_alpha(dense: Mapping[str, Ranking], lexical: Mapping[str, Ranking], qrels: Mapping[str, Mapping[str, int]],
              *, grid: Sequence[float] | None = None, normalization: Normalization = "minmax",
              k: int = 10) -> AlphaFit:
    """Choose ``alpha`` for :class:`Convex` by grid search: the weight with the best mean NDCG@``k`` over the
    queries of ``qrels`` (those with a relevant document; a query missing from ``dense`` or ``lexical`` counts
    with an empty list there). Give it only fitting queries: scoring a weight on the queries it was fit on
    overstates it (:func:`split_queries`). The grid defaults to 0, 0.05, ..., 1; among equal means the weight
    closest to 0.5 wins (then the smaller)."""
    _check_normalization(normalization)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive int, got {k!r}")
    alphas = sorted({_check_alpha(a) for a in (grid if grid is not None else np.linspace(0, 1, 21).round(4))})
    if not alphas:
        raise ConfigError("the alpha grid is empty; give weights between 0 and 1")
    qids = [q for q, r in qrels.items() if any(v > 0 for v in r.values())]
    if not qids:
        raise InputError("fit_alpha needs labelled queries: qrels has no query with a relevant document")
    empty = Ranking([], np.zeros(0))
    totals = np.zeros(len(alphas))
    for q in qids:
        ids, d, lx, best = _convex_parts(dense.get(q, empty), lexical.get(q, empty), normalization)
        if not ids:
            continue
        for n, a in enumerate(alphas):
            totals[n] += ndcg_at_k(_order(ids, a * d + (1 - a) * lx, best, k).ids, qrels[q], k)
    means = totals / len(qids)
    top = means.max()
    pick = min((n for n in range(len(alphas)) if math.isclose(means[n], top, rel_tol=0, abs_tol=1e-12)),
               key=lambda n: (abs(alphas[n] - 0.5), alphas[n]))
    return AlphaFit(alphas[pick], normalization, {a: float(m) for a, m in zip(alphas, means, strict=True)},
                    len(qids), k)


def split_queries(qids: Iterable[str], *, fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """(fit, test) by a stable hash of each query id: about ``fraction`` of the queries fit, the rest test. The
    same id lands on the same side on every run, whatever the order, and a new query moves no other."""
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction must be between 0 and 1, got {fraction}")
    fit: list[str] = []
    test: list[str] = []
    for q in qids:
        digest = hashlib.sha256(f"{seed}:{q}".encode()).digest()
        (fit if int.from_bytes(digest[:8], "big") / 2**64 < fraction else test).append(q)
    return fit, test
