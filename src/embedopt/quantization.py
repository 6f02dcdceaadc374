"""Scalar (int8/uint8) and binary quantization, calibration, and scoring on quantized vectors.

The conventions are those of sentence-transformers' ``quantize_embeddings`` (values outside the ranges are
clipped here rather than wrapped around):

* ``int8``/``uint8``: per-dimension ranges ``[min, max]`` fitted once on a calibration set, 256 buckets.
* ``binary``: ``packbits(v > 0) - 128`` as int8; ``ubinary``: ``packbits(v > 0)`` as uint8. Both store
  ``ceil(dim / 8)`` bytes a vector.

Order of operations in embedopt: truncate → renormalize → quantize. A calibration is fitted on many document
vectors, saved beside the index, and reused for queries: a single query is never its own calibration set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ._files import atomic_write_text
from .errors import CalibrationError, ConfigError, DimensionError

__all__ = [
    "MIN_CALIBRATION_SAMPLES",
    "Calibration",
    "Precision",
    "bytes_per_vector",
    "dequantize",
    "float_int8_scores",
    "hamming_distances",
    "int8_scores",
    "quantize",
]

Precision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: Fewer vectors than this give per-dimension ranges too narrow for the documents that come later.
MIN_CALIBRATION_SAMPLES = 32
_FORMAT = "embedopt.calibration"
_FORMAT_VERSION = 1


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def bytes_per_vector(dim: int, precision: str) -> int:
    check_precision(precision)
    if precision in ("binary", "ubinary"):
        return (dim + 7) // 8
    return dim * {"float32": 4, "float16": 2, "int8": 1, "uint8": 1}[precision]


@dataclass(frozen=True)
class Calibration:
    """Per-dimension ``[min, max]`` ranges for scalar quantization, fitted on a calibration set.

    ``fingerprint_id`` records the embedding space the ranges were fitted in (when known), so an index can refuse
    a calibration from another model.
    """

    ranges: np.ndarray
    """float32 array of shape (2, dim): row 0 the minima, row 1 the maxima."""
    n_samples: int
    fingerprint_id: str | None = None

    def __post_init__(self) -> None:
        r = np.asarray(self.ranges, dtype=np.float32)
        if r.ndim != 2 or r.shape[0] != 2 or r.shape[1] < 1:
            raise CalibrationError(f"ranges must have shape (2, dim), got {r.shape}")
        if not np.isfinite(r).all():
            raise CalibrationError("calibration ranges contain NaN or infinity; refit on finite vectors")
        object.__setattr__(self, "ranges", r)

    @property
    def dim(self) -> int:
        return int(self.ranges.shape[1])

    @property
    def starts(self) -> np.ndarray:
        return self.ranges[0]

    @property
    def steps(self) -> np.ndarray:
        # A dimension that never varied in the calibration set gets a tiny step instead of a division by zero.
        return np.maximum((self.ranges[1] - self.ranges[0]) / 255.0, np.float32(1e-12)).astype(np.float32)

    @classmethod
    def fit(cls, vectors: np.ndarray, *, min_samples: int = MIN_CALIBRATION_SAMPLES,
            fingerprint_id: str | None = None) -> Calibration:
        """Fit ranges on ``vectors`` (shape (n, dim), n >= ``min_samples``), typically a sample of documents."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2:
            raise CalibrationError(
                f"calibration needs a 2-D array of many vectors, got shape {v.shape}: a single query is never "
                "its own calibration set; fit once on a sample of documents and reuse it"
            )
        if v.shape[0] < min_samples:
            raise CalibrationError(
                f"calibration needs at least {min_samples} vectors, got {v.shape[0]}: fit it once on a sample of "
                "your documents (Calibration.fit(doc_vectors)), save it with the index and reuse it for queries; "
                "a single query is never its own calibration set"
            )
        if not np.isfinite(v).all():
            bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
            raise CalibrationError(f"calibration vector #{bad} contains NaN or infinity; drop it and refit")
        return cls(np.stack([v.min(axis=0), v.max(axis=0)]), n_samples=int(v.shape[0]),
                   fingerprint_id=fingerprint_id)

    def to_json(self) -> str:
        raw = self.ranges.astype("<f4").tobytes()
        return json.dumps({
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "dim": self.dim,
            "n_samples": self.n_samples,
            "fingerprint_id": self.fingerprint_id,
            "ranges_f32le": base64.b64encode(raw).decode(),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT:
                raise CalibrationError(f"not an embedopt calibration file (format={data.get('format')!r})")
            if data.get("version") != _FORMAT_VERSION:
                raise CalibrationError(
                    f"calibration format version {data.get('version')} is not supported by this embedopt "
                    f"(reads version {_FORMAT_VERSION}); refit the calibration"
                )
            raw = base64.b64decode(data["ranges_f32le"], validate=True)
            if hashlib.sha256(raw).hexdigest() != data["sha256"]:
                raise CalibrationError("calibration file is corrupt (checksum mismatch); refit it")
            ranges = np.frombuffer(raw, dtype="<f4").reshape(2, int(data["dim"]))
            return cls(ranges.astype(np.float32), n_samples=int(data["n_samples"]),
                       fingerprint_id=data.get("fingerprint_id"))
        except CalibrationError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"calibration file is unreadable ({exc}); refit it") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CalibrationError(f"cannot read calibration file {os.fspath(path)!r}: {exc}") from exc
        return cls.from_json(text)


def quantize(vectors: np.ndarray, precision: Precision, *, calibration: Calibration | None = None) -> np.ndarray:
    """Quantize float vectors (2-D, or one 1-D vector) to ``precision``."""
    check_precision(precision)
    v = np.asarray(vectors, dtype=np.float32)
    if precision == "float32":
        return v
    if precision == "float16":
        return v.astype(np.float16)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(v > 0, axis=-1)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if calibration is None:
        raise CalibrationError(
            f"{precision} quantization needs a calibration: fit one on a sample of document vectors with "
            "Calibration.fit(vectors) (or Embedder.calibrate(texts)) and pass calibration=..."
        )
    if calibration.dim != v.shape[-1]:
        raise DimensionError(
            f"calibration was fitted on {calibration.dim}-d vectors but these are {v.shape[-1]}-d; fit the "
            "calibration after Matryoshka truncation, at the dimension you store"
        )
    buckets = np.clip(np.floor((v - calibration.starts) / calibration.steps), 0, 255)
    if precision == "uint8":
        return buckets.astype(np.uint8)
    return (buckets - 128).astype(np.int8)


def dequantize(codes: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Approximate float vectors from int8 or uint8 codes (the centre of each bucket)."""
    c = np.asarray(codes)
    buckets = c.astype(np.float32) + (128.0 if c.dtype == np.int8 else 0.0)
    return calibration.starts + (buckets + 0.5) * calibration.steps


def _as_ubinary(codes: np.ndarray) -> np.ndarray:
    c = np.asarray(codes)
    if c.dtype == np.int8:
        return (c.astype(np.int16) + 128).astype(np.uint8)
    if c.dtype != np.uint8:
        raise ConfigError(f"binary codes must be int8 ('binary') or uint8 ('ubinary'), got {c.dtype}")
    return c


def hamming_distances(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Hamming distances between packed binary codes: shape (n_queries, n_documents), or (n_documents,) for one.

    Accepts both ``binary`` (int8) and ``ubinary`` (uint8) codes. Meant for scoring candidate sets and tests;
    the embedded store uses a SIMD library for full scans.
    """
    q = _as_ubinary(queries)
    d = _as_ubinary(documents)
    single = q.ndim == 1
    q2 = np.atleast_2d(q)
    if q2.shape[1] != d.shape[1]:
        raise DimensionError(f"query codes have {q2.shape[1]} bytes, document codes {d.shape[1]}")
    out = np.empty((q2.shape[0], d.shape[0]), dtype=np.int32)
    for i, row in enumerate(q2):  # one row at a time keeps the temporary at n_documents x bytes
        out[i] = np.bitwise_count(np.bitwise_xor(d, row)).sum(axis=1, dtype=np.int32)
    return out[0] if single else out


def int8_scores(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Dot products of int8 (or uint8) codes, accumulated in int32 so they cannot overflow."""
    q = np.atleast_2d(np.asarray(queries)).astype(np.int32)
    d = np.asarray(documents).astype(np.int32)
    out = q @ d.T
    return out[0] if np.asarray(queries).ndim == 1 else out


def float_int8_scores(queries: np.ndarray, documents: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Dot products of float queries with int8/uint8 document codes, as if the codes were dequantized.

    ``q · (start + (code + offset + 0.5) * step)`` is computed as ``codes @ (q * step)`` plus a per-query
    constant, so documents are never expanded to float32 as a whole.
    """
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    d = np.asarray(documents)
    if q.shape[1] != calibration.dim or d.shape[1] != calibration.dim:
        raise DimensionError(
            f"queries are {q.shape[1]}-d, documents {d.shape[1]}-d, calibration {calibration.dim}-d; they must agree"
        )
    offset = 128.0 if d.dtype == np.int8 else 0.0
    weights = q * calibration.steps  # (nq, dim)
    const = q @ calibration.starts + (offset + 0.5) * weights.sum(axis=1)
    out = (d.astype(np.float32) @ weights.T).T + const[:, None]
    return out[0] if np.asarray(queries).ndim == 1 else out
