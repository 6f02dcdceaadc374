"""The ONNX Runtime backend: export round trip and parity with torch, the space rule, Router, cache, threads.

MiniLM is exported twice per session (fp32, and int8 with the default scheme) from the session's torch model,
with a short probe set (the fixtures are in conftest.py: the provider contract suite runs over the fp32 export too); the file takes about a minute on the 2-core CPU, most of it the two exports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedopt import ConfigError, Embedder, MemoryTier, ModelLoadError
from embedopt.router import Router

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.slow

TEXTS = [
    "How do I list the files in a directory sorted by size?",
    "copy files and directories",
    "Café résumé naïve — 中文文本 😀",
    "grep searches for PATTERNS in each FILE. " * 60,  # past MiniLM's 256 tokens
    "a",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_writes_model_tokenizer_and_a_manifest_with_the_probe(exports, minilm, onnx_fp32):
    from embedopt.providers.onnx import MANIFEST, file_sha256

    folder = exports["fp32"]
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "model.onnx", "tokenizer.json"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "embedopt-onnx" and manifest["version"] == 1
    assert manifest["model"] == minilm.info.model == onnx_fp32.info.model
    assert manifest["source"]["revision"] == minilm.info.revision == manifest["revision"]
    assert (manifest["precision"], manifest["space"], manifest["quantization"]) == ("fp32", "shared", None)
    assert manifest["dim"] == 384 and manifest["max_tokens"] == 256 and manifest["normalized"] is True
    assert manifest["probe"]["min_cosine"] >= 0.99999 and manifest["probe"]["max_abs_diff"] < 1e-4
    assert manifest["files"]["model"]["sha256"] == file_sha256(folder / "model.onnx")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"
    info = onnx_fp32.info
    assert (info.provider, info.dim, info.max_tokens, info.kind) == ("onnx", 384, 256, "self_hosted")


def test_fp32_vectors_match_torch_through_the_embedder(minilm, onnx_fp32):
    torch_side, onnx_side = Embedder(minilm), Embedder(onnx_fp32)
    for input_type in ("document", "query"):
        want, got = torch_side.embed(TEXTS, input_type), onnx_side.embed(TEXTS, input_type)
        assert got.shape == want.shape == (len(TEXTS), 384)
        assert _cos(got, want).min() >= 0.99999
    assert onnx_fp32.count_tokens(TEXTS) == minilm.count_tokens(TEXTS)


def test_space_rule_fp32_shares_the_torch_space_int8_has_its_own(minilm, onnx_fp32, onnx_int8):
    torch_fp = Embedder(minilm).fingerprint("document")
    fp32_fp, int8_fp = Embedder(onnx_fp32).fingerprint("document"), Embedder(onnx_int8).fingerprint("document")
    assert fp32_fp.space_id == torch_fp.space_id and fp32_fp.id != torch_fp.id  # one space, two providers
    assert int8_fp.space_id != torch_fp.space_id
    assert onnx_fp32.space == "shared" and onnx_int8.space == "own"
    manifest = onnx_int8.manifest
    assert manifest["precision"] == "int8" and manifest["quantization"]["scheme"]
    assert onnx_int8.info.revision == (f"{minilm.info.revision}+onnx-int8-"
                                       f"{manifest['files']['model']['sha256'][:16]}")
    # int8 is close to the source, just not close enough to share its space
    got = Embedder(onnx_int8).embed_documents(TEXTS[:3])
    assert _cos(got, Embedder(minilm).embed_documents(TEXTS[:3])).min() > 0.95


def test_router_over_a_torch_and_an_onnx_route_of_one_model(minilm, onnx_fp32, onnx_int8):
    router = Router([onnx_fp32, minilm])
    assert min(router.verify(TEXTS).values()) >= 0.99999
    vectors = Embedder(router).embed_documents(TEXTS)
    assert _cos(vectors, Embedder(minilm).embed_documents(TEXTS)).min() >= 0.99999
    with pytest.raises(ConfigError, match="different spaces"):
        Router([minilm, onnx_int8])


def test_embedder_with_a_memory_cache_computes_each_text_once(onnx_fp32):
    embedder = Embedder(onnx_fp32, cache=MemoryTier())
    first = embedder.embed_documents(TEXTS)
    again = embedder.embed_documents(list(reversed(TEXTS)))
    assert np.array_equal(again, first[::-1])
    assert embedder.stats.computed == len(TEXTS) and embedder.stats.cache_hits == len(TEXTS)


def test_concurrent_use_from_threads_matches_sequential_results(onnx_fp32):
    """Regression guard: a shared Rust tokenizer raises "Already borrowed" when two threads use it at once."""
    batches = [[f"{t} #{i}" for t in TEXTS if len(t) < 200] for i in range(16)]
    expected = [onnx_fp32.embed(b, "document").vectors for b in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: onnx_fp32.embed(b, "document").vectors, batches))
        counts = list(pool.map(onnx_fp32.count_tokens, batches))
    for g, e in zip(got, expected, strict=True):
        assert np.allclose(g, e, atol=1e-5)
    assert counts == [onnx_fp32.count_tokens(b) for b in batches]


def test_a_folder_that_is_not_an_export_is_refused_with_how_to_make_one(tmp_path, exports):
    from embedopt.providers.onnx import OnnxProvider

    with pytest.raises(ModelLoadError, match="embedopt export onnx -m SPEC -o DIR"):
        OnnxProvider(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxProvider(tmp_path / "missing")
    (tmp_path / "embedopt-onnx.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelLoadError, match="not an embedopt ONNX manifest"):
        OnnxProvider(tmp_path)
    tampered = tmp_path / "tampered"
    shutil.copytree(exports["fp32"], tampered)
    with (tampered / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ModelLoadError, match="sha256"):
        OnnxProvider(tampered)


def test_specs_name_an_export_folder_with_or_without_the_prefix(exports):
    from embedopt.specs import load_provider, parse_model

    assert parse_model(str(exports["fp32"])).prefix == "onnx"
    provider = load_provider(f"onnx:{exports['fp32']}", threads=1, batch_size=4)
    assert provider.info.provider == "onnx" and provider.embed(TEXTS, "query").vectors.shape == (len(TEXTS), 384)


def test_export_options_are_checked_before_any_work():
    from embedopt.tools.export_onnx import export_onnx

    with pytest.raises(ConfigError, match="quantize"):
        export_onnx("minilm", "unused", quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scheme applies to int8"):
        export_onnx("minilm", "unused", scheme="per-channel")
    with pytest.raises(ConfigError, match="unknown int8 scheme"):
        export_onnx("minilm", "unused", quantize="int8", scheme="nope")
    with pytest.raises(ConfigError, match="calibration_texts"):
        export_onnx("minilm", "unused", quantize="int8", scheme="static-qdq")


def test_the_provider_runs_without_importing_torch_or_transformers(exports):
    """The [onnx] extra promises numpy + onnxruntime + tokenizers only: importing torch would cost 400 MiB."""
    code = (
        "import sys; from embedopt.providers.onnx import OnnxProvider; from embedopt import Embedder\n"
        f"v = Embedder(OnnxProvider({str(exports['fp32'])!r})).embed_documents(['hello world'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert v.shape == (1, 384) and not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_embedopt_info_says_which_space_an_export_serves_in(exports, capsys):
    from embedopt.cli import main

    for precision, space in (("fp32", "shared"), ("int8", "own")):
        assert main(["info", "-m", f"onnx:{exports[precision]}", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)["onnx"]
        assert report["precision"] == precision and report["space"].startswith(space + ":")
        assert (report["scheme"] is None) == (precision == "fp32") and report["device"] == "cpu"


def test_cuda_and_fp16_are_chosen_only_when_onnxruntime_offers_cuda(exports, onnx_fp32):
    """No GPU here: CUDA (and fp16 with it) must come only from onnxruntime's own list of execution providers."""
    import onnxruntime

    from embedopt.providers.onnx import OnnxProvider

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA: the CPU-only path is what this test checks")
    assert (onnx_fp32.device, onnx_fp32.fp16) == ("cpu", False)
    assert onnx_fp32._session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        OnnxProvider(exports["fp32"], device="cuda")
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        OnnxProvider(exports["fp32"], fp16=True)
    with pytest.raises(ConfigError, match="device must be"):
        OnnxProvider(exports["fp32"], device="gpu")
