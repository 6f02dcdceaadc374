"""Matryoshka truncation: keep the first ``dim`` components and renormalize."""

from __future__ import annotations

import numpy as np

from .errors import DimensionError

__all__ = ["l2_normalize", "truncate"]


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length; an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def check_dim(dim: int, native: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise DimensionError(f"dim must be an integer, got {dim!r}")
    if dim < 1:
        raise DimensionError(f"dim must be >= 1, got {dim}")
    if dim > native:
        raise DimensionError(
            f"dim={dim} is larger than the model's native dimension {native}; choose a dim <= {native} "
            "(Matryoshka truncation can only shorten vectors)"
        )


def truncate(vectors: np.ndarray, dim: int, *, normalize: bool = True) -> np.ndarray:
    """The first ``dim`` components of each vector (rows of a 2-D array, or one 1-D vector), renormalized.

    Truncation is lossless only for models trained with a Matryoshka loss (nomic v1.5, OpenAI text-embedding-3,
    Voyage 3, static-retrieval-mrl); for others it still works but costs more quality per dropped dimension.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    check_dim(dim, vectors.shape[-1])
    out = vectors[..., :dim]
    return l2_normalize(out) if normalize else np.ascontiguousarray(out)
