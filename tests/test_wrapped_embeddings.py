"""EmbedOptEmbeddings.wrap / EmbedOptEmbedding.wrap: embedopt's cache around embeddings objects a team already
uses (real LangChain and LlamaIndex classes: the deterministic fakes where quality is not the point, the real
OpenAI classes against the loopback API server where the wire is), and the HuggingFaceEmbeddings-compatible
names of the shared fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from embedopt import ConfigError
from langchain_embedopt import EmbedOptEmbeddings
from llamaindex_embedopt import EmbedOptEmbedding

from .api_server import hashed_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_a_wrapped_langchain_embeddings_is_cached_queries_and_documents_apart():
    wrapped = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=32))
    first = wrapped.embed_documents(["ls lists files", "cp copies files"])
    again = wrapped.embed_documents(["cp copies files", "ls lists files"])
    assert again == [first[1], first[0]]
    stats = wrapped.core.stats
    assert stats.computed == 2 and stats.cache_hits == 2
    wrapped.embed_query("ls lists files")  # the same text as a query is its own entry
    assert wrapped.core.stats.computed == 3
    raw = np.asarray(DeterministicFakeEmbedding(size=32).embed_documents(["ls lists files"])[0])
    np.testing.assert_allclose(first[0], raw / np.linalg.norm(raw), rtol=1e-5)  # normalized by default


def test_the_fingerprint_follows_the_class_and_model_fields():
    a = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=16)).core.fingerprint("document")
    b = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=16)).core.fingerprint("document")
    c = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=24)).core.fingerprint("document")
    assert a == b and a.space_id != c.space_id and "DeterministicFakeEmbedding" in a.id and a.dim == 16


def test_matryoshka_and_precision_apply_to_a_wrapped_model():
    wrapped = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=64), dim=16, precision="float16")
    v = np.asarray(wrapped.embed_query("mount a file system"))
    full = np.asarray(DeterministicFakeEmbedding(size=64).embed_query("mount a file system"))
    prefix = full[:16] / np.linalg.norm(full[:16])
    assert v.shape == (16,) and np.allclose(v, prefix, atol=1e-3)


async def test_async_paths_use_the_cache_too():
    wrapped = EmbedOptEmbeddings.wrap(DeterministicFakeEmbedding(size=8))
    docs = await wrapped.aembed_documents(["a b", "c d"])
    assert await wrapped.aembed_documents(["c d"]) == [docs[1]]
    assert len(await wrapped.aembed_query("a b")) == 8
    assert wrapped.core.stats.computed == 3


def test_a_model_without_a_known_dimension_asks_for_it():
    class Custom(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[float(len(t)), 1.0, 0.5] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    with pytest.raises(ConfigError, match="native_dim"):
        EmbedOptEmbeddings.wrap(Custom())
    wrapped = EmbedOptEmbeddings.wrap(Custom(), native_dim=3)
    assert len(wrapped.embed_query("abc")) == 3
    with pytest.raises(ConfigError, match="already"):
        EmbedOptEmbeddings.wrap(wrapped)
    with pytest.raises(ValueError, match="provider= is a ready model"):
        EmbedOptEmbeddings(provider=wrapped.core.provider, model_name="minilm")


def test_wrapping_the_real_openai_embeddings_caches_across_instances_and_never_keeps_the_key(api_server, tmp_path):
    """LangChain's OpenAIEmbeddings against the loopback server: a second wrapped instance over the same SQLite
    file sends nothing; the API key is in no fingerprint, repr or described field."""
    from langchain_openai import OpenAIEmbeddings

    server = api_server(hashed_model(1536))
    cache = f"memory,sqlite:{tmp_path / 'vectors.sqlite'}"
    texts = ["list directory contents", "copy files", "remove files"]

    def openai() -> OpenAIEmbeddings:  # no tiktoken download here: the texts go as they are
        return OpenAIEmbeddings(model="text-embedding-3-small", api_key=server.api_key, base_url=server.url,
                                check_embedding_ctx_length=False)

    def wrapped() -> EmbedOptEmbeddings:
        return EmbedOptEmbeddings.wrap(openai(), cache=cache)

    # One text a call: with check_embedding_ctx_length=False, OpenAIEmbeddings keeps the response's order
    # instead of its `index` fields, and this server answers in reverse order (as the API may) to catch that.
    direct = [openai().embed_documents([t])[0] for t in texts]
    before = server.requests
    first = wrapped()
    out = [first.embed_documents([t])[0] for t in texts]
    sent = server.requests
    assert sent == before + 3 and np.allclose(out, direct, atol=1e-6)
    assert np.allclose(direct, hashed_model(1536)(texts, "text-embedding-3-small", None), atol=1e-6)
    second = wrapped()
    assert second.embed_documents(texts) == out and server.requests == sent  # every vector from the cache
    provider = second.core.provider
    described = json.dumps(provider.fields) + repr(second) + repr(provider) + second.core.fingerprint().id
    assert server.api_key not in described and "api_key" not in provider.fields
    assert provider.fields["model"] == "text-embedding-3-small" and provider.info.dim == 1536
    assert provider.info.price_per_1m_tokens == 0.02  # the catalogue's price: the ledger counts what hits saved
    assert second.core.ledger.cache_usd_saved > 0


def test_the_llamaindex_twin_wraps_real_llamaindex_embeddings(api_server):
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.embeddings.openai import OpenAIEmbedding

    mock = EmbedOptEmbedding.wrap(MockEmbedding(embed_dim=12))
    assert len(mock.get_text_embedding("a")) == 12 and mock.core.fingerprint().dim == 12
    server = api_server(hashed_model(1536))
    wrapped = EmbedOptEmbedding.wrap(OpenAIEmbedding(model="text-embedding-3-small", api_key=server.api_key,
                                                     api_base=server.url))
    batch = wrapped.get_text_embedding_batch(["mount a disk", "unmount a disk"])
    sent = server.requests
    assert wrapped.get_text_embedding_batch(["unmount a disk"]) == [batch[1]] and server.requests == sent
    assert len(wrapped.get_query_embedding("mount a disk")) == 1536 and server.requests == sent + 1
    assert server.api_key not in json.dumps(wrapped.core.provider.fields) + repr(wrapped)


@pytest.mark.slow
def test_huggingface_embeddings_names_mean_the_same(tmp_path):
    """model_name, model_kwargs, encode_kwargs and cache_folder as HuggingFaceEmbeddings takes them, so swapping
    that class for EmbedOptEmbeddings keeps its arguments; on_overflow is a field too."""
    e = EmbedOptEmbeddings(model_name=MINILM, model_kwargs={"device": "cpu"},
                           encode_kwargs={"normalize_embeddings": False, "batch_size": 8},
                           cache_folder=str(tmp_path), on_overflow="error")
    assert e.core.normalize is False and e.core.on_overflow == "error"
    assert e.core.provider.batch_size == 8  # type: ignore[attr-defined]
    assert len(e.embed_query("list files")) == 384
    with pytest.raises(ValueError, match="encode_kwargs"):
        EmbedOptEmbeddings(model_name=MINILM, encode_kwargs={"convert_to_tensor": True})
