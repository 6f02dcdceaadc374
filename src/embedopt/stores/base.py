"""What the retrieval pipeline needs of a store, and what every store shares: the result type and the checks
of what goes in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import DimensionError, InputError
from ..fingerprint import Fingerprint
from .filters import Filter

__all__ = ["RESCORES", "Record", "Rescore", "SearchResult", "VectorStore", "as_ids", "check_counts", "check_payloads",
           "check_vectors"]

Rescore = Literal["int8", "float", "none"]
RESCORES: tuple[str, ...] = ("int8", "float", "none")


@dataclass(frozen=True)
class SearchResult:
    """Per query, the ids found (best first) and their scores."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    """float32 per query: rescored similarities; with ``rescore='none'`` the shortlist's own score (minus the
    Hamming distance for binary codes, the prefix similarity for the funnel)."""
    candidates: int = 0
    """How many candidates the shortlist kept per query."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    payloads: list[list[dict[str, Any]]] | None = None
    """Per query, the payload of each id, when the store returned them with the search (one round trip);
    ``None`` when they are to be fetched with :meth:`VectorStore.get_payloads`."""


@dataclass(frozen=True)
class Record:
    """A stored entry: its id, payload and, when asked for, the vector the store keeps (for a quantized store,
    the vector its codes decode to, good for MMR but not bit-exact)."""

    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@runtime_checkable
class VectorStore(Protocol):
    """A store of one embedding space: :class:`~embedopt.stores.QuantizedIndex`,
    :class:`~embedopt.stores.QdrantStore` or :class:`~embedopt.stores.EdgeStore`.

    ``where`` is a metadata filter (:mod:`embedopt.stores.filters`), applied during the search: a filtered search
    still returns ``k`` hits when ``k`` entries match.
    """

    fingerprint: Fingerprint
    dim: int

    def __len__(self) -> int: ...

    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None) -> None: ...

    def delete(self, ids: Any = None, *, where: Filter | None = None) -> int:
        """Delete ``ids``, or the entries matching ``where`` (both: the ids that match); returns how many."""

    def clear(self) -> None:
        """Delete every entry."""

    def get(self, ids: Any = None, *, where: Filter | None = None, with_vectors: bool = False,
            limit: int | None = None) -> list[Record]:
        """The entries of ``ids`` that exist (in the order asked), or those matching ``where``."""

    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]: ...

    def search(self, queries: Any, k: int = 10, *, oversample: float = 4.0, rescore: Rescore = "int8",
               where: Filter | None = None) -> SearchResult: ...


def check_vectors(vectors: Any, dim: int, holder: str) -> np.ndarray:
    """``vectors`` (one, or a 2-D batch) as float32 rows of ``dim``; refused with advice otherwise (not numbers,
    the wrong shape, NaN or infinity, all zeros). ``holder`` says what holds ``dim``-d vectors, for the message."""
    if vectors is None or isinstance(vectors, (str, bytes)):
        raise InputError(f"vectors must be an array of numbers, got {type(vectors).__name__}; {holder}: pass "
                         "the embedder's output (embedder.embed_documents(texts) or embed_query(text))")
    try:
        with np.errstate(over="ignore"):  # a number too large for float32 becomes inf, refused below
            v = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"vectors must be an array of numbers ({exc}); {holder}: pass the embedder's "
                         "output") from exc
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        got = f"{v.shape[-1]}-d" if v.ndim else "a single number"
        raise DimensionError(f"vectors are {got}, {holder}; embed with its model and dim")
    if not np.isfinite(v).all():
        bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
        raise InputError(f"vector #{bad} contains NaN or infinity; nothing was added or searched", bad)
    zero = ~v.any(axis=1)
    if zero.any():
        bad = int(np.flatnonzero(zero)[0])
        raise InputError(f"vector #{bad} is all zeros: it has no direction to compare; nothing was added or "
                         "searched (an empty text or a failed embedding? embed the text again)", bad)
    return v


def check_counts(ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]] | None) -> None:
    if len(ids) != len(vectors) or (payloads is not None and len(payloads) != len(vectors)):
        raise InputError(f"{len(ids)} ids, {len(vectors)} vectors and "
                         f"{len(payloads) if payloads is not None else len(vectors)} payloads must match")


def check_payloads(payloads: Any) -> list[dict[str, Any]] | None:
    """``payloads`` as a list of dicts (or ``None``), or an InputError naming the first that is not one."""
    if payloads is None:
        return None
    if isinstance(payloads, (str, bytes, Mapping)) or not isinstance(payloads, Iterable):
        raise InputError(f"payloads must be a list with one dict per vector, got {type(payloads).__name__}")
    out = list(payloads)
    for n, p in enumerate(out):
        if not isinstance(p, Mapping):
            raise InputError(f"payload #{n} is a {type(p).__name__}, not a dict; pass one dict per vector "
                             "(or {} for none); nothing was added", n)
    return out


def as_ids(ids: Any) -> list[str]:
    """``ids`` as a list of non-empty strings without NUL characters, or an InputError naming the bad one.
    A single string is one id (never split into its characters)."""
    if isinstance(ids, str):
        ids = [ids]
    elif ids is None or isinstance(ids, (bytes, Mapping)) or not isinstance(ids, Iterable):
        raise InputError(f"ids must be a list of strings (or one string), got {type(ids).__name__}")
    out = list(ids)
    for n, i in enumerate(out):
        if not isinstance(i, str) or not i or "\x00" in i:
            raise InputError(f"ids must be non-empty strings without NUL characters; id #{n} is {i!r}", n)
    return out
