"""Shared fixtures. Real models are loaded once per session; the static model is distilled once and cached."""

from __future__ import annotations

import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # prove that nothing here needs the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest

from embedopt.providers import FunctionProvider

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "manpages-sample"
MANPAGES = ROOT.parent / "shared" / "datasets" / "manpages"
DEBIAN = ROOT.parent / "shared" / "datasets" / "debian-packages"


def hash_vectors(texts: list[str], input_type: str, dim: int = 16) -> np.ndarray:
    """Deterministic pseudo-embeddings for plumbing tests: a seeded RNG per (input_type, text)."""
    rows = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(f"{input_type}|{t}".encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).standard_normal(dim))
    return np.asarray(rows, dtype=np.float32)


class Recorder:
    """A provider function that records every call it gets."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, texts: list[str], input_type: str) -> np.ndarray:
        self.calls.append((list(texts), input_type))
        return hash_vectors(texts, input_type, self.dim)

    @property
    def texts_seen(self) -> list[str]:
        return [t for batch, _ in self.calls for t in batch]


class WordOverlap:
    """A plumbing reranker: scores a document by the query words it contains, and records what it was shown.
    For adapter and pipeline behaviour only; reranking quality is measured with the cross-encoder."""

    name = "overlap"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def rank(self, query: str, documents: list[str], top_n: int | None = None) -> list:
        from embedopt.rerank import RerankResult

        self.seen.append(list(documents))
        words = set(query.lower().split())
        scores = [len(words & set(d.lower().split())) for d in documents]
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: top_n or len(documents)]
        return [RerankResult(i, float(scores[i])) for i in order]

    async def arank(self, query: str, documents: list[str], top_n: int | None = None) -> list:
        return self.rank(query, documents, top_n)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def fake_provider(recorder: Recorder) -> FunctionProvider:
    return FunctionProvider(recorder, dim=recorder.dim, model="fake-hash", max_batch=4)


@pytest.fixture(scope="session")
def minilm():
    from embedopt.providers import SentenceTransformerProvider

    return SentenceTransformerProvider("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def static_model_dir() -> Path:
    from embedopt.providers.static import cached_distill

    return cached_distill("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def static(static_model_dir: Path):
    from embedopt.providers import StaticProvider

    return StaticProvider(static_model_dir)


@pytest.fixture
def redis_server(tmp_path: Path):
    """A redis-server of this test's own on a free port (killed at the end)."""
    from .redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def api_server():
    """Start FakeEmbeddingAPI servers on free loopback ports: ``api_server(embed_fn, **options)``."""
    from .api_server import FakeEmbeddingAPI

    started = []

    def start(embed, **options):
        server = FakeEmbeddingAPI(embed, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def sample_vectors(minilm):
    """The manpages sample embedded once with MiniLM: (dataset, document vectors, query vectors, embedder)."""
    from embedopt import Embedder
    from embedopt.eval import load_beir

    ds = load_beir(SAMPLE)
    embedder = Embedder(minilm, cache="memory", show_progress=False)
    return ds, embedder.embed_documents(ds.doc_texts()), embedder.embed(ds.query_texts(), "query"), embedder


@pytest.fixture(scope="session")
def trained_reranker_dir() -> Path:
    """A small cross-encoder trained once from the packaged MiniLM weights on 100 debian-packages queries (no
    trained cross-encoder ships in any package); cached under $EMBEDOPT_HOME/rerankers."""
    from embedopt.tools.train_reranker import TrainSettings, cached_cross_encoder

    return cached_cross_encoder(DEBIAN, settings=TrainSettings(max_queries=100), show_progress=False)


@pytest.fixture(scope="session")
def exports(minilm, tmp_path_factory) -> dict[str, Path]:
    """MiniLM exported to ONNX once per session: fp32, and int8 with the default scheme, with a short probe set."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from embedopt.tools.export_onnx import PROBE_TEXTS, export_onnx

    root = tmp_path_factory.mktemp("onnx")
    probe = [*PROBE_TEXTS[:8], PROBE_TEXTS[-3]]  # short ones and one past the length limit
    export_onnx(minilm, root / "fp32", probe_texts=probe)
    export_onnx(minilm, root / "int8", quantize="int8", probe_texts=probe)
    return {"fp32": root / "fp32", "int8": root / "int8"}


@pytest.fixture(scope="session")
def onnx_fp32(exports):
    from embedopt.providers.onnx import OnnxProvider

    return OnnxProvider(exports["fp32"], threads=2)


@pytest.fixture(scope="session")
def onnx_int8(exports):
    from embedopt.providers.onnx import OnnxProvider

    return OnnxProvider(exports["int8"], threads=2)
