"""The vector bytes codec: exact round trips, and every kind of damage is detected, never misread."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedopt.cache import CorruptEntry, decode_vector, encode_vector
from embedopt.cache.entry import FORMAT_VERSION

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(arrays(np.float32, st.integers(1, 64), elements=finite))
def test_round_trip_is_bit_exact(vec):
    data = encode_vector(vec)
    assert len(data) == 8 + 4 * vec.shape[0] + 4
    out = decode_vector(data)
    assert out.dtype == np.float32 and out.tobytes() == vec.tobytes()
    assert not out.flags.writeable


def test_layout_is_little_endian_float32_with_header():
    data = encode_vector(np.array([1.0, -2.0], dtype=np.float64))
    assert data[:2] == b"EV" and data[2] == FORMAT_VERSION and data[3] == 1
    assert struct.unpack_from("<I", data, 4)[0] == 2
    assert struct.unpack_from("<2f", data, 8) == (1.0, -2.0)


@given(st.data())
def test_any_flipped_byte_is_detected(data):
    raw = bytearray(encode_vector(np.linspace(-1, 1, 24, dtype=np.float32)))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptEntry):
        decode_vector(bytes(raw))


@pytest.mark.parametrize("damage", ["truncated", "empty", "old_format", "pickle", "wrong_dim", "nan"])
def test_damaged_or_foreign_entries_are_refused(damage):
    good = encode_vector(np.ones(8, dtype=np.float32))
    if damage == "truncated":
        raw, dim = good[:-5], None
    elif damage == "empty":
        raw, dim = b"", None
    elif damage == "old_format":
        body = b"EV" + bytes([FORMAT_VERSION + 1]) + good[3:-4]
        import zlib

        raw, dim = body + struct.pack("<I", zlib.crc32(body)), None
    elif damage == "pickle":
        import pickle

        raw, dim = pickle.dumps(np.ones(8)), None
    elif damage == "wrong_dim":
        raw, dim = good, 16
    else:
        raw, dim = encode_vector(np.array([1.0, np.nan], dtype=np.float32)), None
    with pytest.raises(CorruptEntry):
        decode_vector(raw, dim=dim)


def test_only_vectors_are_encoded():
    with pytest.raises(ValueError, match="1-d"):
        encode_vector(np.ones((2, 2), dtype=np.float32))
