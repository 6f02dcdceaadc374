"""Static models exported to ONNX give StaticProvider's vectors in Python (onnxruntime), Node (onnxruntime-node)
and headless Chromium (onnxruntime-web, WebAssembly): the same float32 values, not merely close ones.

The Node and Chromium tests need `npm ci` in js/ (the Makefile does it); they skip only where `node` or Debian's
`chromium` is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the export needs the onnx package: pip install 'embedopt[export]'")
pytest.importorskip("onnxruntime", reason="the export needs onnxruntime: pip install 'embedopt[export]'")

from embedopt.specs import shared_provider
from embedopt.tools.export_static import MANIFEST, ExportedStatic, export_static

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def parity_texts() -> list[str]:
    """The fixed set (short, past max_length, accents, CJK, emoji, punctuation, repeats, the tokenizer's own
    special tokens as text) and a sweep over Unicode: every BMP code point and every 97th one above it, each
    between two letters, so that one code point tokenized differently changes a vector."""
    texts: list[str] = json.loads((JS / "test" / "parity-texts.json").read_text(encoding="utf-8"))
    points = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF] + list(range(0x10000, 0x110000, 97))
    for start in range(0, len(points), 120):
        texts.append(" ".join(f"x{chr(cp)}y" for cp in points[start:start + 120]))
    return texts


@pytest.fixture(scope="module")
def provider():
    return shared_provider("static:distill")


@pytest.fixture(scope="module")
def fixture(provider, tmp_path_factory) -> Path:
    """An export, the texts and StaticProvider's vectors of them, as the Node and browser runners read them."""
    root = tmp_path_factory.mktemp("js-static")
    export_static(provider, root / "model")
    texts = parity_texts()
    (root / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    vectors = np.asarray(provider.embed(texts, "document").vectors, dtype="<f4")
    vectors.tofile(root / "expected.f32")
    return root


def expected(fixture: Path) -> np.ndarray:
    texts = json.loads((fixture / "texts.json").read_text(encoding="utf-8"))
    return np.fromfile(fixture / "expected.f32", dtype="<f4").reshape(len(texts), -1)


def test_export_folder_manifest_and_python_parity(fixture, provider):
    folder = fixture / "model"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "tokenizer-tables.json", "config.json"}
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["verification"]["max_abs_diff"] == 0.0
    assert manifest["space"] == {"provider": "model2vec", "model": provider.info.model,
                                 "revision": provider.info.revision, "same_as_source": True}
    config = json.loads((folder / "config.json").read_text())
    assert (config["dim"], config["max_length"], config["normalize"]) == (provider.info.dim, 512, True)
    texts = json.loads((fixture / "texts.json").read_text(encoding="utf-8"))
    got = ExportedStatic(folder).encode(texts)
    assert float(np.abs(got - expected(fixture)).max()) <= 1e-5


def test_int8_export_is_smaller_close_and_its_own_space(fixture, provider, tmp_path):
    manifest = export_static(provider, tmp_path / "int8", int8=True)
    float_size = (fixture / "model" / "model.onnx").stat().st_size
    int8_size = (tmp_path / "int8" / "model.onnx").stat().st_size
    assert int8_size < 0.55 * float_size  # float16 table -> int8 rows and one float32 scale per row
    assert manifest["space"]["revision"] != provider.info.revision
    assert manifest["space"]["same_as_source"] is False
    texts = json.loads((fixture / "texts.json").read_text(encoding="utf-8"))[:100]
    got = ExportedStatic(tmp_path / "int8").encode(texts)
    ref = expected(fixture)[:100]
    keep = np.linalg.norm(ref, axis=1) > 0
    cosine = (got[keep] * ref[keep]).sum(axis=1) / np.linalg.norm(got[keep], axis=1)
    assert cosine.min() >= 0.999, cosine.min()


def test_export_writes_nothing_when_the_target_cannot_be_made(provider, tmp_path):
    """A bad format is refused before anything is written."""
    from embedopt.errors import ConfigError

    with pytest.raises(ConfigError, match="format"):
        export_static(provider, tmp_path / "x", format="tflite")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def _require_js() -> str:
    if NODE is None:
        pytest.skip("node is not installed (the Makefile installs Debian's nodejs)")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        pytest.fail("js/node_modules is missing: run `npm ci` in js/ (make js)")
    return NODE


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=JS, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_node_vectors_equal_python(fixture):
    node = _require_js()
    out = _run([node, "harness/node-run.mjs", "--model", str(fixture / "model"), "--texts",
                str(fixture / "texts.json"), "--expected", str(fixture / "expected.f32"), "--repeat", "1"], 120)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["max_abs_diff"] <= 1e-5, report
    assert report["texts"] == len(json.loads((fixture / "texts.json").read_text(encoding="utf-8")))


def test_node_package_tests(fixture):
    node = _require_js()
    out = _run([node, "--test", "test/"], 120, env={"EMBEDOPT_STATIC_FIXTURE": str(fixture)})
    assert "# fail 0" in out and "# skipped 0" in out, out[-2000:]


def test_chromium_vectors_equal_python(fixture):
    node = _require_js()
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (the Makefile installs Debian's chromium)")
    out = _run([node, "harness/browser-run.mjs", "--model", str(fixture / "model"),
                "--texts", str(fixture / "texts.json"), "--expected", str(fixture / "expected.f32"),
                "--repeat", "1", "--chromium", CHROMIUM, "--timeout", "150"], 200)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["max_abs_diff"] <= 1e-5, report
    assert "HeadlessChrome" in report["browser"]
