"""Run by `make onnx-check` in a venv holding only `pip install ".[onnx]"` (no torch): embed from an export folder.

    .venv-onnx/bin/python tests/onnx_install_check.py EXPORT_DIR

EXPORT_DIR is a folder made by `embedopt export onnx` in the full venv (the export needs torch; running it does not).
"""

import importlib.util
import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402

import embedopt  # noqa: E402
from embedopt import Embedder, MemoryTier, ModelLoadError  # noqa: E402
from embedopt.providers.onnx import OnnxProvider  # noqa: E402
from embedopt.specs import load_provider  # noqa: E402

if len(sys.argv) != 2:
    sys.exit(__doc__)
for heavy in ("torch", "transformers", "sentence_transformers"):
    assert importlib.util.find_spec(heavy) is None, f"{heavy} is installed: this is not an onnx-only venv"

provider = OnnxProvider(sys.argv[1])
embedder = Embedder(provider, cache=MemoryTier())
texts = ["How do I list the files in a directory sorted by size?", "copy files and directories", "Café 中文 😀"]
docs = embedder.embed_documents(texts)
query = embedder.embed_query("list files by size")
assert docs.shape == (3, provider.info.dim) and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
assert int(np.argmax(docs @ query)) == 0, docs @ query
assert embedder.embed_documents(texts).shape == docs.shape and embedder.stats.cache_hits == 3
assert load_provider(f"onnx:{sys.argv[1]}").info == provider.info
try:
    OnnxProvider(sys.argv[0].rsplit("/", 1)[0] or ".")
except ModelLoadError as exc:
    assert "embedopt export onnx" in str(exc), exc
else:
    sys.exit("a folder that is not an export was accepted")
for heavy in ("torch", "transformers", "sentence_transformers"):
    assert heavy not in sys.modules, f"{heavy} was imported"
print(f"onnx install ok: embedopt {embedopt.__version__}, {provider!r}, {provider.space} space, "
      f"{time.perf_counter() - started:.1f} s from start")
