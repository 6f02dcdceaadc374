"""Fusion: RRF, DBSF and the convex combination by hand on fixed rankings (and against qdrant-client's own
RRF and DBSF), missing ids, ties, empty lists, fitting alpha, splitting queries, specs, bad input; and a hybrid
search over a real LexicalIndex and a real QuantizedIndex."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from embedopt import ConfigError, Fingerprint, InputError
from embedopt.eval import ndcg_at_k
from embedopt.fusion import (
    DBSF,
    RRF,
    Convex,
    Fusion,
    Ranking,
    convex,
    dbsf,
    fit_alpha,
    fuse_results,
    parse_fusion,
    rrf,
    split_queries,
)

HAS_QDRANT = importlib.util.find_spec("qdrant_client") is not None

DENSE = Ranking(["a", "b", "c"], [0.9, 0.5, 0.3])
LEXICAL = Ranking(["c", "d", "a"], [12.0, 7.0, 2.0])


def scores_of(r: Ranking) -> dict[str, float]:
    return dict(zip(r.ids, r.scores.tolist(), strict=True))


# ------------------------------------------------------------------------------------------- RRF
def test_rrf_by_hand_with_ties_broken_by_best_rank_then_id() -> None:
    fused = rrf([DENSE, LEXICAL], k=60)
    expected = {"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    assert scores_of(fused) == pytest.approx(expected)
    # a and c tie (each first in one list, third in the other): both have best rank 1, so by id; b and d likewise
    assert fused.ids == ["a", "c", "b", "d"]
    assert rrf([DENSE, LEXICAL], k=0).ids[:2] == ["a", "c"]
    assert rrf([DENSE, LEXICAL], k=60, limit=2).ids == ["a", "c"]


@pytest.mark.skipif(not HAS_QDRANT, reason="qdrant-client's fusion is the second implementation")
@pytest.mark.parametrize("k", [1, 60])
def test_rrf_matches_qdrant_clients_fusion(k: int) -> None:
    """qdrant-client counts positions from 0 (``1 / (k + position)``): its constant is ours plus one."""
    from qdrant_client.http import models
    from qdrant_client.hybrid.fusion import reciprocal_rank_fusion

    rng = np.random.default_rng(0)
    lists = [Ranking([f"p{i}" for i in rng.permutation(40)[:25]], np.linspace(1, 0, 25)) for _ in range(3)]
    points = [[models.ScoredPoint(id=n, version=0, score=float(s)) for n, s in
               zip((int(i[1:]) for i in r.ids), r.scores, strict=True)] for r in lists]
    theirs = {f"p{p.id}": p.score for p in reciprocal_rank_fusion(points, limit=100, ranking_constant_k=k + 1)}
    assert scores_of(rrf(lists, k=k)) == pytest.approx(theirs)


# ------------------------------------------------------------------------------------------- DBSF
def test_dbsf_by_hand() -> None:
    fused = dbsf([DENSE, LEXICAL])
    d_mean, d_std = 1.7 / 3, float(np.std([0.9, 0.5, 0.3], ddof=1))
    l_mean, l_std = 7.0, 5.0  # sample std of 12, 7, 2

    def d(s: float) -> float:
        return (s - (d_mean - 3 * d_std)) / (6 * d_std)

    def lx(s: float) -> float:
        return (s - (l_mean - 3 * l_std)) / (6 * l_std)

    expected = {"a": d(0.9) + lx(2.0), "b": d(0.5), "c": d(0.3) + lx(12.0), "d": lx(7.0)}
    assert scores_of(fused) == pytest.approx(expected)
    assert fused.ids == sorted(expected, key=lambda i: -expected[i])


def test_dbsf_maps_a_single_hit_or_equal_scores_to_one_half() -> None:
    fused = dbsf([Ranking(["a"], [3.0]), Ranking(["b", "c"], [1.0, 1.0])])
    assert scores_of(fused) == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert fused.ids == ["a", "b", "c"]  # all tied: a and b are first in a list, then by id


@pytest.mark.skipif(not HAS_QDRANT, reason="qdrant-client's fusion is the second implementation")
def test_dbsf_matches_qdrant_clients_fusion() -> None:
    from qdrant_client.http import models
    from qdrant_client.hybrid.fusion import distribution_based_score_fusion

    rng = np.random.default_rng(1)
    lists = []
    for scale in (1.0, 25.0):
        scores = np.sort(rng.random(30) * scale)[::-1]
        lists.append(Ranking([f"p{i}" for i in rng.permutation(60)[:30]], scores))
    points = [[models.ScoredPoint(id=int(i[1:]), version=0, score=float(s)) for i, s in
               zip(r.ids, r.scores, strict=True)] for r in lists]
    theirs = {f"p{p.id}": p.score for p in distribution_based_score_fusion(points, limit=100)}
    assert scores_of(dbsf(lists)) == pytest.approx(theirs)


# ------------------------------------------------------------------------------------------- convex
def test_convex_min_max_by_hand_missing_ids_get_zero() -> None:
    fused = convex(DENSE, LEXICAL, alpha=0.3)
    d = {"a": 1.0, "b": (0.5 - 0.3) / 0.6, "c": 0.0, "d": 0.0}  # d is not in the dense list: 0, its minimum
    lx = {"a": 0.0, "b": 0.0, "c": 1.0, "d": 0.5}  # b is not in the lexical list: 0
    expected = {i: 0.3 * d[i] + 0.7 * lx[i] for i in d}
    assert scores_of(fused) == pytest.approx(expected)
    assert fused.ids == ["c", "d", "a", "b"]


def test_convex_z_score_by_hand_missing_ids_get_the_lists_lowest_z() -> None:
    fused = convex(DENSE, LEXICAL, alpha=0.5, normalization="zscore")
    dz = (np.array([0.9, 0.5, 0.3]) - 1.7 / 3) / np.std([0.9, 0.5, 0.3])
    lz = (np.array([12.0, 7.0, 2.0]) - 7.0) / np.std([12.0, 7.0, 2.0])
    d = {"a": dz[0], "b": dz[1], "c": dz[2], "d": dz.min()}
    lx = {"c": lz[0], "d": lz[1], "a": lz[2], "b": lz.min()}
    assert scores_of(fused) == pytest.approx({i: 0.5 * d[i] + 0.5 * lx[i] for i in d})


def test_convex_degenerate_lists_rank_their_hits_above_what_they_lack() -> None:
    one = Ranking(["x"], [4.2])  # the only lexical match: normalizes to 1 (min-max) or 0 (z), the rest 0 or -1
    dense = Ranking(["a", "b", "x"], [0.8, 0.7, 0.1])
    assert scores_of(convex(dense, one, alpha=0.5)) == pytest.approx({"a": 0.5, "b": 0.5 * 6 / 7, "x": 0.5})
    z = (np.array([0.8, 0.7, 0.1]) - np.mean([0.8, 0.7, 0.1])) / np.std([0.8, 0.7, 0.1])
    expected = {"a": 0.5 * z[0] - 0.5, "b": 0.5 * z[1] - 0.5, "x": 0.5 * z[2]}
    assert scores_of(convex(dense, one, alpha=0.5, normalization="zscore")) == pytest.approx(expected)


def test_alpha_one_is_the_dense_order_and_zero_the_lexical_order() -> None:
    assert convex(DENSE, LEXICAL, alpha=1.0).ids[:2] == ["a", "b"]
    assert convex(DENSE, LEXICAL, alpha=0.0).ids[:2] == ["c", "d"]


@pytest.mark.parametrize("fusion", [RRF(), DBSF(), Convex(0.5), Convex(0.5, "zscore")], ids=lambda f: f.name)
def test_empty_lists(fusion: Fusion) -> None:
    empty = Ranking([], [])
    assert fusion.fuse(empty, empty).ids == []
    assert fusion.fuse(DENSE, empty).ids == DENSE.ids
    assert fusion.fuse(empty, LEXICAL).ids == LEXICAL.ids
    assert len(fusion.fuse(DENSE, LEXICAL, limit=3)) == 3


@pytest.mark.parametrize("fusion", [RRF(), DBSF(), Convex(0.5), Convex(0.5, "zscore")], ids=lambda f: f.name)
def test_ties_go_to_the_best_rank_in_any_list_then_to_the_smaller_id(fusion: Fusion) -> None:
    fused = fusion.fuse(Ranking(["q", "p"], [1.0, 1.0]), Ranking(["s", "r"], [2.0, 2.0]))
    assert len(set(fused.scores[:2].tolist())) == 1 and len(set(fused.scores[2:].tolist())) == 1  # two ties
    assert fused.ids == ["q", "s", "p", "r"]


# ------------------------------------------------------------------------------------------- fitting
def two_queries() -> tuple[dict[str, Ranking], dict[str, Ranking], dict[str, dict[str, int]]]:
    """q1 ranks its relevant r first only when alpha > 0.625, q2 only when alpha < 1 / 1.48 = 0.676: of the grid
    0, 0.05, ..., 1, only 0.65 puts both first."""
    dense = {"q1": Ranking(["r", "x", "f1"], [1.0, 0.4, 0.0]), "q2": Ranking(["x", "r", "f1"], [1.0, 0.52, 0.0])}
    lexical = {"q1": Ranking(["x", "f2", "r"], [5.0, 3.0, 1.0]), "q2": Ranking(["r", "f2", "x"], [9.0, 1.0, 0.0])}
    return dense, lexical, {"q1": {"r": 1}, "q2": {"r": 1}}


def test_fit_alpha_finds_the_only_weight_that_ranks_both_relevant_documents_first() -> None:
    dense, lexical, qrels = two_queries()
    fit = fit_alpha(dense, lexical, qrels)
    assert fit.alpha == pytest.approx(0.65)
    assert fit.ndcg[fit.alpha] == pytest.approx(1.0)
    assert fit.ndcg[0.6] < 1.0 and fit.ndcg[0.7] < 1.0
    assert fit.queries == 2 and fit.fusion == Convex(0.65)
    for q in qrels:  # the fitted fusion ranks as the fit said
        assert ndcg_at_k(fit.fusion.fuse(dense[q], lexical[q]).ids, qrels[q]) == 1.0
    assert fit.to_dict()["ndcg@10"]["0.65"] == pytest.approx(1.0)


def test_fit_alpha_prefers_the_weight_nearest_one_half_among_equals_and_uses_only_labelled_queries() -> None:
    dense = {"q": Ranking(["r", "x"], [1.0, 0.0])}
    lexical = {"q": Ranking(["r", "x"], [2.0, 1.0])}
    fit = fit_alpha(dense, lexical, {"q": {"r": 1}, "unjudged": {"x": 0}}, grid=[0.0, 0.3, 0.6, 1.0])
    assert fit.alpha == 0.6 and fit.queries == 1  # every weight ranks r first: the one nearest 0.5
    with pytest.raises(InputError, match="labelled queries"):
        fit_alpha(dense, lexical, {"q": {"r": 0}})
    with pytest.raises(ConfigError, match="alpha"):
        fit_alpha(dense, lexical, {"q": {"r": 1}}, grid=[1.5])


def test_split_queries_is_stable_disjoint_and_order_free() -> None:
    qids = [f"q{i}" for i in range(1000)]
    fit, test = split_queries(qids)
    assert not set(fit) & set(test) and sorted(fit + test) == sorted(qids)
    assert 400 < len(fit) < 600
    fit2, test2 = split_queries([*reversed(qids), "new"])
    assert set(fit) <= set(fit2) and set(test) <= set(test2)
    assert split_queries(qids, seed=1)[0] != fit
    with pytest.raises(ConfigError):
        split_queries(qids, fraction=1.0)


# ------------------------------------------------------------------------------------------- specs and input
def test_parse_fusion_specs() -> None:
    assert parse_fusion("rrf") == RRF(60) and parse_fusion("RRF:10") == RRF(10)
    assert parse_fusion("dbsf") == DBSF()
    assert parse_fusion("convex:0.7") == Convex(0.7) and parse_fusion("convex:0.2:zscore") == Convex(0.2, "zscore")
    assert parse_fusion(Convex(0.3)) == Convex(0.3)
    assert Convex(0.7, "zscore").name == "convex:0.7:zscore" and RRF().name == "rrf:60"
    for bad in ("rank", "convex", "convex:x", "convex:1.5", "convex:0.5:l2", "rrf:-1", "dbsf:3"):
        with pytest.raises(ConfigError):
            parse_fusion(bad)
    with pytest.raises(ConfigError):
        parse_fusion(3)  # type: ignore[arg-type]


def test_bad_rankings_and_options_are_refused() -> None:
    with pytest.raises(InputError, match="best first"):
        Ranking(["a", "b"], [0.1, 0.9])
    with pytest.raises(InputError, match="once"):
        Ranking(["a", "a"], [0.9, 0.1])
    with pytest.raises(InputError, match="one score per id"):
        Ranking(["a"], [0.9, 0.1])
    with pytest.raises(InputError, match="finite"):
        Ranking(["a"], [float("nan")])
    with pytest.raises(InputError, match="Ranking"):
        rrf([(["a"], [1.0])])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="alpha"):
        Convex(1.2)
    with pytest.raises(ConfigError, match="normalization"):
        convex(DENSE, LEXICAL, alpha=0.5, normalization="l2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="limit"):
        rrf([DENSE], limit=0)


# ------------------------------------------------------------------------------------------- real indexes
def test_hybrid_search_over_a_lexical_index_and_a_quantized_index_finds_what_each_alone_misses() -> None:
    """The plumbing the stores will use: one result from each side, fused per query. The dense vectors put the rare
    identifier's document last; BM25 finds it alone. Min-max and RRF put it next to the dense side's best; z-score
    and DBSF, which give a list's lone hit one unit against dense z-scores near 3, bury it below rank 10 — why
    min-max is Convex's default."""
    pytest.importorskip("bm25s")
    from embedopt.lexical import LexicalIndex, Tokenizer
    from embedopt.stores import QuantizedIndex

    fp = Fingerprint("test", "unit-vectors", "r1", "document", "", 64, True)
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50, 64)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(50)]
    rare = int(np.argmin(docs @ docs[3]))  # the document least like d3 holds the rare identifier
    texts = [f"common words number {i}" for i in range(50)]
    texts[rare] = "the error EACCES_42 explained"
    dense_index = QuantizedIndex(fp, keep_float=True)
    dense_index.add(ids, docs)
    lexical_index = LexicalIndex(tokenizer=Tokenizer(stemmer=None))
    lexical_index.add(ids, texts)
    query = docs[3] + 0.05 * rng.standard_normal(64).astype(np.float32)  # near d3
    dense = Ranking.from_result(dense_index.search(query / np.linalg.norm(query), 40, rescore="float"))
    lexical = Ranking.from_result(lexical_index.search("EACCES_42", 40))
    assert dense.ids[0] == "d3" and ids[rare] not in dense.ids and lexical.ids == [ids[rare]]
    for fusion in (RRF(), Convex(0.5)):
        assert set(fusion.fuse(dense, lexical).ids[:2]) == {"d3", ids[rare]}, fusion
    for fusion in (DBSF(), Convex(0.5, "zscore")):
        assert fusion.fuse(dense, lexical).ids.index(ids[rare]) >= 10, fusion
    # Both sides searched for two queries at once, fused per query; a filter applied to both sides.
    queries = np.stack([query / np.linalg.norm(query), docs[10]])
    both = fuse_results(dense_index.search(queries, 10, rescore="float"),
                        lexical_index.search(["EACCES_42", "number 10"], 10, allowed=["d10", "d11", "d12"]),
                        "rrf", limit=5)
    assert len(both) == 2 and both[1].ids[0] == "d10" and len(both[0]) == 5
    with pytest.raises(InputError, match="same queries"):
        fuse_results(dense_index.search(queries, 10), lexical_index.search("x", 10), "dbsf")
