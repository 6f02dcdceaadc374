"""The registry of spec strings: parsing reads text and never builds (or distils) anything; options are checked
against what the provider takes; errors name what is valid and never echo a secret."""

from __future__ import annotations

import json

import pytest

from embedopt import ConfigError
from embedopt.cache import MemoryTier, SQLiteTier, TieredCache
from embedopt.providers._local import DEFAULT_MODEL
from embedopt.specs import (
    cache_entries,
    load_provider,
    option_names,
    parse_cache,
    parse_model,
    provider_entries,
)


def test_every_builtin_provider_and_tier_is_found_in_its_own_module():
    assert {"st", "static", "openai", "voyage"} <= set(provider_entries())
    assert {"memory", "sqlite", "redis", "rediss", "unix"} <= set(cache_entries())


@pytest.mark.parametrize(("spec", "prefix", "name"), [
    ("minilm", "st", DEFAULT_MODEL),
    ("default", "st", DEFAULT_MODEL),
    ("st:BAAI/bge-small-en-v1.5", "st", "BAAI/bge-small-en-v1.5"),
    ("static:distill", "static", "distill"),
    ("static:distill:st:some/model", "static", "distill:st:some/model"),
    ("openai:text-embedding-3-small", "openai", "text-embedding-3-small"),
    ("voyage:voyage-3", "voyage", "voyage-3"),
    ("sentence-transformers/all-mpnet-base-v2", "st", "sentence-transformers/all-mpnet-base-v2"),
])
def test_parse_names_the_provider_and_model(spec, prefix, name):
    parsed = parse_model(spec)
    assert (parsed.prefix, parsed.name) == (prefix, name)


def test_parsing_static_distill_distils_nothing(tmp_path, monkeypatch):
    """Regression: parsing `static:distill` used to distil (about 90 s) as a side effect of the providers package."""
    monkeypatch.setenv("EMBEDOPT_HOME", str(tmp_path))
    assert parse_model("static:distill").prefix == "static"
    assert list(tmp_path.iterdir()) == []


def test_a_model2vec_folder_is_claimed_by_the_static_provider(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "model2vec"}))
    assert parse_model(str(tmp_path)).prefix == "static"
    assert parse_model(str(tmp_path.parent)).prefix == "st"


@pytest.mark.parametrize("spec", ["", "   ", "st:", "nosuch:model"])
def test_bad_specs_are_refused_with_the_valid_forms(spec):
    with pytest.raises(ConfigError, match=r"st:|for example"):
        parse_model(spec)


def test_unknown_options_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option 'devise' for st: models; valid options: device"):
        load_provider("minilm", devise="cpu")
    assert "api_key" in option_names(provider_entries()["openai"])
    assert "api_key" not in option_names(provider_entries()["st"])


def test_key_env_comes_from_the_provider():
    assert parse_model("openai:text-embedding-3-small").key_env == "OPENAI_API_KEY"
    assert parse_model("voyage:voyage-3").key_env == "VOYAGE_API_KEY"
    assert parse_model("minilm").key_env is None


def test_cache_specs_parse_and_build(tmp_path):
    parts = parse_cache(f"memory:1MB, sqlite:{tmp_path / 'v.sqlite3'}")
    assert [p.entry.schemes[0] for p in parts] == ["memory", "sqlite"]
    tiers = [p.build() for p in parts]
    assert isinstance(tiers[0], MemoryTier) and tiers[0].max_bytes == 1 << 20 and isinstance(tiers[1], SQLiteTier)
    assert [p.text for p in parse_cache("default")] == ["memory", "sqlite"]
    from embedopt import open_cache

    assert isinstance(open_cache("memory"), TieredCache)


def test_a_bad_cache_spec_never_echoes_the_spec():
    """Regression: a bad cache spec used to echo the whole spec, password included."""
    with pytest.raises(ConfigError) as info:
        parse_cache("memory,redis+tls://:hunter2-secret@cache:6379/0")
    assert "hunter2" not in str(info.value) and "redis+tls" in str(info.value)
    with pytest.raises(ConfigError, match="empty cache spec"):
        parse_cache(" , ")
