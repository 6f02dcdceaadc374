"""Exact top-n scans over the codes the embedded store keeps in RAM.

Binary codes: faiss ``IndexBinaryFlat`` when faiss-cpu is installed (``pip install embedopt[search]``), numpy's
``bitwise_count`` otherwise. bench/hamming.py measured faiss 18x ahead of numpy on a single query and 44x on
batches (1M x 384 bits, 2 vCPUs), with usearch's exact search and numkong slower than faiss on both; see
bench/results/hamming.json. Matryoshka prefixes: float32 matrix products (BLAS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BinaryScan", "FloatScan", "faiss_or_none", "tie_safe_top"]

log = logging.getLogger("embedopt.stores")
_warned = False


def faiss_or_none() -> Any:
    global _warned
    try:
        import faiss
    except ImportError:
        if not _warned:
            _warned = True
            log.warning("faiss-cpu is not installed: binary search falls back to numpy, about 18x slower; "
                        "install it with `pip install embedopt[search]`")
        return None
    return faiss


def _top_n(dist: np.ndarray, n: int, *, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    if dist.dtype.kind in "iu":  # integer distances tie often: break ties by row, so results are deterministic
        key = dist.astype(np.int64) * dist.shape[1] + np.arange(dist.shape[1])
        key = -key if largest else key
    else:
        key = -dist if largest else dist
    rows = np.argpartition(key, n - 1, axis=1)[:, :n] if n < dist.shape[1] else np.tile(
        np.arange(dist.shape[1]), (len(dist), 1))
    order = np.argsort(np.take_along_axis(key, rows, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    return np.take_along_axis(dist, rows, axis=1), rows


class BinaryScan:
    """Packed binary codes (uint8, ``nbytes`` a row) and an exact Hamming top-n over them."""

    def __init__(self, nbytes: int, *, backend: str = "auto", threads: int | None = None) -> None:
        self.nbytes = nbytes
        self.threads = threads
        self._faiss = faiss_or_none() if backend in ("auto", "faiss") else None
        if backend == "faiss" and self._faiss is None:
            from ..errors import MissingExtraError

            raise MissingExtraError("search", "faiss-cpu", "backend='faiss'")
        self.backend = "faiss" if self._faiss is not None else "numpy"
        self._chunks: list[np.ndarray] = []
        self._np = np.zeros((0, nbytes), dtype=np.uint8)
        self._index = self._faiss.IndexBinaryFlat(nbytes * 8) if self._faiss is not None else None

    def __len__(self) -> int:
        if self._index is not None:
            return int(self._index.ntotal)
        return len(self._np) + sum(len(c) for c in self._chunks)

    def add(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if self._index is not None:
            self._index.add(codes)
        else:
            self._chunks.append(codes)

    def codes(self) -> np.ndarray:
        if self._index is not None:
            n = int(self._index.ntotal)
            return self._index.reconstruct_n(0, n) if n else np.zeros((0, self.nbytes), dtype=np.uint8)
        self._merge()
        return self._np

    def replace(self, codes: np.ndarray) -> None:
        if self._index is not None:
            self._index.reset()
        self._chunks, self._np = [], np.zeros((0, self.nbytes), dtype=np.uint8)
        self.add(codes)

    def _merge(self) -> None:
        if self._chunks:
            self._np = np.concatenate([self._np, *self._chunks])
            self._chunks = []

    def search(self, queries: np.ndarray, n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances int32, rows int64) of shape (n_queries, n), nearest first; ``n <= len(self)``. ``allowed``
        (a bool per row) restricts the scan to those rows (a metadata filter): faiss skips the others inside its
        scan (an ``IDSelectorBitmap``), numpy computes distances for the allowed rows only; rows past the
        number allowed come back as -1."""
        q = np.ascontiguousarray(queries, dtype=np.uint8)
        faiss = self._faiss
        if allowed is not None:
            return self._search_allowed(q, n, allowed)
        if self._index is not None and faiss is not None:
            return self._faiss_search(q, n)
        self._merge()
        return _top_n(self._hamming(q, self._np), n, largest=False)

    def _faiss_search(self, q: np.ndarray, n: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        assert faiss is not None and self._index is not None
        # One query gains nothing from a second thread (bench/hamming.py), and an OpenMP team on a busy
        # machine can stall; batches use the threads given, else faiss's own setting.
        threads = self.threads or (1 if len(q) == 1 else None)
        before = faiss.omp_get_max_threads()
        if threads:
            faiss.omp_set_num_threads(threads)
        try:
            dist, rows = self._index.search(q, n) if params is None else self._index.search(q, n, params=params)
        finally:
            if threads:
                faiss.omp_set_num_threads(before)
        return dist.astype(np.int32, copy=False), rows

    @staticmethod
    def _hamming(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        dist = np.empty((len(q), len(codes)), dtype=np.int32)
        for j, row in enumerate(q):  # one query at a time keeps the temporary at n_rows x nbytes
            dist[j] = np.bitwise_count(np.bitwise_xor(codes, row)).sum(axis=1, dtype=np.int32)
        return dist

    def _search_allowed(self, q: np.ndarray, n: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        if self._index is not None and faiss is not None:
            bitmap = np.packbits(allowed, bitorder="little")  # kept alive until the search returns
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
            return self._faiss_search(q, n, faiss.SearchParameters(sel=selector))
        self._merge()
        return _subset_top_n(self._hamming(q, self._np[allowed]), allowed, n, largest=False)


class FloatScan:
    """Float32 vectors (a Matryoshka prefix) and an exact inner-product top-n over them."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._chunks: list[np.ndarray] = []
        self._m = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._m) + sum(len(c) for c in self._chunks)

    def add(self, vectors: np.ndarray) -> None:
        self._chunks.append(np.ascontiguousarray(vectors, dtype=np.float32))

    def codes(self) -> np.ndarray:
        if self._chunks:
            self._m = np.concatenate([self._m, *self._chunks])
            self._chunks = []
        return self._m

    def replace(self, vectors: np.ndarray) -> None:
        self._chunks, self._m = [], np.zeros((0, self.dim), dtype=np.float32)
        self.add(vectors)

    def search(self, queries: np.ndarray, n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities float32, rows int64), best first; ``allowed`` as in :meth:`BinaryScan.search`."""
        q = np.asarray(queries, dtype=np.float32)
        if allowed is None:
            return _top_n(q @ self.codes().T, n, largest=True)
        return _subset_top_n(q @ self.codes()[allowed].T, allowed, n, largest=True)


def _subset_top_n(dist: np.ndarray, allowed: np.ndarray, n: int, *, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` over the allowed rows' scores, as rows of the whole set; padded with -1 past the allowed count."""
    rows_of = np.flatnonzero(allowed)
    got = min(n, len(rows_of))
    out_d = np.zeros((len(dist), n), dtype=dist.dtype)
    out_r = np.full((len(dist), n), -1, dtype=np.int64)
    if got:
        d, r = _top_n(dist, got, largest=largest)
        out_d[:, :got], out_r[:, :got] = d, rows_of[r]
    return out_d, out_r


def tie_safe_top(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], queries: np.ndarray, keep: int,
                 *, first: int, limit: int, usable: Callable[[np.ndarray], np.ndarray],
                 keys: Callable[[np.ndarray], np.ndarray], largest: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the best ``keep`` usable rows and their distances, equal distances ordered by ``keys(rows)``
    (a hash of each row's id), so the result does not depend on the order the rows were stored in.

    A scan keeps the lowest rows among equal distances (faiss does), and Hamming distances tie often, also across
    the cut. So ``search(queries, n)`` is asked for ``first`` rows (more than ``keep``), and again with twice as
    many for a query whose last row fetched still ties with its ``keep``-th usable one, until the whole tied group
    is in or ``limit`` (every row) is reached; ``usable(rows)`` drops deleted rows."""
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, dtype=np.int64), np.zeros(0))] * len(queries)
    todo = np.arange(len(queries))
    n = max(1, min(first, limit))
    while len(todo):
        dist, rows = search(queries[todo], n)
        again = []
        for j, qi in enumerate(todo):
            r, d = rows[j], dist[j]
            ok = r >= 0
            exhausted = n >= limit or not ok.all()
            ok[ok] = usable(r[ok])
            r, d = r[ok], d[ok]
            if not exhausted:
                last = dist[j][-1]
                past = len(r) >= keep and (last < d[keep - 1] if largest else last > d[keep - 1])
                if not past:
                    again.append(qi)
                    continue
            order = np.lexsort((keys(r), -d if largest else d))[:keep]
            out[qi] = (r[order], d[order])
        todo = np.asarray(again, dtype=np.int64)
        n = min(limit, n * 2)
    return out
