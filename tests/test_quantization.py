import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedopt import Calibration, CalibrationError, DimensionError
from embedopt.matryoshka import l2_normalize
from embedopt.quantization import (
    bytes_per_vector,
    dequantize,
    float_int8_scores,
    hamming_distances,
    int8_scores,
    quantize,
)


@pytest.fixture
def vectors():
    return l2_normalize(np.random.default_rng(1).standard_normal((200, 48)))


def test_int8_round_trip_is_within_one_step(vectors):
    cal = Calibration.fit(vectors)
    codes = quantize(vectors, "int8", calibration=cal)
    assert codes.dtype == np.int8 and codes.shape == vectors.shape
    back = dequantize(codes, cal)
    assert np.all(np.abs(back - vectors) <= cal.steps * 0.5 + 1e-6)


def test_uint8_and_int8_codes_differ_by_128(vectors):
    cal = Calibration.fit(vectors)
    u = quantize(vectors, "uint8", calibration=cal).astype(np.int16)
    i = quantize(vectors, "int8", calibration=cal).astype(np.int16)
    np.testing.assert_array_equal(u - 128, i)
    np.testing.assert_allclose(dequantize(u.astype(np.uint8), cal), dequantize(i.astype(np.int8), cal))


def test_values_outside_the_calibration_range_are_clipped_not_wrapped(vectors):
    cal = Calibration.fit(vectors)
    far = np.vstack([cal.ranges[1] + 1.0, cal.ranges[0] - 1.0])
    codes = quantize(far, "int8", calibration=cal)
    assert (codes[0] == 127).all() and (codes[1] == -128).all()


@pytest.mark.parametrize("shape", [(48,), (1, 48)])
def test_calibration_refuses_a_single_vector(shape):
    """A single query must never be its own calibration set: its ranges would be a point."""
    with pytest.raises(CalibrationError, match="single query is never its own calibration set"):
        Calibration.fit(np.ones(shape, dtype=np.float32))


def test_int8_without_calibration_says_how_to_get_one(vectors):
    with pytest.raises(CalibrationError, match=r"Calibration.fit"):
        quantize(vectors, "int8")


def test_calibration_dim_must_match(vectors):
    cal = Calibration.fit(vectors)
    with pytest.raises(DimensionError, match="after Matryoshka truncation"):
        quantize(vectors[:, :16], "int8", calibration=cal)


def test_calibration_saves_and_loads(tmp_path, vectors):
    cal = Calibration.fit(vectors, fingerprint_id="x.y.document.abc")
    path = cal.save(tmp_path / "cal.json")
    back = Calibration.load(path)
    np.testing.assert_array_equal(back.ranges, cal.ranges)
    assert (back.n_samples, back.fingerprint_id) == (200, "x.y.document.abc")


def test_corrupt_calibration_file_is_refused(tmp_path, vectors):
    path = Calibration.fit(vectors).save(tmp_path / "cal.json")
    text = path.read_text()
    tampered = text.replace('"sha256": "', '"sha256": "0')
    path.write_text(tampered)
    with pytest.raises(CalibrationError, match="corrupt"):
        Calibration.load(path)
    path.write_text("not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        Calibration.load(path)


def test_binary_codes_are_sign_bits(vectors):
    ub = quantize(vectors, "ubinary")
    assert ub.dtype == np.uint8 and ub.shape == (200, 6)
    np.testing.assert_array_equal(np.unpackbits(ub, axis=1)[:, :48], (vectors > 0).astype(np.uint8))
    b = quantize(vectors, "binary")
    np.testing.assert_array_equal(b.astype(np.int16) + 128, ub)


def test_bytes_per_vector():
    assert bytes_per_vector(384, "float32") == 1536
    assert bytes_per_vector(384, "int8") == 384
    assert bytes_per_vector(384, "binary") == 48
    assert bytes_per_vector(100, "ubinary") == 13


def _brute_hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    arrays(np.uint8, (3, n)), arrays(np.uint8, (7, n)))))
def test_hamming_equals_brute_force(pair):
    q, d = pair
    got = hamming_distances(q, d)
    expected = np.array([[_brute_hamming(qi, di) for di in d] for qi in q])
    np.testing.assert_array_equal(got, expected)
    # int8 ("binary") codes give the same distances
    np.testing.assert_array_equal(hamming_distances((q.astype(np.int16) - 128).astype(np.int8),
                                                    (d.astype(np.int16) - 128).astype(np.int8)), expected)
    np.testing.assert_array_equal(hamming_distances(q[0], d), expected[0])


def test_int8_scores_do_not_overflow():
    a = np.full((1, 512), 127, dtype=np.int8)
    assert int8_scores(a, a)[0, 0] == 127 * 127 * 512


def test_float_query_against_int8_documents_matches_dequantized_dot(vectors):
    cal = Calibration.fit(vectors)
    codes = quantize(vectors, "int8", calibration=cal)
    q = vectors[:3]
    np.testing.assert_allclose(float_int8_scores(q, codes, cal), q @ dequantize(codes, cal).T, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(float_int8_scores(q[0], codes, cal), q[0] @ dequantize(codes, cal).T, rtol=1e-4,
                               atol=1e-4)
