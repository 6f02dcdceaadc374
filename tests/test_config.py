"""The Embedder fields both framework adapters share (embedopt.config.EmbedderFields): declared once, validated
once, keys read from the environment the same way, and ``embedder=`` alone or not at all."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from embedopt import Embedder
from embedopt.providers import FunctionProvider
from langchain_embedopt import EmbedOptEmbeddings
from llamaindex_embedopt import EmbedOptEmbedding

from .conftest import hash_vectors

ADAPTERS = [EmbedOptEmbeddings, EmbedOptEmbedding]


@pytest.mark.parametrize("cls", ADAPTERS)
def test_embedder_with_another_field_is_an_error_not_ignored(cls):
    """Regression: `embedder=` with `dim=` used to build from the embedder and silently ignore `dim`."""
    ready = Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k), dim=16))
    assert cls(embedder=ready).core is ready
    with pytest.raises((ValidationError, ValueError), match="embedder= is a ready Embedder, so dim would be ignored"):
        cls(embedder=ready, dim=8)


@pytest.mark.parametrize("cls", ADAPTERS)
def test_both_adapters_read_the_key_from_the_providers_variable(cls, monkeypatch):
    monkeypatch.setenv("VOYAGE_API_KEY", "pa-from-env-0123456789abcdef")
    e = cls(model_name="voyage:voyage-3", base_url="http://127.0.0.1:9/v1")
    assert e.api_key is not None and e.api_key.get_secret_value() == "pa-from-env-0123456789abcdef"
    assert e.core.provider._key == "pa-from-env-0123456789abcdef"
    assert "pa-from-env" not in repr(e)


@pytest.mark.parametrize("cls", ADAPTERS)
def test_the_same_fields_and_precisions(cls):
    fields = set(cls.model_fields)
    assert {"model_name", "api_key", "base_url", "cache", "dim", "precision", "calibration_path", "normalize",
            "model_kwargs", "show_progress", "embedder"} <= fields
    with pytest.raises((ValidationError, ValueError), match="binary codes belong in a store"):
        cls(model_name="minilm", precision="binary")
    with pytest.raises((ValidationError, ValueError), match="unknown option 'devise'"):
        cls(model_name="minilm", model_kwargs={"devise": "cpu"})
