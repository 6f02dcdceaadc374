"""Run by `make base-check` in a venv holding only `pip install embedopt` (numpy and nothing else)."""

import importlib.util
import sys

import embedopt
from embedopt import Embedder, MissingExtraError
from embedopt.providers import FunctionProvider

for heavy in ("torch", "sentence_transformers", "model2vec"):
    assert importlib.util.find_spec(heavy) is None, f"{heavy} is installed: this is not a base-only venv"

# The core works on numpy alone.
vectors = Embedder(FunctionProvider(lambda t, k: [[1.0, 2.0, 3.0, 4.0]] * len(t), dim=4), dim=2,
                   precision="binary").embed_documents(["a", "b"])
assert vectors.shape == (2, 1)

# The embedded store and the retrieval pipeline work without faiss (numpy's bitwise_count does the scan).
from embedopt.retrieval import Retriever  # noqa: E402
from embedopt.stores import QdrantStore, QuantizedIndex  # noqa: E402

docs = FunctionProvider(lambda t, k: [[float(len(x)), 1.0, -1.0, 0.5, 0.0, 2.0, -0.5, 1.5] for x in t], dim=8)
retriever = Retriever(Embedder(docs), QuantizedIndex(Embedder(docs).fingerprint("document")), k=1)
retriever.add_texts(["a", "bb", "ccc"], ids=["1", "2", "3"])
assert len(retriever.retrieve("a").hits) == 1

from embedopt.providers import SentenceTransformerProvider, StaticProvider  # noqa: E402

for cls, extra in ((SentenceTransformerProvider, "local"), (StaticProvider, "static"),
                   (lambda name: QdrantStore(Embedder(docs).fingerprint(), collection=name), "qdrant")):
    try:
        cls("anything")
    except MissingExtraError as exc:
        assert f'pip install "embedopt[{extra}]"' in str(exc), exc
        print(f"ok: {extra} -> {exc}")
    else:
        sys.exit(f"{extra} did not raise MissingExtraError")
print(f"base install ok: embedopt {embedopt.__version__} imports and runs on numpy alone")
