"""The gateway through the real client libraries, unpatched, against a server on a free loopback port: the
openai SDK (sync, async, float, base64 — its default), the voyageai SDK (output_dtype, output_dimension, rerank),
langchain-openai's OpenAIEmbeddings (with LangChain's standard integration suite) and llama-index's
OpenAIEmbedding (its public methods and a VectorStoreIndex built and queried through it)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util

import numpy as np
import pytest

from embedopt import Embedder
from embedopt.matryoshka import truncate
from embedopt.quantization import Calibration, quantize

from .conftest import WordOverlap
from .serve_helpers import ServerThread, config

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "Binary quantization keeps one bit per dimension.",
         "How do I mount a filesystem read-only?", "Redis shares rate limits between replicas."]
CONFIG = """
[models.minilm]
spec = "minilm"
[rerankers.overlap]
spec = "test:overlap"
[rerankers.ce]
spec = "test:trained-cross-encoder"
"""


@pytest.fixture(scope="module")
def reference(minilm) -> Embedder:
    """The same model in process, no cache: what the gateway's vectors must equal."""
    return Embedder(minilm, show_progress=False)


@pytest.fixture(scope="module")
def server(minilm, trained_reranker_dir):
    from embedopt.rerank import CrossEncoderReranker

    srv = ServerThread(config(CONFIG), embedders={"minilm": Embedder(minilm, cache="memory", show_progress=False)},
                       rerankers={"overlap": WordOverlap(), "ce": CrossEncoderReranker(str(trained_reranker_dir))})
    srv.start()
    yield srv
    srv.stop()


def _close(got, want, atol=1e-5) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol)


# ------------------------------------------------------------------------------------------------------ openai
def test_openai_sync_default_is_base64_and_full_length(server, reference) -> None:
    """The openai SDK asks for base64 when the user did not choose and decodes float32 itself: a proxy that
    encodes anything else hands the user vectors a quarter (or four times) as long. Checked end to end."""
    import openai

    client = openai.OpenAI(base_url=server.base, api_key="unused", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="minilm", input=TEXTS)
    assert '"embedding":"' in raw.http_response.text  # the wire carried base64 strings
    resp = raw.parse()
    want = reference.embed_full(TEXTS)
    assert [d.index for d in resp.data] == [0, 1, 2, 3]
    assert all(len(d.embedding) == 384 for d in resp.data)
    _close([d.embedding for d in resp.data], want)
    assert resp.model == "minilm"
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0

    short = client.embeddings.create(model="minilm", input=TEXTS, dimensions=128)
    assert all(len(d.embedding) == 128 for d in short.data)
    _close([d.embedding for d in short.data], truncate(want, 128))


def test_openai_sync_float_and_explicit_base64(server, reference) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base, api_key="unused", max_retries=0)
    want = reference.embed_full(TEXTS[:2])
    floats = client.embeddings.create(model="minilm", input=TEXTS[:2], encoding_format="float", dimensions=64)
    _close([d.embedding for d in floats.data], truncate(want, 64))
    one = client.embeddings.create(model="minilm", input=TEXTS[0], encoding_format="float")
    _close([one.data[0].embedding], want[:1])
    b64 = client.embeddings.create(model="minilm", input=TEXTS[:2], encoding_format="base64", dimensions=64)
    for d, row in zip(b64.data, truncate(want, 64), strict=True):
        assert isinstance(d.embedding, str)  # asked for explicitly: the SDK leaves it encoded
        vec = np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
        assert vec.shape == (64,)
        np.testing.assert_allclose(vec, row, atol=1e-5)


def test_openai_async_concurrent_requests(server, reference) -> None:
    import openai

    texts = [f"concurrent request {i} about {TEXTS[i % 4]}" for i in range(24)]
    want = reference.embed_full(texts)

    async def go():
        client = openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0)
        try:
            return await asyncio.gather(*(client.embeddings.create(model="minilm", input=texts[i:i + 3])
                                          for i in range(0, 24, 3)))
        finally:
            await client.close()

    answers = asyncio.run(go())
    got = [d.embedding for a in answers for d in a.data]
    _close(got, want)


def test_openai_token_arrays_get_a_clear_400(server) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=[[1820, 374, 264]])
    assert "check_embedding_ctx_length=False" in str(info.value)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input=["x"])


# ------------------------------------------------------------------------------------------------------ voyage
def test_voyage_output_dtypes_and_dimensions(server, reference) -> None:
    import voyageai

    from embedopt.serve._calibration import TEXTS as CALIBRATION

    client = voyageai.Client(api_key="unused", base_url=server.base, max_retries=0)
    want = reference.embed_full(TEXTS)
    floats = client.embed(TEXTS, model="minilm", input_type="document")
    _close(floats.embeddings, want)
    assert floats.total_tokens > 0
    for dtype in ("binary", "ubinary"):
        got = client.embed(TEXTS, model="minilm", input_type="query", output_dtype=dtype, output_dimension=256)
        expected = quantize(truncate(want, 256), dtype)
        assert np.asarray(got.embeddings).shape == (4, 32)
        np.testing.assert_array_equal(np.asarray(got.embeddings), expected)
    calibration_vectors = reference.embed_full(list(CALIBRATION))
    for dtype in ("int8", "uint8"):
        got = np.asarray(client.embed(TEXTS, model="minilm", output_dtype=dtype, output_dimension=128).embeddings)
        cal = Calibration.fit(truncate(calibration_vectors, 128))
        expected = quantize(truncate(want, 128), dtype, calibration=cal)
        assert got.shape == (4, 128)
        # the same calibration texts, batched differently: a value on a bucket edge may fall one bucket over
        assert np.abs(got.astype(np.int16) - expected.astype(np.int16)).max() <= 1
        assert (got == expected).mean() > 0.99


def test_voyage_rerank_plumbing_and_cross_encoder(server) -> None:
    import voyageai

    client = voyageai.Client(api_key="unused", base_url=server.base, max_retries=0)
    docs = ["a guide to mounting filesystems", "cats and mats", "mount a filesystem read-only with mount -o ro"]
    ranked = client.rerank("mount filesystem read-only", docs, model="overlap", top_k=2)
    assert [r.index for r in ranked.results] == [2, 0]
    assert ranked.results[0].document == docs[2]
    assert ranked.results[0].relevance_score >= ranked.results[1].relevance_score
    assert ranked.total_tokens > 0

    real = client.rerank("python library for http requests",
                         ["a Python HTTP client library", "a font for terminal emulators", "GNU C compiler"],
                         model="ce")
    assert len(real.results) == 3
    assert real.results[0].index == 0


def test_cohere_shaped_rerank(server) -> None:
    import httpx

    body = {"model": "overlap", "query": "red apples", "documents": [{"text": "green pears"}, {"text": "red apples"}],
            "top_n": 1, "return_documents": True}
    r = httpx.post(f"{server.base}/rerank", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["results"] == [{"index": 1, "relevance_score": 2.0, "document": {"text": "red apples"}}]


# --------------------------------------------------------------------------------------------------- langchain
def _langchain_params(server) -> dict:
    return {"model": "minilm", "base_url": server.base, "api_key": "unused", "check_embedding_ctx_length": False,
            "max_retries": 0}


def test_langchain_openai_embeddings_never_tokenize(server, reference, monkeypatch) -> None:
    """With check_embedding_ctx_length=True (its default) langchain-openai tokenizes with tiktoken, which downloads
    cl100k_base and then sends token ids; with False it sends the text. Make any tiktoken use fail loudly."""
    import langchain_openai.embeddings.base as lc_base
    from langchain_openai import OpenAIEmbeddings

    def no_tiktoken(*args, **kwargs):
        raise AssertionError("tiktoken was asked for an encoding: it would download one")

    monkeypatch.setattr(lc_base.tiktoken, "get_encoding", no_tiktoken)
    monkeypatch.setattr(lc_base.tiktoken, "encoding_for_model", no_tiktoken)
    emb = OpenAIEmbeddings(**_langchain_params(server))
    want = reference.embed_full(TEXTS)
    _close(emb.embed_documents(TEXTS), want)
    _close([emb.embed_query(TEXTS[0])], want[:1])
    _close(asyncio.run(emb.aembed_documents(TEXTS)), want)
    short = OpenAIEmbeddings(**_langchain_params(server), dimensions=32)
    _close(short.embed_documents(TEXTS), truncate(want, 32))


if importlib.util.find_spec("langchain_tests") is not None:
    from langchain_tests.integration_tests import EmbeddingsIntegrationTests

    class TestLangChainStandardSuite(EmbeddingsIntegrationTests):
        """langchain-tests' standard integration suite, on OpenAIEmbeddings pointed at the gateway."""

        @pytest.fixture(autouse=True)
        def _gateway(self, server) -> None:
            type(self)._server = server

        @property
        def embeddings_class(self):
            from langchain_openai import OpenAIEmbeddings

            return OpenAIEmbeddings

        @property
        def embedding_model_params(self) -> dict:
            return _langchain_params(type(self)._server)


# -------------------------------------------------------------------------------------------------- llamaindex
def test_llamaindex_openai_embedding(server, reference) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    emb = OpenAIEmbedding(model_name="minilm", api_base=server.base, api_key="unused", max_retries=0)
    want = reference.embed_full(TEXTS)
    _close(emb.get_text_embedding_batch(TEXTS), want)
    _close([emb.get_query_embedding(TEXTS[1])], want[1:2])
    _close([emb.get_text_embedding(TEXTS[2])], want[2:3])

    async def both():  # one event loop: the embedding keeps its async client between calls
        return await emb.aget_text_embedding_batch(TEXTS), await emb.aget_query_embedding(TEXTS[3])

    batch, query = asyncio.run(both())
    _close(batch, want)
    _close([query], want[3:4])
    short = OpenAIEmbedding(model_name="minilm", api_base=server.base, api_key="unused", dimensions=48)
    assert len(short.get_text_embedding(TEXTS[0])) == 48


def test_llamaindex_vector_index_through_the_gateway(server) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.openai import OpenAIEmbedding

    emb = OpenAIEmbedding(model_name="minilm", api_base=server.base, api_key="unused")
    docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex.from_documents(docs, embed_model=emb)
    hits = index.as_retriever(similarity_top_k=1).retrieve("read-only mount of a file system")
    assert hits[0].node.ref_doc_id == "d2"


# ------------------------------------------------------------------------------------------------------ router
def test_router_model_from_config_falls_back_within_one_space(minilm, api_server, monkeypatch, reference) -> None:
    """[models.X] routes = [...] builds a Router: an OpenAI-compatible API serving MiniLM first, the local MiniLM
    as fallback (declared as the same weights, so the Router accepts them as one space)."""
    import httpx

    server = api_server(lambda texts, model, input_type: minilm._embed(texts, "document"))
    monkeypatch.setenv("TEST_GATEWAY_API_KEY", server.api_key)
    info = minilm.info
    cfg = config(f"""
[cache]
spec = "memory"
[models.routed]
policy = "prefer_api"
[[models.routed.routes]]
spec = "openai:{info.model}"
base_url = "{server.url}"
api_key_env = "TEST_GATEWAY_API_KEY"
options = {{ dim = {info.dim}, revision = "{info.revision}", kind = "api", price_per_1m_tokens = 0.02 }}
[[models.routed.routes]]
spec = "minilm"
name = "local"
""")
    srv = ServerThread(cfg).start()
    try:
        want = reference.embed_full(TEXTS)
        first = httpx.post(f"{srv.base}/embeddings", json={"model": "routed", "input": TEXTS[:2]})
        assert first.status_code == 200, first.text
        _close([d["embedding"] for d in first.json()["data"]], want[:2])
        assert server.ok_requests[info.model] == 1
        server.script = ["500"] * 20
        second = httpx.post(f"{srv.base}/embeddings", json={"model": "routed", "input": TEXTS[2:]})
        assert second.status_code == 200, second.text
        _close([d["embedding"] for d in second.json()["data"]], want[2:])
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'embedopt_provider_tokens{model="routed",route="local"}' in metrics
        assert server.api_key not in metrics
    finally:
        srv.stop()
