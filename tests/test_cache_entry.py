"""The vector bytes codec: exact round trips, and every kind of damage is detected, never misread."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedopt.cache import CorruptEntry, decode_vector, encode_vector
from embedopt.cache.entry import FORMAT_VERSION, UNBOUND_FORMAT

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.one_of(st.none(), st.text(max_size=80)))
def test_round_trip_is_bit_exact(vec, key):
    data = encode_vector(vec, key=key)
    assert len(data) == 8 + (0 if key is None else 8) + 4 * vec.shape[0] + 4
    out = decode_vector(data, key=key)
    assert out.dtype == np.float32 and out.tobytes() == vec.tobytes()
    assert not out.flags.writeable


def test_layout_is_little_endian_float32_with_header_and_key_tag():
    data = encode_vector(np.array([1.0, -2.0], dtype=np.float64), key="k")
    assert data[:2] == b"EV" and data[2] == FORMAT_VERSION and data[3] == 1
    assert struct.unpack_from("<I", data, 4)[0] == 2
    assert data[8:16] == hashlib.sha256(b"k").digest()[:8]
    assert struct.unpack_from("<2f", data, 16) == (1.0, -2.0)
    assert struct.unpack_from("<I", data, 24)[0] == zlib.crc32(data[:24]) and len(data) == 28
    unbound = encode_vector(np.array([1.0, -2.0]))  # no key: format 1, no tag (the semantic cache's hashes)
    assert unbound[2] == UNBOUND_FORMAT and struct.unpack_from("<2f", unbound, 8) == (1.0, -2.0)


def test_a_value_moved_to_another_key_is_refused():
    """Regression (issue 17): the checksum did not cover the key, so two same-size values swapped between keys
    were both served as hits for the wrong texts. The key's tag is now inside the checked bytes."""
    a = encode_vector(np.ones(8, dtype=np.float32), key="embedopt:v1:fp:aaaa")
    np.testing.assert_array_equal(decode_vector(a, key="embedopt:v1:fp:aaaa"), np.ones(8))
    with pytest.raises(CorruptEntry, match="another key"):
        decode_vector(a, key="embedopt:v1:fp:bbbb")
    with pytest.raises(CorruptEntry, match="bound to no key"):  # an entry of format 1, written before tags
        decode_vector(encode_vector(np.ones(8, dtype=np.float32)), key="embedopt:v1:fp:aaaa")
    assert decode_vector(a).shape == (8,)  # without a key to check, the tag is not looked at


@pytest.mark.parametrize("value", ["a TEXT value", 3.5, 10**18, None, ["list"]])
def test_a_value_that_is_not_bytes_is_corrupt_not_a_type_or_memory_error(value):
    """Regression (issue 17): a SQLite row holding TEXT, REAL or a huge INTEGER reached ``bytes(value)``:
    TypeError, or for a huge integer an attempt to allocate that many zero bytes (MemoryError)."""
    with pytest.raises(CorruptEntry, match="not bytes"):
        decode_vector(value)  # type: ignore[arg-type]


@given(st.data())
def test_any_flipped_byte_is_detected(data):
    raw = bytearray(encode_vector(np.linspace(-1, 1, 24, dtype=np.float32), key="k"))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptEntry):
        decode_vector(bytes(raw), key="k")


@pytest.mark.parametrize("damage", ["truncated", "empty", "old_format", "pickle", "wrong_dim", "nan"])
def test_damaged_or_foreign_entries_are_refused(damage):
    good = encode_vector(np.ones(8, dtype=np.float32))
    if damage == "truncated":
        raw, dim = good[:-5], None
    elif damage == "empty":
        raw, dim = b"", None
    elif damage == "old_format":
        body = b"EV" + bytes([FORMAT_VERSION + 1]) + good[3:-4]
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
