"""Hypothesis over what users hand embedopt: texts (every Unicode category, lone surrogates, NUL, huge, empty),
model and cache specs, and Embedder options. Each ends in the right result or a typed EmbedOptError that names
what is wrong: never a raw exception, a hang or a wrong vector. Bounded: each property has max_examples and a
deadline."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from embedopt import ConfigError, Embedder, EmbedOptError, InputError
from embedopt.cli import main
from embedopt.providers import FunctionProvider
from embedopt.specs import open_cache, parse_cache, parse_model

from ..conftest import hash_vectors

FAST = settings(max_examples=60, deadline=5_000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: Any code point: letters, marks, symbols, controls (NUL), private use, unassigned, and lone surrogates (Cs,
#: which st.characters leaves out unless asked).
_char = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\x00\ufffe\U0010ffff"))
_text = st.one_of(
    st.text(_char, max_size=40),
    st.text(st.sampled_from(" \t\n\x00\u200b\u3000"), max_size=5),   # empty, whitespace, NUL, zero-width space
    st.builds(lambda c, n: c * n, st.text(_char, min_size=1, max_size=3), st.integers(10_000, 200_000)),  # huge
)


def _first_bad(texts: list[str]) -> int | None:
    """Where the Embedder must stop: the first text that is empty/whitespace or holds a lone surrogate."""
    for i, t in enumerate(texts):
        if not t.strip() or any(0xD800 <= ord(c) <= 0xDFFF for c in t):
            return i
    return None


def _embedder(**options: object) -> Embedder:
    return Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k), dim=16, model="fake-hash"), **options)


def test_a_lone_surrogate_is_an_input_error_with_its_position_sync_async_and_cli(tmp_path, static_model_dir,
                                                                                 capsys):
    """Regression: "\\ud800" (what json.loads makes of a JSON string holding half a surrogate pair) crashed any
    cached Embedder with a raw UnicodeEncodeError from the cache key, and without a cache gave a ProviderError
    naming no position. Now: InputError with the text's index and the character's position, in embed, aembed,
    embed_query, and the CLI (exit 2, one line)."""
    texts = ["fine", json.loads('"broken \\ud800 half"')]
    for cache in ("memory", None):
        e = _embedder(cache=cache)
        for call in (lambda e=e: e.embed(texts), lambda e=e: asyncio.run(e.aembed(texts))):
            with pytest.raises(InputError, match=r"text #1 .*lone surrogate \(U\+D800\) at character 7") as info:
                call()
            assert info.value.index == 1
        with pytest.raises(InputError, match="lone surrogate"):
            e.embed_query("\udfff")
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "broken \\ud800 half"}\n', encoding="utf-8")
    out = tmp_path / "out.npy"
    code = main(["embed", str(source), "-o", str(out), "-m", f"static:{static_model_dir}", "--no-progress",
                 "--cache", "memory"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and "text #1" in err[0] and "lone surrogate" in err[0], err


@FAST
@given(texts=st.lists(_text, min_size=1, max_size=8), cache=st.sampled_from([None, "memory"]),
       use_async=st.booleans())
def test_any_texts_give_their_vectors_or_an_input_error_naming_the_first_bad_one(texts, cache, use_async):
    e = _embedder(cache=cache)
    bad = _first_bad(texts)
    try:
        got = asyncio.run(e.aembed(texts)) if use_async else e.embed(texts)
    except InputError as exc:
        assert bad is not None and exc.index == bad, (bad, exc)
        return
    assert bad is None
    expected = hash_vectors(texts, "document")
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


@settings(max_examples=25, deadline=20_000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(texts=st.lists(_text, min_size=1, max_size=4))
def test_a_real_model_takes_any_valid_text(static, texts):
    """The distilled static model behind a cached Embedder: any valid text (controls, NUL, unassigned code points,
    200k characters) gives one finite vector, the same as embedding it alone: a unit vector, or zero for a text
    holding no token the model knows (a static model's mean over no tokens; nothing to normalize)."""
    assume(_first_bad(texts) is None)
    e = Embedder(static, cache="memory")
    got = e.embed(texts)
    assert got.shape == (len(texts), static.info.dim) and np.isfinite(got).all()
    norms = np.linalg.norm(got, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0)), norms
    np.testing.assert_allclose(e.embed(texts[-1:])[0], got[-1], atol=1e-6)


@pytest.mark.parametrize("spec", ["", "   ", "openai:", "nope:model", 42, None])
def test_an_empty_or_bad_model_spec_is_refused(spec):
    """Regression: Embedder.from_spec("") loaded the current directory as a model; an empty spec (or one that names
    no model) is now a ConfigError listing the valid forms."""
    with pytest.raises(ConfigError):
        Embedder.from_spec(spec)  # type: ignore[arg-type]


@FAST
@given(spec=st.text(_char, max_size=30))
def test_any_model_spec_parses_or_is_a_config_error(spec):
    try:
        parsed = parse_model(spec)
    except ConfigError:
        return
    assert parsed.name and parsed.entry.prefix


_password = st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=8, max_size=20)


@FAST
@given(spec=st.one_of(st.text(_char, max_size=40),
                      st.builds(lambda p, s: f"memory,redis://u:{p}@h:6379/0,{s}", _password,
                                st.text(_char, max_size=10)),
                      st.builds(lambda s: f"memory:{s}", st.text(_char, max_size=10))),
       ttl=st.one_of(st.none(), st.floats(allow_nan=True)))
def test_any_cache_spec_opens_or_is_a_config_error_that_never_echoes_a_password(spec, ttl):
    """Also a regression: a ',' in a Redis password split the spec, and the unknown-tier error echoed the
    password's second half; '/', '?' and '#' cut it (refused now, see test_secrets)."""
    password = spec.split("redis://u:", 1)[1].rsplit("@h:6379", 1)[0] if "redis://u:" in spec else None
    assume(password is None or password[1:-1] not in spec.rsplit("@h:6379/0,", 1)[-1])  # not also a tier's name
    try:
        tiers = parse_cache(spec)
    except ConfigError as exc:
        if password:
            assert not any(piece in str(exc) for piece in password.split(",") if len(piece) > 3), str(exc)
        return
    assume(not any(t.entry.schemes[0] == "sqlite" for t in tiers))  # SQLite files: the other suite's domain
    try:
        cache = open_cache(spec, ttl=ttl)
    except ConfigError as exc:
        if password:
            assert password not in str(exc) and password not in repr(exc)
        return
    assert len(cache.tiers) == len(tiers)
    if password:
        assert password not in repr(cache.tiers[1]) and password not in cache.tiers[1].url


@FAST
@given(dim=st.one_of(st.none(), st.integers(-3, 40)),
       precision=st.sampled_from(["float32", "float16", "int8", "uint8", "binary", "ubinary", "fp8", ""]),
       normalize=st.booleans(),
       ttl=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-5, 5), st.booleans()),
       on_overflow=st.sampled_from(["truncate", "error", "drop"]),
       cache=st.sampled_from([None, "memory", "memory:1MB", "memory:-1", "bogus"]))
def test_any_embedder_options_build_a_working_embedder_or_a_typed_error(dim, precision, normalize, ttl,
                                                                         on_overflow, cache):
    try:
        e = _embedder(dim=dim, precision=precision, normalize=normalize, cache_ttl=ttl, on_overflow=on_overflow,
                      cache=cache)
    except EmbedOptError:
        return
    assert ttl is None or (not isinstance(ttl, bool) and 0 < ttl < math.inf)  # cache_ttl <= 0, NaN, inf refused
    out = e.embed(["one text", "another text"])
    assert out.shape[0] == 2 and out.shape[1] == e.bytes_per_vector // np.dtype(out.dtype).itemsize


@pytest.mark.parametrize("ttl", [0, -1, 0.0, float("nan"), float("inf"), True, "60"])
def test_a_cache_ttl_that_is_not_a_positive_finite_number_is_refused(ttl):
    """Regression: cache_ttl <= 0 was accepted (a TTL of 0 expires entries at once on Redis, and is an error on
    other stores); NaN and infinity also passed and failed later inside a tier."""
    with pytest.raises(ConfigError, match="cache_ttl"):
        _embedder(cache="memory", cache_ttl=ttl)
