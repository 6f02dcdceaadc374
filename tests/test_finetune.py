"""Fine-tuning on unlabeled documents: splitting, pairs (heuristic and LLM), training a real MiniLM and a real
static model, and what a trained model is to the rest of embedopt (a new fingerprint, its own cache entries,
an index moves to it only through the migration path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedopt import Embedder
from embedopt.errors import ConfigError, ProviderError
from embedopt.eval import load_beir
from embedopt.tools.finetune import (
    REPORT,
    Document,
    FinetuneSettings,
    LLMQueryWriter,
    Pair,
    finetune,
    held_out,
    heuristic_pairs,
    load_documents,
    split_documents,
    train,
)
from embedopt.tools.finetune import _batches as batches

from .conftest import SAMPLE

TINY = FinetuneSettings(max_pairs=48, batch_size=16, max_seq_length=64)


def _doc(i: int, words: int = 30) -> Document:
    body = " ".join(f"Sentence {i}-{j} says word{i} thing{j} here." for j in range(words // 5))
    return Document(f"d{i}", f"title{i}", body)


# ------------------------------------------------------------------------------------------------ documents
def test_load_documents_reads_beir_jsonl_and_text_folders(tmp_path: Path) -> None:
    beir = load_documents(SAMPLE)
    assert len(beir) == 400 and beir[0].id == load_beir(SAMPLE).doc_ids[0]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"id": "a", "text": "alpha text"}\n\n{"_id": "b", "title": "B", "text": "beta"}\n')
    assert [(d.id, d.title, d.text) for d in load_documents(jsonl)] == [("a", "", "alpha text"), ("b", "B", "beta")]
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.md").write_text("# Backups\nHow the nightly backup runs.\n")
    (folder / "sub" / "two.txt").write_text("Plain text without a heading.")
    (folder / "skip.bin").write_bytes(b"\x00")
    (folder / "empty.txt").write_text("  \n")
    docs = load_documents(folder)
    assert [(d.id, d.title, d.text) for d in docs] == [
        ("one.md", "Backups", "How the nightly backup runs."),
        ("sub/two.txt", "two", "Plain text without a heading.")]


@pytest.mark.parametrize("content, message", [
    (None, "no documents found"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "ids repeat"),
    ('{"id": "a", "text": ""}\n', "line 1 has no text"),
    ("not json\n", "line 1 is not JSON"),
])
def test_load_documents_refuses_bad_input_with_a_reason(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "empty"
    path.mkdir()
    if content is not None:
        path = tmp_path / "docs.jsonl"
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_documents(path)
    with pytest.raises(ConfigError, match=r"neither a folder nor a \.jsonl"):
        load_documents(tmp_path / "missing.csv")


def test_split_is_by_document_stable_and_independent_of_order() -> None:
    docs = load_documents(SAMPLE)
    train_docs, test_docs = split_documents(docs, test_fraction=0.2, seed=0)
    assert {d.id for d in train_docs}.isdisjoint(d.id for d in test_docs)
    assert len(train_docs) + len(test_docs) == len(docs)
    assert 0.12 < len(test_docs) / len(docs) < 0.28
    again = split_documents(list(reversed(docs)), test_fraction=0.2, seed=0)[1]
    assert {d.id for d in again} == {d.id for d in test_docs}
    assert {d.id for d in split_documents(docs, test_fraction=0.2, seed=1)[1]} != {d.id for d in test_docs}
    with pytest.raises(ConfigError, match="too few"):
        split_documents(docs[:1])


def test_heuristic_pairs_follow_the_documented_rules() -> None:
    doc = Document("x", "ls", "List directory contents in order. Sort entries alphabetically unless told otherwise. "
                              "Two words. With -l it shows a long listing of each file found.")
    pairs = heuristic_pairs([doc], per_doc=3)
    assert pairs[0] == Pair("List directory contents in order.",
                            "ls Sort entries alphabetically unless told otherwise. Two words. With -l it shows a "
                            "long listing of each file found.", "x")
    assert len(pairs) == 3 and all(p.query not in p.passage and p.passage.startswith("ls ") for p in pairs)
    assert "Two words." not in [p.query for p in pairs]  # under 3 words: never a query
    assert heuristic_pairs([Document("y", "", "Too short to split here.")]) == []
    long_first = Document("z", "", " ".join(["word"] * 60) + ". " + "More " + " ".join(["more"] * 20) + ".")
    assert len(heuristic_pairs([long_first], per_doc=1)[0].query.split()) == 32
    assert [len(heuristic_pairs([_doc(i, 40)], per_doc=2)) for i in range(3)] == [2, 2, 2]


def test_batches_never_hold_one_document_twice_and_use_every_pair() -> None:
    import random

    pairs = [Pair(f"q{i}-{j}", f"p{i}", f"d{i}") for i in range(10) for j in range(3)]
    out = batches(pairs, 8, random.Random(0))
    used = [p.query for b in out for p in b]
    assert len(set(used)) == len(used) >= len(pairs) - 1  # at most a last lone pair is left: it has no negatives
    assert all(2 <= len(b) <= 8 and len({p.doc_id for p in b}) == len(b) for b in out)
    assert batches([Pair("a", "p", "d"), Pair("b", "p", "d")], 8, random.Random(0)) == []


def test_held_out_uses_the_datasets_own_queries_on_held_out_documents_only(tmp_path: Path) -> None:
    docs = load_documents(SAMPLE)
    test_docs = split_documents(docs)[1]
    ds = held_out(SAMPLE, test_docs)
    full = load_beir(SAMPLE)
    assert set(ds.corpus) == {d.id for d in test_docs}
    assert ds.queries and all(set(ds.qrels[q]) <= set(ds.corpus) for q in ds.queries)
    assert all(ds.queries[q] == full.queries[q] for q in ds.queries)
    # a folder without judgements is scored on synthetic queries, with the query's sentence taken out
    folder = tmp_path / "plain"
    folder.mkdir()
    for d in docs[:60]:
        (folder / f"{d.id}.txt").write_text(d.text)
    synthetic = held_out(folder, split_documents(load_documents(folder))[1])
    assert synthetic.name.endswith("-synthetic") and synthetic.queries
    for q, rels in synthetic.qrels.items():
        (doc_id,) = rels
        assert synthetic.queries[q] not in synthetic.corpus[doc_id]["text"]


def test_settings_are_checked_up_front() -> None:
    for bad in ({"batch_size": 1}, {"epochs": 0}, {"test_fraction": 1.0}, {"learning_rate": 0.0}):
        with pytest.raises(ConfigError):
            FinetuneSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="too few"):
        train([Pair("q", "p", "d")], "minilm", "/nonexistent")


# --------------------------------------------------------------------------------------------------- LLM
def _llm(messages: list[dict], model: str) -> str:
    """A scripted 'LLM': two queries built from the document's first words, numbered as real models do."""
    doc = messages[-1]["content"].split("Document:\n", 1)[1]
    words = doc.split()
    return f"1. how to {' '.join(words[1:4])}\n2) what is {words[0]}\n- x\n"


def test_llm_pairs_through_the_openai_client_are_cached_and_failures_say_how_to_resume(
        api_server, tmp_path: Path) -> None:
    server = api_server(lambda texts, model, it: np.ones((len(texts), 4), np.float32))
    server.chat = _llm
    docs = [_doc(i) for i in range(5)]
    writer = LLMQueryWriter("tiny-llm", base_url=server.url, api_key=server.api_key,
                            cache_path=tmp_path / "llm.sqlite3", concurrency=2)
    assert server.api_key not in repr(writer)
    pairs = writer.pairs(docs, show_progress=False)
    assert [p.query for p in pairs[:2]] == ["how to Sentence 0-0 says", "what is title0"]
    assert len(pairs) == 10 and all(p.passage == docs[int(p.doc_id[1:])].full_text for p in pairs)
    assert server.ok_requests["tiny-llm"] == 5
    assert writer.pairs(docs, show_progress=False) == pairs  # answered from the cache
    assert server.ok_requests["tiny-llm"] == 5
    server.script = ["500"] * 10
    failing = LLMQueryWriter("tiny-llm", base_url=server.url, api_key=server.api_key, max_retries=0,
                             cache_path=tmp_path / "llm.sqlite3")
    with pytest.raises(ProviderError, match="run again to resume") as err:
        failing.pairs([_doc(9)], show_progress=False)
    assert server.api_key not in str(err.value)
    bad_key = LLMQueryWriter("tiny-llm", base_url=server.url, api_key="sk-wrong-key-123456", max_retries=0,
                             cache_path=tmp_path / "llm.sqlite3")
    with pytest.raises(ProviderError, match="HTTP 401") as err:
        bad_key.pairs([_doc(8)], show_progress=False)
    assert "sk-wrong-key-123456" not in str(err.value)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="session")
def tuned_minilm(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tuned") / "minilm-tuned"
    return finetune(SAMPLE, out, base="minilm", settings=TINY, eval_dims=[384, 64], cache="memory",
                    show_progress=False)


def test_finetune_trains_minilm_and_reports_before_and_after(tuned_minilm, minilm) -> None:
    report = tuned_minilm
    out = Path(report.output)
    meta = json.loads((out / "embedopt-finetune.json").read_text())
    assert meta["kind"] == "sentence-transformers" and meta["pairs"] == 48 and meta["steps"] == 3
    assert meta["matryoshka_dims"] == [384, 256, 128, 64] and meta["device"] == "cpu"
    assert json.loads((out / REPORT).read_text())["rows"] == report.rows
    assert [r["dim"] for r in report.rows] == [384, 64] and report.judged_by == "qrels"
    assert report.train_documents + report.test_documents == 400
    sample = held_out(SAMPLE, split_documents(load_documents(SAMPLE))[1])
    assert report.test_queries == len(sample.queries)
    # the before column is MiniLM's own score on that held-out set
    from embedopt.tools.finetune import _ndcg_by_dim

    assert _ndcg_by_dim("minilm", sample, [384], None)[384] == report.rows[0]["before"]
    tuned = Embedder.from_spec(str(out), cache=None, show_progress=False)
    assert tuned.provider.info.max_tokens == minilm.info.max_tokens  # trained at 64 tokens, saved at its own
    text = ["copy files and directories"]
    moved = float(np.abs(tuned.embed(text) - Embedder(minilm, cache=None).embed(text)).max())
    assert moved > 1e-4


def test_a_tuned_model_is_a_new_space_with_its_own_cache_entries_and_migrates(tuned_minilm, minilm,
                                                                              tmp_path: Path) -> None:
    from embedopt import versioning
    from embedopt.retrieval import Retriever
    from embedopt.specs import open_cache
    from embedopt.versioning import VersionedIndex

    out = tuned_minilm.output
    cache = open_cache("memory")
    base = Embedder(minilm, cache=cache, show_progress=False)
    tuned = Embedder.from_spec(out, cache=cache, show_progress=False)
    assert tuned.fingerprint().space_id != base.fingerprint().space_id
    base.embed(["list directory contents"])
    tuned.embed(["list directory contents"])
    assert (tuned.stats.cache_hits, tuned.stats.computed) == (0, 1)  # nothing served across spaces
    tuned.embed(["list directory contents"])
    assert tuned.stats.cache_hits == 1

    ds = load_beir(SAMPLE)
    root = tmp_path / "index"
    vi = VersionedIndex.build(root, "minilm", ds.doc_texts()[:40], ds.doc_ids[:40], cache="memory")
    with pytest.raises(ConfigError, match="two embedding spaces never meet"):
        Retriever(tuned, vi.open(vi.live))
    plan = versioning.plan(root, out)
    assert plan["same_space"] is False and plan["new_version"] == "v2"
    versioning.start(root, out, cache="memory", show_progress=False)
    versioning.cutover(root)
    live = VersionedIndex(root, cache="memory")
    assert live.live == "v2" and live.embedder("v2").fingerprint().space_id == tuned.fingerprint().space_id
    assert live.search("list directory contents", k=3)


@pytest.fixture(scope="session")
def tuned_static(static_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tuned") / "static-tuned"
    from embedopt.tools.finetune import STATIC

    return finetune(SAMPLE, out, base=f"static:{static_model_dir}", settings=STATIC, cache="memory",
                    show_progress=False)


def test_static_training_writes_a_model2vec_folder_and_helps_on_held_out_documents(tuned_static,
                                                                                   static_model_dir: Path) -> None:
    """Regression: the distilled table is stored in float16, and Adam on float16 turned every weight into NaN."""
    from model2vec import StaticModel

    report = tuned_static
    trained = StaticModel.from_pretrained(report.output)
    source = StaticModel.from_pretrained(str(static_model_dir))
    assert trained.embedding.shape == source.embedding.shape and np.isfinite(trained.embedding).all()
    assert trained.tokenizer.get_vocab() == source.tokenizer.get_vocab()
    assert report.kind == "static" and [r["dim"] for r in report.rows] == [256, 128, 64]
    # seconds of training on 320 documents' pairs: the held-out NDCG@10 rises at every dim (seeded, CPU)
    assert all(r["after"] > r["before"] for r in report.rows), report.rows
    # relative and absolute changes are named apart, each with its bootstrap interval around it
    for r in report.rows:
        assert r["absolute_change"] == pytest.approx(r["after"] - r["before"], abs=2e-4)
        assert r["relative_change"] == pytest.approx(r["after"] / r["before"] - 1, abs=1e-3)
        assert r["absolute_ci95"][0] <= r["absolute_change"] <= r["absolute_ci95"][1]
        assert r["relative_ci95"][0] <= r["relative_change"] <= r["relative_ci95"][1]
    # the sample holds out far fewer than 200 judged queries: the report says the figures are noisy
    assert report.test_queries < 200 and "held-out queries qualify" in report.warnings[0]
    assert "warning: only" in report.table() and report.bootstrap["resamples"] >= 1000


def test_bootstrap_intervals_narrow_with_more_queries_and_vanish_without_a_change() -> None:
    from embedopt.tools.finetune import _change

    rng = np.random.default_rng(5)
    widths = []
    for n in (50, 2000):
        before = rng.uniform(0, 1, n)
        after = np.clip(before + rng.normal(0.02, 0.2, n), 0, 1)
        c = _change(before, after)
        assert c["absolute_ci95"][0] < c["absolute_change"] < c["absolute_ci95"][1]
        widths.append(c["absolute_ci95"][1] - c["absolute_ci95"][0])
    assert widths[1] < widths[0] / 3
    same = _change(np.full(80, 0.5), np.full(80, 0.5))
    assert same["absolute_ci95"] == [0.0, 0.0] and same["relative_change"] == 0.0


def test_cli_distill_train_and_finetune_with_an_llm(api_server, static_model_dir: Path, tmp_path: Path) -> None:
    server = api_server(lambda texts, model, it: np.ones((len(texts), 4), np.float32))
    server.chat = _llm
    env_home = str(tmp_path / "home")
    static_out = tmp_path / "static-cli"
    cmd = [sys.executable, "-m", "embedopt.cli", "distill", "--train", str(SAMPLE), "-o", str(static_out),
           "--cache", "memory", "--no-progress", "--epochs", "1"]
    import os

    env = {**os.environ, "EMBEDOPT_HOME": str(static_model_dir.parent.parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "speed st:sentence-transformers/all-MiniLM-L6-v2:" in done.stdout
    assert "embedopt migrate plan ROOT -m " + str(static_out) in done.stdout
    report = json.loads((static_out / REPORT).read_text())
    assert report["reference"] == "st:sentence-transformers/all-MiniLM-L6-v2"
    assert [r["dim"] for r in report["rows"]] == [256, 128, 64] and all(0 < r["reference"] <= 1 for r in report["rows"])
    assert report["speed"]["after"] > 10 * report["speed"]["st:sentence-transformers/all-MiniLM-L6-v2"]

    out = tmp_path / "llm-tuned"
    cmd = [sys.executable, "-m", "embedopt.cli", "finetune", str(SAMPLE), "-o", str(out), "--llm-model", "tiny-llm",
           "--llm-base-url", server.url, "--max-pairs", "32", "--batch-size", "16",
           "--max-seq-length", "32", "--dims", "384", "--cache", "none", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EMBEDOPT_HOME": env_home, "OPENAI_API_KEY": server.api_key})
    assert done.returncode == 0, done.stderr
    report = json.loads((out / REPORT).read_text())
    assert report["pair_source"] == "llm:tiny-llm" and report["pairs"] == 32
    assert server.ok_requests["tiny-llm"] == report["train_documents"]
    assert server.api_key not in done.stdout + done.stderr

    done = subprocess.run([sys.executable, "-m", "embedopt.cli", "finetune", str(SAMPLE), "-o", str(out),
                           "--llm-base-url", server.url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--llm-base-url needs --llm-model" in done.stderr
