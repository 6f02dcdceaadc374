"""OpenAIProvider and VoyageProvider: the official clients against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embedopt import Embedder, InputError, ProviderError
from embedopt.providers.openai import OpenAIProvider, local_bpe
from embedopt.providers.voyage import VoyageProvider
from embedopt.retry import RetryPolicy

from .api_server import hashed_model, server_tokens

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, max_total=5)


@pytest.fixture
def openai_api(api_server):
    server = api_server(hashed_model(1536), max_tokens=8191)
    provider = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url, kind="api",
                              truncate=True)
    return server, provider


def test_openai_wire_format_base64_order_and_usage(openai_api):
    server, provider = openai_api
    texts = ["list directory contents", "copy files", "remove files or directories"]
    e = Embedder(provider, normalize=False, retry=FAST_RETRY)
    out = e.embed_documents(texts)
    np.testing.assert_array_equal(out, hashed_model(1536)(texts, "text-embedding-3-small", None))
    body = server.bodies[-1]
    assert body["encoding_format"] == "base64" and body["model"] == "text-embedding-3-small"
    route = e.ledger.routes["openai-compatible:text-embedding-3-small"]
    assert route.tokens == server.ok_tokens["text-embedding-3-small"] == sum(server_tokens(t) for t in texts)
    assert route.usd == pytest.approx(route.tokens * 0.02 / 1e6)
    assert provider.info.price_per_1m_tokens == 0.02 and provider.info.kind == "api"


def test_openai_dimensions_and_batches_within_limits(openai_api):
    server, _ = openai_api
    provider = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url,
                              dimensions=256)
    e = Embedder(provider, retry=FAST_RETRY, show_progress=False)
    texts = [f"short text number {i}" for i in range(5000)]
    assert e.embed_documents(texts).shape == (5000, 256)
    sizes = [len(b["input"]) for b in server.bodies]
    assert max(sizes) <= 2048 and sum(sizes) == 5000 and all(b["dimensions"] == 256 for b in server.bodies)

    server.bodies.clear()
    words = " ".join(f"word{i}" for i in range(2500))  # about 7,500 cl100k tokens
    long_texts = [f"{i} {words}" for i in range(60)]   # about 450k tokens: over one request's 300k
    e.embed_documents(long_texts)
    counts = [sum(provider.count_tokens(b["input"])) for b in server.bodies]
    assert len(counts) >= 2 and max(counts) <= 300_000


def test_tokens_are_counted_offline_with_cl100k():
    bpe = local_bpe("cl100k_base")
    assert bpe is not None, "bpe-openai ships cl100k_base; install embedopt[openai]"
    assert bpe.encode_ordinary("hello world") == [15339, 1917]  # cl100k ids


def test_openai_over_long_inputs_are_cut_or_refused(openai_api):
    server, provider = openai_api
    long = "token " * 12_000  # 12,000 cl100k tokens
    Embedder(provider, retry=FAST_RETRY).embed_documents([long, "short"])
    sent = next(t for t in server.bodies[-1]["input"] if t != "short")
    assert len(local_bpe().encode_ordinary(sent)) == 8191
    with pytest.raises(InputError, match=r"text #0 has 1200\d tokens, over text-embedding-3-small's limit of 8191"):
        Embedder(provider, on_overflow="error").embed_documents([long, "short"])


def test_retry_honours_429_and_500_then_succeeds(openai_api):
    server, provider = openai_api
    server.script = ["429", "500", "malformed_json", "bad_base64", "wrong_count", "wrong_dim"]
    e = Embedder(provider, retry=RetryPolicy(max_attempts=7, base_delay=0.001, max_delay=0.01))
    assert e.embed_documents(["pidof"]).shape == (1, 1536)
    assert server.requests == 7 and sum(server.faults.values()) == 6


def test_retries_are_bounded_and_the_error_names_provider_model_status(openai_api):
    server, provider = openai_api
    server.script = ["500"] * 10
    with pytest.raises(ProviderError, match=r"text-embedding-3-small failed \(HTTP 500\)") as info:
        Embedder(provider, retry=RetryPolicy(max_attempts=3, base_delay=0.001)).embed_documents(["x"])
    assert info.value.status == 500 and info.value.retryable and server.requests == 3


def test_a_400_is_not_retried(api_server):
    server = api_server(hashed_model(1536), max_tokens=5)
    provider = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url,
                              truncate=False)
    with pytest.raises(ProviderError, match="HTTP 400") as info:
        Embedder(provider, retry=FAST_RETRY).embed_documents(["a text far longer than five tokens, surely"])
    assert info.value.status == 400 and not info.value.retryable and server.requests == 1


def test_timeouts_are_retried(api_server):
    server = api_server(hashed_model(1536), slow_seconds=1.0)
    server.script = ["slow"]
    provider = OpenAIProvider("text-embedding-3-small", api_key=server.api_key, base_url=server.url, timeout=0.3)
    assert Embedder(provider, retry=FAST_RETRY).embed_documents(["x"]).shape == (1, 1536)
    assert server.requests == 2


def test_the_api_key_never_leaks(api_server, caplog):
    server = api_server(hashed_model(1536))
    secret = "sk-live-SECRET-0123456789-abcdefghij"
    provider = OpenAIProvider("text-embedding-3-small", api_key=secret, base_url=server.url)
    voyage = VoyageProvider("voyage-3", api_key=secret, base_url=server.url)
    for p in (provider, voyage):
        with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as info:
            Embedder(p, retry=FAST_RETRY).embed_documents(["x"])
        assert info.value.status == 401 and "Incorrect API key" in str(info.value)
        text = str(info.value) + repr(info.value) + repr(p) + repr(p.info) + caplog.text
        assert "SECRET" not in text and "0123456789-abcdef" not in text
        assert info.value.__cause__ is None  # the client's exception (which may carry request details) is dropped


async def test_openai_async_path(openai_api):
    server, provider = openai_api
    e = Embedder(provider, retry=FAST_RETRY)
    server.script = ["429"]
    texts = [f"text {i}" for i in range(4100)]
    out = await e.aembed_documents(texts)
    np.testing.assert_allclose(out, e.embed_documents(texts), atol=1e-6)
    assert max(len(b["input"]) for b in server.bodies) <= 2048


# -------------------------------------------------------------------------------------------------- Voyage
@pytest.fixture
def voyage_api(api_server):
    server = api_server(hashed_model(1024))
    return server, VoyageProvider("voyage-3", api_key=server.api_key, base_url=server.url)


def test_voyage_sends_input_type_and_keeps_vectors_exact(voyage_api):
    server, provider = voyage_api
    e = Embedder(provider, normalize=False, retry=FAST_RETRY)
    doc = e.embed_documents(["copy files"])[0]
    query = e.embed_query("copy files")
    np.testing.assert_array_equal(doc, hashed_model(1024)(["copy files"], "voyage-3", "document")[0])
    np.testing.assert_array_equal(query, hashed_model(1024)(["copy files"], "voyage-3", "query")[0])
    assert [b["input_type"] for b in server.bodies] == ["document", "query"]
    assert all(b["truncation"] is True for b in server.bodies)
    assert e.ledger.routes["voyage:voyage-3"].tokens == server.ok_tokens["voyage-3"]
    assert provider.info.max_batch == 1000 and provider.info.max_batch_tokens == 320_000


def test_voyage_output_dimension_and_server_side_quantization(api_server):
    server = api_server(hashed_model(2048))
    provider = VoyageProvider("voyage-3-large", api_key=server.api_key, base_url=server.url, output_dimension=512)
    assert Embedder(provider).embed_documents(["x"]).shape == (1, 512)
    assert server.bodies[-1]["output_dimension"] == 512
    full = Embedder(provider, normalize=True).embed_documents(["a", "b"])
    binary = provider.embed_quantized(["a", "b"], "document", "binary")
    ubinary = provider.embed_quantized(["a", "b"], "document", "ubinary")
    from embedopt.quantization import quantize

    np.testing.assert_array_equal(binary, quantize(full, "binary"))  # Voyage's packing is embedopt's
    np.testing.assert_array_equal(ubinary, quantize(full, "ubinary"))
    assert provider.embed_quantized(["a"], "document", "int8").dtype == np.int8
    with pytest.raises(Exception, match="output_dimension"):
        VoyageProvider("voyage-3-large", api_key="k", output_dimension=300)


def test_voyage_retries_429_and_malformed(voyage_api):
    server, provider = voyage_api
    server.script = ["429", "malformed_json", "503"]
    assert Embedder(provider, retry=FAST_RETRY).embed_documents(["x"]).shape == (1, 1024)
    assert server.requests == 4


async def test_voyage_async(voyage_api):
    _server, provider = voyage_api
    out = await Embedder(provider, retry=FAST_RETRY).aembed_documents(["a", "b", "c"])
    assert out.shape == (3, 1024)


def test_missing_keys_say_what_to_set(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("VOYAGE_API_KEY", raising=False)
    with pytest.raises(Exception, match=r"\$OPENAI_API_KEY"):
        OpenAIProvider()
    with pytest.raises(Exception, match=r"\$VOYAGE_API_KEY"):
        VoyageProvider()
    with pytest.raises(Exception, match="dim="):
        OpenAIProvider("my-own-model", base_url="http://127.0.0.1:1/v1")


def test_the_test_server_speaks_voyage_rerank(voyage_api):
    """The loopback server also answers /v1/rerank as Voyage does (the rerank stage of issue 5 builds on it)."""
    import voyageai

    server, _ = voyage_api
    client = voyageai.Client(api_key=server.api_key, base_url=server.url, max_retries=0)
    result = client.rerank("copy files", ["copy files", "bake bread", "move files"], model="rerank-2", top_k=2)
    assert next(r.index for r in result.results) == 0 and len(result.results) == 2
    assert result.total_tokens == server.ok_tokens["rerank-2"]
