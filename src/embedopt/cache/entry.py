"""The bytes a persistent tier stores for one vector: a small header, little-endian float32, a checksum.

Layout (all little-endian)::

    magic  b"EV"   2 bytes
    format 1       u8     (FORMAT_VERSION; an entry of another format is a miss, never misread)
    dtype  1       u8     (1 = float32)
    dim            u32
    data           dim * 4 bytes
    crc32          u32    over everything before it

No pickle and no JSON floats: decoding a value can never run code, and it round-trips bit for bit.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import CorruptEntry, InputError

__all__ = ["FORMAT_VERSION", "CorruptEntry", "decode_vector", "encode_vector"]

FORMAT_VERSION = 1
_MAGIC = b"EV"
_DTYPES = {1: np.dtype("<f4")}
_FLOAT32 = 1
_HEADER = struct.Struct("<2sBBI")
_CRC = struct.Struct("<I")


def encode_vector(vector: np.ndarray) -> bytes:
    """One 1-d vector → bytes (float32; other float dtypes are converted)."""
    arr = np.asarray(vector)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-d vector, got shape {arr.shape}; encode one vector at a time")
    body = _HEADER.pack(_MAGIC, FORMAT_VERSION, _FLOAT32, arr.shape[0]) + arr.astype("<f4", copy=False).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def decode_vector(data: bytes | bytearray | memoryview, dim: int | None = None) -> np.ndarray:
    """Bytes → a read-only float32 vector; raises :class:`CorruptEntry` for anything that is not a valid entry
    (or whose dimension is not ``dim``, when given)."""
    raw = bytes(data)
    if len(raw) < _HEADER.size + _CRC.size:
        raise CorruptEntry(f"entry of {len(raw)} bytes is shorter than a header")
    magic, version, dtype_code, n = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise CorruptEntry("entry does not start with the embedopt vector magic")
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"entry has format {version}, this embedopt reads format {FORMAT_VERSION}")
    dtype = _DTYPES.get(dtype_code)
    if dtype is None:
        raise CorruptEntry(f"entry has unknown dtype code {dtype_code}")
    expected = _HEADER.size + n * dtype.itemsize + _CRC.size
    if len(raw) != expected:
        raise CorruptEntry(f"entry is {len(raw)} bytes, its header says {expected}")
    (crc,) = _CRC.unpack_from(raw, expected - _CRC.size)
    if zlib.crc32(raw[: expected - _CRC.size]) != crc:
        raise CorruptEntry("entry checksum does not match its bytes")
    if dim is not None and n != dim:
        raise CorruptEntry(f"entry holds a {n}-d vector, expected {dim}-d")
    vec = np.frombuffer(raw, dtype=dtype, count=n, offset=_HEADER.size).astype(np.float32, copy=False)
    if not np.isfinite(vec).all():
        raise CorruptEntry("entry holds NaN or infinity")
    return vec
