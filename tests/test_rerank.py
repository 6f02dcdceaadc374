"""Rerankers: a sentence-transformers CrossEncoder (trained here from the packaged MiniLM weights, since no
trained cross-encoder ships in a package) and Voyage rerank through the official client on a loopback server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedopt import ConfigError, InputError, ProviderError
from embedopt.rerank import Reranker, RerankResult
from embedopt.retry import RetryPolicy

from .api_server import hashed_model

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, max_total=5)
DOCS = ["cp copies files and directories from a source to a destination",
        "bread is baked in an oven",
        "mv moves or renames files",
        "ls lists the contents of a directory, one entry per line, sorted by name " * 20]


@pytest.fixture(scope="session")
def cross_encoder(trained_reranker_dir):
    from embedopt.rerank import CrossEncoderReranker

    return CrossEncoderReranker(trained_reranker_dir, batch_size=2)


@pytest.mark.slow
def test_cross_encoder_scores_pairs_as_the_model_does_whatever_the_batching(cross_encoder):
    assert isinstance(cross_encoder, Reranker)
    ranked = cross_encoder.rank("copy files", DOCS, top_n=3)
    assert len(ranked) == 3 and all(isinstance(r, RerankResult) for r in ranked)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    # The same pairs one at a time through sentence-transformers directly (no sorting, no batching).
    direct = cross_encoder._model  # the loaded sentence_transformers.CrossEncoder
    one_by_one = np.array([float(direct.predict([("copy files", d)])[0]) for d in DOCS])
    np.testing.assert_allclose(cross_encoder.scores("copy files", DOCS), one_by_one, rtol=1e-4, atol=1e-5)
    assert [r.index for r in ranked] == list(np.argsort(-one_by_one)[:3])
    from embedopt.tools.train_reranker import TrainSettings

    assert cross_encoder.max_length == TrainSettings().max_length  # as trained; longer pairs are truncated


@pytest.mark.slow
def test_the_trained_cross_encoder_prefers_the_relevant_document(cross_encoder):
    """A sanity check of the training recipe on man pages it never saw (it trained on Debian package texts)."""
    ranked = cross_encoder.rank("copy files and directories", DOCS)
    assert ranked[0].index == 0


@pytest.mark.slow
async def test_cross_encoder_async_matches_sync_and_bad_input(cross_encoder):
    sync = cross_encoder.rank("move a file", DOCS, top_n=2)
    both = await asyncio.gather(cross_encoder.arank("move a file", DOCS, top_n=2),
                                cross_encoder.arank("move a file", DOCS, top_n=2))
    assert both[0] == both[1] == sync
    assert cross_encoder.rank("x", []) == []
    with pytest.raises(InputError):
        cross_encoder.rank("", DOCS)
    with pytest.raises(InputError):
        cross_encoder.rank("q", "one string")
    with pytest.raises(InputError, match="#1"):
        cross_encoder.rank("q", ["ok", 3])
    with pytest.raises(ConfigError):
        cross_encoder.rank("q", DOCS, top_n=0)


def test_a_missing_cross_encoder_says_what_to_do():
    from embedopt import ModelLoadError
    from embedopt.rerank import CrossEncoderReranker

    with pytest.raises(ModelLoadError, match="train-reranker"):
        CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L6-v2")  # hub model, hub switched off


@pytest.fixture
def voyage_rerank(api_server):
    from embedopt.rerank import VoyageReranker

    server = api_server(hashed_model(1024))
    return server, VoyageReranker("rerank-2", api_key=server.api_key, base_url=server.url, retry=FAST_RETRY)


def _server_order(query: str, docs: list[str]) -> list[int]:
    embed = hashed_model(1024)
    q, d = embed([query], "rerank-2", "query")[0], embed(docs, "rerank-2", "document")
    return list(np.argsort(-(d @ q)))


def test_voyage_rerank_through_the_official_client(voyage_rerank):
    server, reranker = voyage_rerank
    ranked = reranker.rank("copy files", DOCS, top_n=2)
    assert [r.index for r in ranked] == _server_order("copy files", DOCS)[:2]
    body = server.bodies[-1]
    assert body["top_k"] == 2 and body["model"] == "rerank-2" and body["truncation"] is True
    assert reranker.total_tokens == server.ok_tokens["rerank-2"] > 0
    assert server.api_key not in repr(reranker)


async def test_voyage_rerank_async_and_retries(voyage_rerank):
    server, reranker = voyage_rerank
    server.script = ["429", "500"]
    ranked = await reranker.arank("move files", DOCS)
    assert [r.index for r in ranked] == _server_order("move files", DOCS)
    assert server.faults["429"] == 1 and server.faults["500"] == 1


def test_voyage_rerank_errors_say_what_failed_and_hide_the_key(api_server):
    from embedopt.rerank import VoyageReranker

    server = api_server(hashed_model(1024))
    wrong = VoyageReranker("rerank-2", api_key="vk-wrong-key-0123456789", base_url=server.url, retry=FAST_RETRY)
    with pytest.raises(ProviderError) as info:
        wrong.rank("q", DOCS)
    assert info.value.status == 401 and "vk-wrong-key-0123456789" not in str(info.value)
    assert server.requests == 1  # a 401 is not retried
