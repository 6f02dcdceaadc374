"""Our metrics against ranx on the same runs, and the BEIR loader on the committed sample."""

import random

import numpy as np
import pytest

from embedopt.eval import evaluate, load_beir, top_k

from .conftest import SAMPLE

ranx = pytest.importorskip("ranx")


def test_metrics_match_ranx():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{i}": {d: rng.choice([1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 5))} for i in range(40)}
    run = {q: rng.sample(docs, 50) for q in qrels}
    ours = evaluate(run, qrels, ndcg_k=10, recall_k=20, mrr_k=10, map_k=30)
    scored = {q: {d: float(50 - i) for i, d in enumerate(ranked)} for q, ranked in run.items()}
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(scored), ["ndcg@10", "recall@20", "mrr@10", "map@30"])
    for metric in ("ndcg@10", "recall@20", "mrr@10", "map@30"):
        assert ours[metric] == pytest.approx(theirs[metric], abs=1e-9), metric


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3, 1, 2, 0]], dtype=np.float32)
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 3], [0, 2]])
    np.testing.assert_array_equal(top_k(scores, 2, largest=False), [[0, 2], [3, 1]])


def test_beir_loader_reads_the_committed_sample():
    ds = load_beir(SAMPLE)
    assert len(ds.corpus) == 400 and len(ds.queries) == 373
    assert all(d in ds.corpus for rels in ds.qrels.values() for d in rels)
    assert len(ds.doc_texts()) == 400 and ds.doc_texts()[0].startswith(ds.corpus[ds.doc_ids[0]]["title"])
