import numpy as np
import pytest

from embedopt import DimensionError
from embedopt.matryoshka import l2_normalize, truncate


def test_truncate_keeps_prefix_and_renormalizes():
    rng = np.random.default_rng(0)
    v = l2_normalize(rng.standard_normal((5, 64)))
    t = truncate(v, 16)
    assert t.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    # same direction as the raw prefix
    prefix = v[:, :16]
    np.testing.assert_allclose(t, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), rtol=1e-6)


def test_truncate_without_normalize_is_a_plain_prefix():
    v = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(truncate(v, 3, normalize=False), v[:, :3])


def test_truncate_one_vector_and_native_dim_is_identity():
    v = l2_normalize(np.array([3.0, 4.0, 0.0]))
    np.testing.assert_allclose(truncate(v, 3), v)
    np.testing.assert_allclose(truncate(v, 2), [0.6, 0.8])


def test_zero_vector_stays_zero_not_nan():
    out = truncate(np.zeros((1, 8), dtype=np.float32), 4)
    assert np.isfinite(out).all() and not out.any()


@pytest.mark.parametrize("dim", [0, -3])
def test_non_positive_dim_is_refused(dim):
    with pytest.raises(DimensionError, match=">= 1"):
        truncate(np.ones((1, 8)), dim)


def test_dim_larger_than_native_names_the_native_dim():
    with pytest.raises(DimensionError, match=r"native dimension 8; choose a dim <= 8"):
        truncate(np.ones((2, 8)), 9)
