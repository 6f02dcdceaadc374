import asyncio
import time

import numpy as np
import pytest

from embedopt import (
    CalibrationError,
    ConfigError,
    DimensionError,
    Embedder,
    InputError,
    MemoryTier,
    ProviderError,
)
from embedopt.cache import cache_key
from embedopt.providers import FunctionProvider


def test_empty_list_gives_empty_result(fake_provider, recorder):
    e = Embedder(fake_provider, dim=8)
    out = e.embed_documents([])
    assert out.shape == (0, 8) and out.dtype == np.float32
    assert recorder.calls == []


@pytest.mark.parametrize(("bad", "fragment"), [
    (None, "text #2 is None"),
    (42, "text #2 is a int, not a str"),
    ("", "text #2 is empty"),
    ("   \n", "text #2 is empty or only whitespace"),
])
def test_bad_text_names_its_position(fake_provider, recorder, bad, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        Embedder(fake_provider).embed_documents(["ok", "fine", bad, "later"])
    assert info.value.index == 2
    assert recorder.calls == []  # nothing was sent, nothing half-done


def test_single_string_is_not_taken_for_a_list_of_characters(fake_provider):
    with pytest.raises(InputError, match="single string"):
        Embedder(fake_provider).embed_documents("hello")
    with pytest.raises(InputError, match="must be a str"):
        Embedder(fake_provider).embed_query(["hello"])  # type: ignore[arg-type]


def test_dim_larger_than_native_says_the_native_dim(fake_provider):
    with pytest.raises(DimensionError, match="native dimension 16"):
        Embedder(fake_provider, dim=32)


def test_unknown_precision_lists_the_valid_ones(fake_provider):
    with pytest.raises(ConfigError, match=r"float32.*binary"):
        Embedder(fake_provider, precision="int4")  # type: ignore[arg-type]


def test_output_shapes_and_dtypes_per_precision(fake_provider):
    texts = [f"document {i}" for i in range(40)]
    cal = Embedder(fake_provider, dim=8).calibrate(texts)
    expected = {"float32": ((40, 8), np.float32), "float16": ((40, 8), np.float16), "int8": ((40, 8), np.int8),
                "uint8": ((40, 8), np.uint8), "binary": ((40, 1), np.int8), "ubinary": ((40, 1), np.uint8)}
    for precision, (shape, dtype) in expected.items():
        e = Embedder(fake_provider, dim=8, precision=precision, calibration=cal)
        out = e.embed_documents(texts)
        assert out.shape == shape and out.dtype == dtype, precision
        assert e.bytes_per_vector == out[0].nbytes


def test_int8_needs_a_calibration_at_the_right_dim(fake_provider):
    with pytest.raises(CalibrationError, match="calibrate"):
        Embedder(fake_provider, precision="int8")
    cal = Embedder(fake_provider, dim=8).calibrate([f"d{i}" for i in range(40)])
    with pytest.raises(CalibrationError, match="refit it at dim=16"):
        Embedder(fake_provider, precision="int8", calibration=cal)


def test_calibration_from_another_model_is_refused(fake_provider):
    other = FunctionProvider(lambda t, k: np.ones((len(t), 16)), dim=16, model="other")
    cal = Embedder(other).calibrate([f"d{i}" for i in range(40)])
    with pytest.raises(CalibrationError, match="another model"):
        Embedder(fake_provider, precision="int8", calibration=cal)


def test_truncated_output_is_the_renormalized_prefix_of_the_full_vector(fake_provider):
    full = Embedder(fake_provider).embed_documents(["alpha", "beta"])
    short = Embedder(fake_provider, dim=6).embed_documents(["alpha", "beta"])
    prefix = full[:, :6] / np.linalg.norm(full[:, :6], axis=1, keepdims=True)
    np.testing.assert_allclose(short, prefix, rtol=1e-6)


def test_cache_hit_skips_the_provider_and_keeps_queries_and_documents_apart(fake_provider, recorder):
    cache = MemoryTier()
    e = Embedder(fake_provider, cache=cache)
    doc = e.embed_documents(["same text"])
    q = e.embed_query("same text")
    assert [k for _, k in recorder.calls] == ["document", "query"]  # the query did not get the document's vector
    assert not np.allclose(doc[0], q)
    e.embed_documents(["same text"])
    e.embed_query("same text")
    assert len(recorder.calls) == 2 and e.stats.cache_hits == 2
    assert cache_key(e.fingerprint("query"), "x") != cache_key(e.fingerprint("document"), "x")


def test_one_cache_entry_serves_every_dim_and_precision(fake_provider, recorder):
    cache = MemoryTier()
    Embedder(fake_provider, cache=cache).embed_documents(["a", "b"])
    Embedder(fake_provider, cache=cache, dim=4).embed_documents(["a", "b"])
    Embedder(fake_provider, cache=cache, dim=8, precision="binary").embed_documents(["a", "b"])
    assert len(recorder.calls) == 1 and len(cache) == 2


def test_nan_from_the_provider_is_an_error_and_earlier_batches_stay_cached():
    def fn(texts, _):
        out = np.ones((len(texts), 4), dtype=np.float32)
        if "poison" in texts:
            out[texts.index("poison")] = np.nan
        return out

    cache = MemoryTier()
    e = Embedder(FunctionProvider(fn, dim=4, max_batch=2), cache=cache)
    texts = ["aaaaaaaaaa1", "aaaaaaaaaa2", "poison", "b"]  # length-sorted: the two long ones form batch 1
    with pytest.raises(ProviderError, match=r"NaN or infinity for text #2"):
        e.embed_documents(texts)
    assert len(cache) == 2  # the first batch was written back before the bad one failed


def test_wrong_shape_from_the_provider_is_an_error():
    e = Embedder(FunctionProvider(lambda t, k: np.ones((len(t), 3)), dim=4))
    with pytest.raises(ProviderError, match=r"shape \(1, 3\).*expected \(1, 4\)"):
        e.embed_documents(["x"])


def test_provider_exception_is_mapped_with_its_cause():
    def boom(texts, _):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(ProviderError, match="fake failed: RuntimeError: CUDA out of memory") as info:
        Embedder(FunctionProvider(boom, dim=4, model="fake")).embed_documents(["x"])
    assert isinstance(info.value.__cause__, RuntimeError)


class BrokenCache(MemoryTier):
    def get_many(self, keys):
        raise ConnectionError("cache down")

    def set_many(self, items, ttl=None):
        raise ConnectionError("cache down")


def test_a_failing_cache_never_fails_the_request(fake_provider, caplog):
    e = Embedder(fake_provider, cache=BrokenCache())
    out = e.embed_documents(["a", "b"])
    assert out.shape == (2, 16)
    assert e.stats.cache_errors == 2
    assert "cache read failed" in caplog.text


def test_corrupt_cached_vector_is_a_miss(fake_provider, recorder):
    cache = MemoryTier()
    e = Embedder(fake_provider, cache=cache)
    key = cache_key(e.fingerprint("document"), "a")
    cache.set_many([(key, np.full(16, np.nan, dtype=np.float32))])
    out = e.embed_documents(["a"])
    assert np.isfinite(out).all() and len(recorder.calls) == 1


def test_on_overflow_error_names_the_text():
    p = FunctionProvider(lambda t, k: np.ones((len(t), 4)), dim=4, max_tokens=5, model="tiny")
    with pytest.raises(InputError, match=r"text #1 has \d+ tokens, over tiny's limit of 5"):
        Embedder(p, on_overflow="error").embed_documents(["short", "x" * 100])
    assert Embedder(p).embed_documents(["short", "x" * 100]).shape == (2, 4)  # default: the model truncates


async def test_async_matches_sync_and_does_not_block_the_loop():
    def slow(texts, input_type):
        time.sleep(0.3)  # a blocking model call
        return np.ones((len(texts), 4), dtype=np.float32) * (1 if input_type == "query" else 2)

    e = Embedder(FunctionProvider(slow, dim=4, max_batch=2), normalize=False)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    docs = await e.aembed_documents(["a", "b", "c"])
    q = await e.aembed_query("q")
    task.cancel()
    assert ticks >= 20  # the loop kept running during ~0.9 s of blocking model calls
    np.testing.assert_array_equal(docs, e.embed_documents(["a", "b", "c"]))
    np.testing.assert_array_equal(q, np.ones(4))


async def test_async_bad_input_is_the_same_error(fake_provider):
    with pytest.raises(InputError, match="text #0 is None"):
        await Embedder(fake_provider).aembed_documents([None])


def test_repr_names_the_model_and_settings(fake_provider):
    assert "fake-hash" in repr(Embedder(fake_provider, dim=8))


def test_an_embedopt_error_from_a_provider_passes_through_unchanged():
    def refuse(texts, _):
        raise InputError("provider-side refusal", 0)

    with pytest.raises(InputError, match="provider-side refusal") as info:
        Embedder(FunctionProvider(refuse, dim=4)).embed_documents(["x"])
    assert info.value.__cause__ is None


async def test_async_rejects_a_non_iterable_with_the_same_error(fake_provider):
    with pytest.raises(InputError, match="expected a list of texts, got int"):
        await Embedder(fake_provider).aembed_documents(42)  # type: ignore[arg-type]
