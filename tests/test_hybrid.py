"""Hybrid retrieval in the core: HybridStore keeps a BM25 index in step with the vectors (same ids, same texts,
deletes by id and by filter, saved in the store's folder), and the Retriever fuses both sides under one filter.
Real static model (distilled once per machine), real bm25s."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedopt import Embedder
from embedopt.errors import ConfigError, DimensionError, InputError
from embedopt.fusion import Convex, Ranking, rrf
from embedopt.hybrid import LEXICAL_FOLDER, HybridStore
from embedopt.lexical import LexicalIndex
from embedopt.retrieval import Retriever
from embedopt.stores import QuantizedIndex

from .conftest import SAMPLE

pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def sample():
    from embedopt.eval import load_beir

    return load_beir(SAMPLE)


@pytest.fixture
def embedder(static):
    return Embedder(static, cache="memory", show_progress=False)


def _section(doc_id: str) -> str:
    return doc_id.rsplit(".", 1)[-1]


@pytest.fixture
def hybrid(embedder, sample):
    store = HybridStore(QuantizedIndex(embedder.fingerprint("document")))
    retriever = Retriever(embedder, store, k=5, fusion="rrf")
    retriever.add_texts(sample.doc_texts(), ids=sample.doc_ids,
                        metadatas=[{"section": _section(i)} for i in sample.doc_ids])
    return retriever


def test_both_sides_hold_the_same_ids_and_the_embedded_text(hybrid, sample):
    store = hybrid.store
    assert isinstance(store, HybridStore)
    assert sorted(store.lexical.ids) == sorted(sample.doc_ids) == sorted(store.store.ids)
    # the BM25 side indexes exactly the text that was embedded: a query equal to a document finds it first
    doc = sample.doc_texts()[3]
    assert store.search_lexical(doc, 1).ids[0] == [sample.doc_ids[3]]


def test_hybrid_retrieve_is_the_rrf_of_both_sides(hybrid, sample):
    query = sample.query_texts()[0]
    result = hybrid.retrieve(query, 5)
    store = hybrid.store
    depth = hybrid.fusion_candidates
    vector = hybrid.embedder.embed([query], "query")
    dense = store.search(vector, depth, oversample=max(1.0, hybrid.oversample * 5 / depth))
    lexical = store.search_lexical(query, depth)
    expected = rrf([Ranking.from_result(dense), Ranking.from_result(lexical)], limit=5)
    assert [h.id for h in result.hits] == expected.ids
    assert [h.score for h in result.hits] == pytest.approx(expected.scores.tolist(), rel=1e-6)
    d_of = dict(zip(dense.ids[0], dense.scores[0].tolist(), strict=True))
    l_of = dict(zip(lexical.ids[0], lexical.scores[0].tolist(), strict=True))
    for h in result.hits:
        assert h.vector_score == (pytest.approx(d_of[h.id]) if h.id in d_of else None)
        assert h.lexical_score == (pytest.approx(l_of[h.id]) if h.id in l_of else None)
        assert h.fusion_score == pytest.approx(h.score)
        assert h.text == dict(zip(sample.doc_ids, sample.doc_texts(), strict=True))[h.id]
    assert {"embed", "dense", "lexical", "fusion", "total"} <= set(result.timings_ms)
    # per call: None is the vector search alone, another fusion is used as given
    plain = hybrid.retrieve(query, 5, fusion=None)
    assert all(h.lexical_score is None and h.fusion_score is None for h in plain.hits)
    lexical_only = hybrid.retrieve(query, 5, fusion=Convex(0.0))
    assert [h.id for h in lexical_only.hits] == lexical.ids[0][:5]


def test_filter_applies_to_both_sides(hybrid, sample):
    where = {"section": "8"}
    wanted = {i for i in sample.doc_ids if _section(i) == "8"}
    assert 5 < len(wanted) < len(sample.doc_ids)
    for query in sample.query_texts()[:5]:
        result = hybrid.retrieve(query, 5, where=where)
        assert len(result.hits) == 5 and {h.id for h in result.hits} <= wanted
        lexical = hybrid.store.search_lexical(query, 50, where=where)
        assert set(lexical.ids[0]) <= wanted
        unfiltered = hybrid.store.search_lexical(query, 50)
        assert [i for i in unfiltered.ids[0] if i in wanted] == lexical.ids[0][: len(
            [i for i in unfiltered.ids[0] if i in wanted])]


def test_deletes_reach_both_sides_by_ids_and_by_filter(hybrid, sample):
    store = hybrid.store
    first = sample.doc_ids[0]
    store.delete([first])
    assert first not in store.lexical and first not in store.store
    gone = {i for i in sample.doc_ids if _section(i) == "5"} - {first}
    assert store.delete(where={"section": "5"}) == len(gone)
    assert not gone & set(store.lexical.ids)
    assert sorted(store.lexical.ids) == sorted(store.store.ids)
    for query in sample.query_texts()[:5]:
        assert not {h.id for h in hybrid.retrieve(query, 10).hits} & (gone | {first})
    # past rebuild_fraction the BM25 statistics are recomputed without the deleted rows
    store.search_lexical("manual", 1)
    assert store.lexical.changes_since_build == 0 and store.lexical._stats_n == len(store)


def test_persistence_round_trip_gives_the_same_results(hybrid, sample, tmp_path):
    hybrid.store.delete([sample.doc_ids[1]])
    queries = sample.query_texts()[:8]
    before = [[(h.id, h.score) for h in r.hits] for r in hybrid.retrieve_many(queries, 5, where={"section": "1"})]
    folder = hybrid.store.save(tmp_path / "index")
    assert (folder / "index.json").is_file() and (folder / LEXICAL_FOLDER / "lexical.json").is_file()
    loaded = HybridStore.load(folder, expect=hybrid.embedder.fingerprint("document"))
    assert len(loaded.lexical) == len(loaded) == len(sample.doc_ids) - 1
    again = Retriever(hybrid.embedder, loaded, k=5, fusion="rrf")
    after = [[(h.id, h.score) for h in r.hits] for r in again.retrieve_many(queries, 5, where={"section": "1"})]
    assert after == before
    # a store saved without its lexical side gets one rebuilt from the payloads' texts
    hybrid.store.store.save(tmp_path / "plain")
    rebuilt = HybridStore.load(tmp_path / "plain")
    assert sorted(rebuilt.lexical.ids) == sorted(loaded.lexical.ids)
    assert rebuilt.search_lexical(queries[0], 5).ids == loaded.search_lexical(queries[0], 5).ids


def test_async_matches_sync(hybrid, sample):
    query = sample.query_texts()[2]
    sync = hybrid.retrieve(query, 5, where={"section": "1"})
    hits = asyncio.run(hybrid.aretrieve(query, 5, where={"section": "1"})).hits
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in sync.hits]


def test_bad_setups_and_input_are_refused_and_change_nothing(embedder, sample):
    plain = QuantizedIndex(embedder.fingerprint("document"))
    with pytest.raises(ConfigError, match="HybridStore"):
        Retriever(embedder, plain, fusion="rrf")
    with pytest.raises(ConfigError, match="text_key"):
        Retriever(embedder, HybridStore(plain), fusion="rrf", text_key="page_content")
    with pytest.raises(ConfigError, match="fusion spec"):
        Retriever(embedder, HybridStore(plain), fusion="rrrf")
    with pytest.raises(ConfigError, match="already"):
        HybridStore(HybridStore(plain))
    store = HybridStore(plain)
    vectors = embedder.embed_documents(sample.doc_texts()[:3])
    with pytest.raises(InputError, match="no text"):
        store.add(sample.doc_ids[:3], vectors, [{"title": "x"}] * 3)
    with pytest.raises(DimensionError):
        store.add(sample.doc_ids[:3], vectors[:, :5], [{"text": t} for t in sample.doc_texts()[:3]])
    assert len(store) == len(store.lexical) == 0
    store.add(sample.doc_ids[:3], vectors, [{"title": "x"}] * 3, texts=sample.doc_texts()[:3])
    assert len(store) == len(store.lexical) == 3


def test_lexical_index_settings_are_kept(embedder, sample, tmp_path):
    from embedopt.lexical import Tokenizer

    lexical = LexicalIndex(tokenizer=Tokenizer(stemmer=None), k1=1.5, rebuild_fraction=None)
    store = HybridStore(QuantizedIndex(embedder.fingerprint("document")), lexical)
    Retriever(embedder, store).add_texts(sample.doc_texts()[:40], ids=sample.doc_ids[:40])
    loaded = HybridStore.load(store.save(tmp_path / "i"))
    assert loaded.lexical.k1 == 1.5 and loaded.lexical.tokenizer.stemmer is None
    assert loaded.lexical.rebuild_fraction is None
    q = sample.query_texts()[0]
    assert np.allclose(loaded.search_lexical(q, 10).scores[0], store.search_lexical(q, 10).scores[0])


# ------------------------------------------------------------------------------------------- eval --fusion
def test_eval_fusion_fits_on_one_part_and_scores_on_the_other(static_model_dir, sample, tmp_path):
    """The weight is never fit on the queries it is scored on: relabelling the test queries changes the scores
    but not the weight, and the CLI's JSON lists two disjoint parts."""
    import dataclasses
    import json

    from embedopt.cli import main
    from embedopt.fusion import split_queries
    from embedopt.tools.hybrid import run_fusion_eval

    out = tmp_path / "fusion.json"
    assert main(["eval", str(SAMPLE), "--fusion", "--models", f"static:{static_model_dir}", "--cache", "memory",
                 "-o", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    fit, test = report["fit_queries"], report["test_queries"]
    labelled = [q for q in sample.query_ids if any(v > 0 for v in sample.qrels.get(q, {}).values())]
    assert not set(fit) & set(test) and sorted(fit + test) == sorted(labelled)
    assert (fit, test) == tuple(split_queries(labelled))
    assert set(report["rows"]) == {"bm25", "dense", "rrf", "dbsf", "convex"}
    assert report["fusion_spec"] == f"convex:{report['alpha']:g}"
    assert all(0 <= r["ndcg@10"] <= 1 for r in report["rows"].values())

    # relabel every test query with a document it is not about: the weight and the fit curve stay, scores move
    rng = np.random.default_rng(0)
    wrong = {q: {sample.doc_ids[int(rng.integers(len(sample.doc_ids)))]: 1} for q in test}
    relabelled = dataclasses.replace(sample, qrels={**sample.qrels, **wrong})
    model = f"static:{static_model_dir}"
    a = run_fusion_eval(sample, model=model, cache="memory", show_progress=False)
    b = run_fusion_eval(relabelled, model=model, cache="memory", show_progress=False)
    assert (a.alpha, a.fit_curve, a.fit_queries) == (b.alpha, b.fit_curve, b.fit_queries) == (
        report["alpha"], report["fit_curve"], fit)
    assert a.rows != b.rows and b.rows["bm25"]["ndcg@10"] < a.rows["bm25"]["ndcg@10"]


# ------------------------------------------------------------------------------------------- Qdrant sparse
@pytest.fixture
def qdrant_hybrid(embedder, sample):
    pytest.importorskip("qdrant_client")
    from embedopt.stores import QdrantStore

    store = QdrantStore(embedder.fingerprint("document"), collection="docs", sparse=True, quantization="none")
    retriever = Retriever(embedder, store, k=5, fusion="rrf")
    retriever.add_texts(sample.doc_texts(), ids=sample.doc_ids,
                        metadatas=[{"section": _section(i)} for i in sample.doc_ids])
    return retriever


def test_qdrant_sparse_bm25_with_idf_fused_server_side_under_one_filter(qdrant_hybrid, sample):
    store = qdrant_hybrid.store
    docs = sample.doc_texts()
    for n in (3, 17, 40):  # a document's own text finds it first: the sparse vectors hold the embedded text
        assert store.search_lexical(docs[n], 1).ids[0] == [sample.doc_ids[n]]
    query = sample.query_texts()[0]
    vector = qdrant_hybrid.embedder.embed([query], "query")
    dense, lexical = store.search(vector, 30), store.search_lexical(query, 30)
    fused = store.search_fused(vector, [query], 10, fusion="rrf", candidates=30)
    client_side = rrf([Ranking.from_result(dense), Ranking.from_result(lexical)], limit=10)
    assert fused.ids[0][:5] == client_side.ids[:5]
    assert set(fused.ids[0]) <= set(dense.ids[0]) | set(lexical.ids[0])
    where = {"section": "1"}
    for how in ("rrf", "dbsf"):
        hits = store.search_fused(vector, [query], 8, fusion=how, where=where)
        assert len(hits.ids[0]) == 8 and all(p["section"] == "1" for p in hits.payloads[0])
    assert all(p["section"] == "1" for p in store.search_lexical(query, 8, where=where).payloads[0])
    with pytest.raises(ConfigError, match="client-side"):
        store.search_fused(vector, [query], 5, fusion="convex:0.5")
    # the Retriever fuses a sparse Qdrant store client-side, any fusion, with the filter on both sides
    result = qdrant_hybrid.retrieve(query, 5, where=where, fusion="convex:0.5")
    assert len(result.hits) == 5 and all(h.payload["section"] == "1" for h in result.hits)
    assert any(h.lexical_score is not None for h in result.hits)


def test_qdrant_sparse_refuses_text_less_points_and_other_settings(qdrant_hybrid, embedder, sample):
    from embedopt.stores import QdrantStore

    store = qdrant_hybrid.store
    with pytest.raises(InputError, match="sparse"):
        store.add(["x"], embedder.embed_documents(["x"]), [{"section": "1"}])
    assert "x" not in [r.id for r in store.get(["x"])]
    with pytest.raises(ConfigError, match="sparse"):
        QdrantStore(embedder.fingerprint("document"), collection="docs", client=store.client, quantization="none",
                    activate=False)


def test_edge_store_gets_hybrid_through_hybrid_store_and_reopens(embedder, sample, tmp_path):
    pytest.importorskip("qdrant_edge")
    from embedopt.stores import EdgeStore

    store = HybridStore(EdgeStore(embedder.fingerprint("document"), tmp_path / "edge"))
    retriever = Retriever(embedder, store, k=5, fusion="rrf")
    retriever.add_texts(sample.doc_texts()[:120], ids=sample.doc_ids[:120],
                        metadatas=[{"section": _section(i)} for i in sample.doc_ids[:120]])
    queries = sample.query_texts()[:4]
    before = [[h.id for h in r.hits] for r in retriever.retrieve_many(queries, 5, where={"section": "1"})]
    assert all(_section(i) == "1" for ids in before for i in ids)
    store.save(tmp_path / "edge")
    store.close()
    reopened = HybridStore.load(tmp_path / "edge", store=EdgeStore.open_live(tmp_path / "edge"))
    again = Retriever(embedder, reopened, k=5, fusion="rrf")
    assert [[h.id for h in r.hits] for r in again.retrieve_many(queries, 5, where={"section": "1"})] == before
