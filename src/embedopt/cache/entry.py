"""The bytes a persistent tier stores for one vector: a small header, the key's tag, little-endian float32, a
checksum.

Layout (all little-endian)::

    magic  b"EV"   2 bytes
    format 2       u8     (FORMAT_VERSION)
    dtype  1       u8     (1 = float32)
    dim            u32
    key tag        8 bytes, the first 8 bytes of sha256(key)
    data           dim * 4 bytes
    crc32          u32    over everything before it

The key tag binds an entry to the key it was written under: a value copied or swapped to another key (two
same-size vectors exchanged between rows, say) has a valid checksum but the wrong tag, and is refused. Format 1,
written by earlier versions, has no tag; cache tiers read it as a miss and the next write replaces it.
:func:`encode_vector` without a key still writes format 1, for stores whose entries are found by something other
than a key (the semantic cache's hashes).

No pickle and no JSON floats: decoding a value can never run code, and it round-trips bit for bit.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

from ..errors import CorruptEntry, InputError

__all__ = ["FORMAT_VERSION", "UNBOUND_FORMAT", "CorruptEntry", "decode_vector", "encode_vector", "key_tag"]

FORMAT_VERSION = 2
"""Entries bound to their key (what cache tiers write and require)."""
UNBOUND_FORMAT = 1
"""Entries bound to no key (earlier versions' cache entries; :func:`encode_vector` without a key)."""
_MAGIC = b"EV"
_DTYPES = {1: np.dtype("<f4")}
_FLOAT32 = 1
_HEADER = struct.Struct("<2sBBI")
_TAG = 8
_CRC = struct.Struct("<I")


def key_tag(key: str) -> bytes:
    """The 8 bytes that bind an entry to ``key``: the start of sha256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:_TAG]


def encode_vector(vector: np.ndarray, key: str | None = None) -> bytes:
    """One 1-d vector → bytes (float32; other float dtypes are converted), bound to ``key`` when given."""
    arr = np.asarray(vector)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-d vector, got shape {arr.shape}; encode one vector at a time")
    version, tag = (UNBOUND_FORMAT, b"") if key is None else (FORMAT_VERSION, key_tag(key))
    body = _HEADER.pack(_MAGIC, version, _FLOAT32, arr.shape[0]) + tag + arr.astype("<f4", copy=False).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def decode_vector(data: bytes | bytearray | memoryview, dim: int | None = None, *,
                  key: str | None = None) -> np.ndarray:
    """Bytes → a read-only float32 vector; raises :class:`CorruptEntry` for anything that is not a valid entry:
    not bytes at all (a TEXT, REAL or INTEGER a SQL row may hold), damaged, of an unknown format, not ``dim``-d
    when ``dim`` is given, or, when ``key`` is given, not written under that key (entries of format 1 included)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptEntry(f"entry is a {type(data).__name__}, not bytes")
    raw = bytes(data)
    if len(raw) < _HEADER.size + _CRC.size:
        raise CorruptEntry(f"entry of {len(raw)} bytes is shorter than a header")
    magic, version, dtype_code, n = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise CorruptEntry("entry does not start with the embedopt vector magic")
    if version not in (FORMAT_VERSION, UNBOUND_FORMAT):
        raise CorruptEntry(f"entry has format {version}, this embedopt reads formats {UNBOUND_FORMAT} and "
                           f"{FORMAT_VERSION}")
    dtype = _DTYPES.get(dtype_code)
    if dtype is None:
        raise CorruptEntry(f"entry has unknown dtype code {dtype_code}")
    tag_size = _TAG if version == FORMAT_VERSION else 0
    offset = _HEADER.size + tag_size
    expected = offset + n * dtype.itemsize + _CRC.size
    if len(raw) != expected:
        raise CorruptEntry(f"entry is {len(raw)} bytes, its header says {expected}")
    (crc,) = _CRC.unpack_from(raw, expected - _CRC.size)
    if zlib.crc32(raw[: expected - _CRC.size]) != crc:
        raise CorruptEntry("entry checksum does not match its bytes")
    if key is not None:
        if version != FORMAT_VERSION:
            raise CorruptEntry(f"entry has format {version}, which is bound to no key (written by an earlier "
                               "embedopt); it is recomputed and rewritten")
        if raw[_HEADER.size:offset] != key_tag(key):
            raise CorruptEntry("entry was written under another key (copied or swapped between keys)")
    if dim is not None and n != dim:
        raise CorruptEntry(f"entry holds a {n}-d vector, expected {dim}-d")
    vec = np.frombuffer(raw, dtype=dtype, count=n, offset=offset).astype(np.float32, copy=False)
    if not np.isfinite(vec).all():
        raise CorruptEntry("entry holds NaN or infinity")
    return vec
