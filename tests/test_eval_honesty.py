"""Evaluation that cannot flatter (issue 23): ties independent of storage order, retention over a real baseline,
both int8 rows labelled, the bytes a rescore keeps, the document join an option."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedopt.cli import main
from embedopt.errors import ConfigError, DimensionError
from embedopt.eval import BeirDataset, join_text, load_beir, tie_keys, top_k
from embedopt.fingerprint import Fingerprint
from embedopt.quantization import Calibration, hamming_distances, int8_scores, quantize
from embedopt.stores import QuantizedIndex
from embedopt.tools.evaluate import Row, _Scorer, run_grid
from embedopt.tools.report import table

from .conftest import SAMPLE


# ------------------------------------------------------------------------------------------------------ ties
def test_top_k_orders_ties_by_the_id_key_whatever_the_column_order() -> None:
    rng = np.random.default_rng(3)
    ids = [f"doc-{i}" for i in range(200)]
    scores = rng.integers(0, 6, size=(30, 200)).astype(np.float32)  # six values over 200 columns: ties everywhere
    keys = tie_keys(ids)
    ranked = [[ids[j] for j in row] for row in top_k(scores, 10, tiebreak=keys)]
    perm = rng.permutation(200)
    again = top_k(scores[:, perm], 10, tiebreak=keys[perm])
    assert [[ids[perm[j]] for j in row] for row in again] == ranked
    best = scores.max(axis=1)
    assert all(scores[i, ids.index(r[0])] == best[i] for i, r in enumerate(ranked))
    # the same key for the same id whatever list it comes in, as str or bytes; a seed changes it
    assert tie_keys(["b", "a"])[1] == tie_keys(["a"])[0] == tie_keys([b"a"])[0] != tie_keys(["a"], seed=1)[0]
    with pytest.raises(DimensionError):
        top_k(scores, 10, tiebreak=keys[:5])


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_quantized_index_results_do_not_depend_on_the_order_rows_were_added(backend: str) -> None:
    """Regression: Hamming distances tie often and the scan kept the lowest rows, so the order of the file decided
    which of the tied documents were returned (and which made the rescore's shortlist)."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    dim, n = 16, 600  # 16 bits: 17 possible distances for 600 rows, so the cut at k always falls inside a tie
    docs, queries = _unit(rng, n, dim), _unit(rng, 8, dim)
    ids = [f"d{i:03d}" for i in range(n)]
    cal = Calibration.fit(docs)
    fp = Fingerprint("eval", "ties", "-", "document", "", dim, True)
    forward = QuantizedIndex(fp, calibration=cal, backend=backend)
    forward.add(ids, docs)
    backward = QuantizedIndex(fp, calibration=cal, backend=backend)
    backward.add(ids[::-1], docs[::-1])
    dist = np.sort(hamming_distances(quantize(queries, "ubinary"), quantize(docs, "ubinary")), axis=1)
    assert (dist[:, 9] == dist[:, 10]).all() and (dist[:, 39] == dist[:, 40]).all()  # ties across both cuts
    for rescore, over in (("none", 1.0), ("int8", 4.0)):
        a = forward.search(queries, 10, oversample=over, rescore=rescore)
        b = backward.search(queries, 10, oversample=over, rescore=rescore)
        assert a.ids == b.ids, rescore
    # deleted rows and a filter keep it so: the same survivors, the same results
    for index in (forward, backward):
        index.delete(ids[::7])
    a, b = forward.search(queries, 10, rescore="none"), backward.search(queries, 10, rescore="none")
    assert a.ids == b.ids and not set(ids[::7]) & {i for r in a.ids for i in r}


def _reordered(ds: BeirDataset, relevant_first: bool) -> BeirDataset:
    relevant = {d for rels in ds.qrels.values() for d, r in rels.items() if r > 0}
    order = sorted(ds.corpus, key=lambda d: (d not in relevant, d))
    if not relevant_first:
        order = order[::-1]
    return BeirDataset(ds.name, {d: ds.corpus[d] for d in order}, ds.queries, ds.qrels)


@pytest.fixture(scope="module")
def sorted_grids(static_model_dir):
    ds = load_beir(SAMPLE)
    options = {"models": [f"static:{static_model_dir}"], "dims": [64], "cache": "memory", "latency_queries": 2,
               "precisions": ["float32", "int8", "int8-symmetric", "binary"], "oversample": [None, 4.0],
               "show_progress": False}
    return run_grid(_reordered(ds, True), **options), run_grid(_reordered(ds, False), **options)


def _quality(row: Row) -> tuple:
    return row.label, row.ndcg_at_10, row.recall_at_100, row.mrr_at_10, row.map_at_100, row.retention


@pytest.mark.slow
def test_a_corpus_sorted_relevant_first_scores_the_same_as_reversed(sorted_grids) -> None:
    """Regression: with ties broken by row, the binary rows of a corpus whose relevant documents came first scored
    higher than the same corpus reversed."""
    first, last = sorted_grids
    assert [_quality(r) for r in first.rows] == [_quality(r) for r in last.rows]
    assert first.baselines == last.baselines


# -------------------------------------------------------------------------------------------------- retention
@pytest.mark.slow
def test_retention_is_over_float32_at_the_native_dim_even_when_the_grid_has_no_such_row(sorted_grids) -> None:
    """Regression: with --dims 256 (no float32 row at the native dim) every row printed 100% kept."""
    grid = sorted_grids[0]
    (model, baseline), = grid.baselines.items()
    assert all(r.dim == 64 for r in grid.rows) and 0 < baseline <= 1
    by = {r.label: r for r in grid.rows}
    assert by["float32"].retention == pytest.approx(by["float32"].ndcg_at_10 / baseline, abs=1e-4)
    assert by["float32"].retention < 0.95  # 64 of 256 dims of a model not trained for Matryoshka
    assert all(r.retention == pytest.approx(r.ndcg_at_10 / baseline, abs=5e-4) for r in grid.rows)
    bare = Row(model, 64, "float32", None, 256, 0.5, 0.9, 0.5, 0.5, 0.1)  # nothing to compare with
    assert bare.retention is None
    text = table(type(grid)(grid.dataset, 1, 1, [bare]), use_rich=False)
    assert "—" in text.splitlines()[-1] and "100.0%" not in text


# ------------------------------------------------------------------------------------------------------- int8
@pytest.mark.slow
def test_both_int8_rows_are_labelled_and_a_rescore_counts_the_int8_it_keeps(sorted_grids) -> None:
    by = {r.label: r for r in sorted_grids[0].rows}
    asym, sym = by["int8 docs, float query"], by["int8 symmetric"]
    assert asym.precision == "int8" and sym.precision == "int8-symmetric"
    assert asym.bytes_per_vector == sym.bytes_per_vector == asym.bytes_kept == 64
    assert asym.ndcg_at_10 == pytest.approx(by["float32"].ndcg_at_10, abs=0.01)
    assert sym.ndcg_at_10 != asym.ndcg_at_10
    assert by["binary"].bytes_per_vector == by["binary"].bytes_kept == 8
    rescored = by["binary+int8@4x"]
    assert rescored.bytes_per_vector == 8 and rescored.bytes_kept == 8 + 64  # the bits in RAM and the int8 read


def test_int8_scorers_score_exactly_and_time_a_scan_without_a_float_copy() -> None:
    rng = np.random.default_rng(1)
    docs, queries = _unit(rng, 700, 48), _unit(rng, 5, 48)
    keys = tie_keys([str(i) for i in range(700)])
    sym = _Scorer(docs, "int8-symmetric", keys)
    codes_q = quantize(queries, "int8", calibration=sym.cal)  # the query quantized with the documents' ranges
    np.testing.assert_array_equal(sym.scores(queries), int8_scores(codes_q, sym.codes))
    for scorer in (sym, _Scorer(docs, "int8", keys)):
        exact = scorer.scores(queries)
        found = scorer.timed(queries)
        if scorer.engine.startswith("faiss"):
            distances, rows = found
            np.testing.assert_allclose(np.take_along_axis(exact, rows, axis=1), distances, rtol=1e-5, atol=1e-4)
            assert not hasattr(scorer, "docs")  # no float matrix kept beside the codes
        else:
            assert found == scorer.ranked(queries, 10)


# ------------------------------------------------------------------------------------------------------- join
def test_the_document_join_is_an_option_of_the_loader() -> None:
    assert join_text("ls", "list directory contents") == "ls list directory contents"
    assert join_text("ls", "list directory contents", "colon") == "ls: list directory contents"
    assert join_text("ls", "list", "# {title}\n\n{text}") == "# ls\n\nlist"
    assert join_text("", "no title", "colon") == "no title"
    assert join_text("ls", "list", "none") == "list"
    space, colon = load_beir(SAMPLE), load_beir(SAMPLE, join="colon")
    first = space.corpus[space.doc_ids[0]]
    assert space.doc_texts()[0] == f"{first['title']} {first['text']}"
    assert colon.doc_texts()[0] == f"{first['title']}: {first['text']}" == space.doc_texts("colon")[0]
    for bad in ("colons", "{title}", "{body}"):
        with pytest.raises(ConfigError, match="join"):
            load_beir(SAMPLE, join=bad)


@pytest.mark.slow
def test_cli_eval_and_build_index_take_the_join(static_model_dir, tmp_path) -> None:
    out = tmp_path / "r.json"
    assert main(["eval", str(SAMPLE), "--models", f"static:{static_model_dir}", "--dims", "64", "--precisions",
                 "float32", "--cache", "none", "--plain", "--join", "colon", "-o", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["join"] == "colon" and data["baselines"] and data["load_seconds"]
    assert main(["build-index", str(SAMPLE), str(tmp_path / "idx"), "-m", f"static:{static_model_dir}",
                 "--join", "{title} -- {text}", "--cache", "none"]) == 0
    from embedopt.versioning import VersionedIndex

    vi = VersionedIndex(tmp_path / "idx", cache="memory")
    ds = load_beir(SAMPLE)
    text = vi.open(vi.live).get_payloads([ds.doc_ids[0]])[0]["text"]
    assert text == f"{ds.corpus[ds.doc_ids[0]]['title']} -- {ds.corpus[ds.doc_ids[0]]['text']}"
    assert main(["build-index", str(SAMPLE), str(tmp_path / "bad"), "--join", "{oops}"]) != 0


# ----------------------------------------------------------------------------------------------------- progress
def test_the_progress_bar_says_what_deduplication_and_the_cache_set_aside(fake_provider, capsys) -> None:
    from embedopt import Embedder

    embedder = Embedder(fake_provider, cache="memory", show_progress=True)
    embedder.embed_documents(["a", "b"])
    capsys.readouterr()
    embedder.embed_documents(["a", "b", "c", "c", "d"])
    bar = capsys.readouterr().err
    assert "embed documents (of 5 texts: 1 duplicates, 2 cached set aside)" in bar and "2/2" in bar
