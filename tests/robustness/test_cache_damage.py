"""Hypothesis over damaged cache entries in every tier an Embedder reads: SQLite rows (values and expiry times of
any SQL type, damaged or foreign bytes, entries of other keys, older formats, wrong sizes, wrong norms), Redis
values (the same bytes, and keys of other Redis types) and memory entries (arrays of any shape and value). An
entry is damaged, not forged: what the tests write never is a well-formed entry bound to its own key holding a
unit vector (or all zeros, which a model gives a text with no known token), which no check short of recomputing
can tell from the real one.

Each case asserts the one acceptable outcome: the right vector (recomputed: a damaged entry is a miss), no
exception, the tier still in use (breaker closed, no errors), and the entry healed by the write-back. Bounded:
every property has max_examples and a deadline."""

from __future__ import annotations

import itertools
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedopt import Embedder, InputError
from embedopt.cache import MemoryTier, RedisTier, SQLiteTier, TieredCache, cache_key, encode_vector
from embedopt.providers import FunctionProvider

from ..conftest import hash_vectors

DIM = 16
DAMAGE = settings(max_examples=80, deadline=5_000, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_counter = itertools.count()


def _embedder(cache: object) -> Embedder:
    return Embedder(FunctionProvider(lambda t, k: hash_vectors(t, k, DIM), dim=DIM, model="fake-hash"), cache=cache,
                    show_progress=False)


def _truth(text: str) -> np.ndarray:
    v = hash_vectors([text], "document", DIM)[0]
    return v / np.linalg.norm(v)


def _fresh_text() -> str:
    return f"text number {next(_counter)}"


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@st.composite
def damaged_values(draw: st.DrawFn, key: str, good: np.ndarray) -> object:
    """What a value column or a Redis string may hold instead of ``key``'s entry: bytes or other SQL types."""
    entry = encode_vector(good, key=key)
    kind = draw(st.sampled_from(["random", "flipped", "truncated", "extended", "other_key", "unbound", "wrong_dim",
                                 "scaled", "nan", "future_format", "text", "real", "integer"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "flipped":
        raw = bytearray(entry)
        pos = draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= draw(st.integers(1, 255))
        return bytes(raw)
    if kind == "truncated":
        return entry[:draw(st.integers(0, len(entry) - 1))]
    if kind == "extended":
        return entry + draw(st.binary(min_size=1, max_size=16))
    if kind == "other_key":  # a value swapped in from another text's row: well-formed, bound to that key
        return encode_vector(good, key=key + draw(st.text(min_size=1, max_size=5)))
    if kind == "unbound":  # format 1, written by an earlier embedopt: bound to no key
        return encode_vector(good)
    if kind == "wrong_dim":
        n = draw(st.integers(1, 40).filter(lambda n: n != DIM))
        return encode_vector(np.ones(n, np.float32) / np.sqrt(n), key=key)
    if kind == "scaled":  # checksummed and bound, but of a norm a normalizing Embedder never stores
        scale = draw(st.one_of(st.floats(1e-6, 0.99), st.floats(1.01, 1e6)))
        return encode_vector(good * np.float32(scale), key=key)
    if kind == "nan":
        bad = good.copy()
        bad[draw(st.integers(0, DIM - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return _with_crc(entry[:16] + bad.astype("<f4").tobytes())
    if kind == "future_format":
        return _with_crc(b"EV" + bytes([draw(st.integers(3, 255))]) + entry[3:-4])
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "real":
        return draw(st.floats(allow_nan=False))
    return draw(st.integers(-(2**63), 2**63 - 1))  # a huge INTEGER once meant bytes(huge): MemoryError


def _check_served_and_healed(e: Embedder, text: str, hits_before: int) -> None:
    np.testing.assert_allclose(e.embed([text])[0], _truth(text), atol=1e-6)
    assert e.stats.cache_hits == hits_before  # the damaged entry was a miss ...
    np.testing.assert_allclose(e.embed([text])[0], _truth(text), atol=1e-6)
    assert e.stats.cache_hits == hits_before + 1  # ... and the write-back replaced it


# ---------------------------------------------------------------------------------------------------- SQLite
@pytest.fixture(scope="module")
def sqlite_embedder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Embedder, TieredCache]:
    cache = TieredCache([SQLiteTier(tmp_path_factory.mktemp("damage") / "c.sqlite3")])
    return _embedder(cache), cache


@DAMAGE
@given(data=st.data(), expires=st.one_of(
    st.none(), st.floats(4e9, 1e300), st.integers(4_000_000_000, 2**63 - 1), st.floats(0, 1e9),
    st.text(max_size=20), st.binary(max_size=20)))
def test_a_damaged_sqlite_row_is_a_miss_and_is_healed(sqlite_embedder, data, expires):
    """Regression (issue 17, items 4 and 9): a row of another SQL type raised TypeError or MemoryError, which
    switched the tier off; a value of another key or of the wrong norm was served as a hit."""
    e, cache = sqlite_embedder
    text = _fresh_text()
    e.embed([text])
    key = cache_key(e.fingerprint("document"), text)
    value = data.draw(damaged_values(key, _truth(text).astype(np.float32)))
    tier = cache.tier("sqlite")
    assert isinstance(tier, SQLiteTier)
    with sqlite3.connect(tier.path) as db:
        db.execute("UPDATE vectors SET value = ?, expires = ? WHERE key = ?", (value, expires, key))
    _check_served_and_healed(e, text, e.stats.cache_hits)
    report = cache.tier_stats()["sqlite"]
    assert (report["errors"], report["state"], report["trips"]) == (0, "closed", 0)


# ----------------------------------------------------------------------------------------------------- Redis
@pytest.fixture
def redis_embedder(redis_server) -> tuple[Embedder, TieredCache, object]:
    cache = TieredCache([RedisTier(redis_server.url, prefix="damage:")])
    return _embedder(cache), cache, redis_server.client()


@DAMAGE
@given(data=st.data())
def test_a_damaged_redis_value_is_a_miss_and_is_healed(redis_embedder, data):
    """The same damage in Redis, plus keys of other Redis types (a hash, a list) where the string was."""
    e, cache, client = redis_embedder
    text = _fresh_text()
    e.embed([text])
    key = cache_key(e.fingerprint("document"), text)
    full = "damage:" + key
    kind = data.draw(st.sampled_from(["value", "hash", "list"]))
    if kind == "hash":
        client.delete(full)
        client.hset(full, mapping={"v": encode_vector(_truth(text), key=key)})
    elif kind == "list":
        client.delete(full)
        client.rpush(full, b"x")
    else:
        value = data.draw(damaged_values(key, _truth(text).astype(np.float32)))
        client.set(full, value if isinstance(value, (bytes, str)) else repr(value))
    _check_served_and_healed(e, text, e.stats.cache_hits)
    report = cache.tier_stats()["redis"]
    assert (report["errors"], report["state"], report["trips"]) == (0, "closed", 0)


# ---------------------------------------------------------------------------------------------------- memory
_memory_entries = st.one_of(
    arrays(np.float32, st.integers(0, 40).filter(lambda n: n != DIM), elements=st.floats(-10, 10, width=32)),
    arrays(np.float32, DIM, elements=st.floats(width=32)),  # NaN, infinities, any norm
    arrays(np.float64, (2, DIM), elements=st.floats(-1, 1)),
    st.builds(lambda s: s, st.text(max_size=5)),
    st.lists(st.floats(-1, 1), max_size=20),
)


@DAMAGE
@given(entry=_memory_entries)
def test_a_damaged_memory_entry_is_a_miss_or_refused_when_stored(entry):
    """A MemoryTier shared with other code holds what it was given; the Embedder refuses a hit of the wrong size,
    NaN or infinity, or a norm other than 1 (or 0), and storing what is not a 1-d vector is an InputError."""
    tier = MemoryTier()
    e = _embedder(tier)
    text = _fresh_text()
    key = cache_key(e.fingerprint("document"), text)
    try:
        tier.set_many([(key, entry)])  # type: ignore[list-item]
    except InputError:
        assert np.asarray(entry, dtype=object).ndim != 1 or isinstance(entry, str)
        return
    stored = tier.get_many([key])[0]
    assert stored is not None
    with np.errstate(over="ignore"):
        norm = float(np.linalg.norm(stored)) if np.isfinite(stored).all() else np.nan
    assume(not (stored.shape == (DIM,) and (abs(norm - 1) <= 1e-3 or norm == 0)))  # undamaged-looking: a forgery
    _check_served_and_healed(e, text, 0)
    assert e.stats.cache_rejected == 1


# ------------------------------------------------------------------------------------------------ norms (#9)
def test_a_hit_of_the_wrong_norm_is_refused_but_a_models_zero_vector_is_served(static, tmp_path: Path):
    """Regression (issue 17): a well-formed entry of norm 1000 (or any norm) was returned by an Embedder with
    normalize=True. Hits are now checked: a norm more than 1e-3 from 1 is a miss, recomputed and overwritten.
    An all-zero vector is served: the static model gives one for a text holding no token it knows, and
    normalizing leaves it zero, so refusing it would recompute such texts on every call."""
    tier = SQLiteTier(tmp_path / "c.sqlite3")
    e = Embedder(static, cache=tier, show_progress=False)
    texts = ["copy files and directories", "\U00013000\U00013001"]  # the second: no token the model knows
    first = e.embed(texts)
    assert np.linalg.norm(first[1]) == 0 and abs(np.linalg.norm(first[0]) - 1) < 1e-5
    np.testing.assert_array_equal(e.embed(texts), first)
    assert e.stats.cache_hits == 2  # the zero vector is a hit like any other
    key = cache_key(e.fingerprint("document"), texts[0])
    with sqlite3.connect(tier.path) as db:
        db.execute("UPDATE vectors SET value = ? WHERE key = ?", (encode_vector(first[0] * 1000, key=key), key))
    np.testing.assert_allclose(e.embed(texts), first, atol=1e-6)
    assert e.stats.cache_rejected == 1 and e.stats.cache_hits == 3
    np.testing.assert_allclose(tier.get_many([key])[0], first[0], atol=1e-6)  # overwritten
