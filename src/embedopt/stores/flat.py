"""The embedded store: compact codes in RAM for the shortlist, calibrated int8 (and optionally float16) vectors
on disk for rescoring.

Search has two steps. An exact scan of the RAM codes keeps the best ``ceil(k * oversample)`` candidates: Hamming
distance between binary codes (faiss ``IndexBinaryFlat``), or — the Matryoshka funnel — the inner product of a
short, renormalized prefix of the vectors. The candidates are then rescored with the float query against the
documents' int8 (or float16) vectors, never against the bits, and the best ``k`` returned.

An index records the fingerprint of the embedding space and the int8 calibration; loading it for another model
is refused. After :meth:`QuantizedIndex.save` (and on :meth:`QuantizedIndex.load`) the int8 and float16 vectors
are memory-mapped from the index folder, so only the codes and the ids stay in RAM.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..codec import Codec
from ..errors import ConfigError, DimensionError, InputError
from ..eval.metrics import tie_keys
from ..fingerprint import Fingerprint
from ..quantization import MIN_CALIBRATION_SAMPLES, Calibration, dequantize, float_int8_scores
from ._scan import BinaryScan, FloatScan, tie_safe_top
from .base import RESCORES, Record, Rescore, SearchResult, as_ids, check_counts, check_vectors
from .filters import Filter, FilterNode, canonical, compile_filter, parse_filter

__all__ = ["QuantizedIndex", "Rescore", "SearchResult"]

_FORMAT = "embedopt.quantized-index"
_VERSION = 1
log = logging.getLogger("embedopt.stores")


def _first_calibration(v: np.ndarray, fingerprint_id: str) -> Calibration:
    if len(v) >= MIN_CALIBRATION_SAMPLES:
        return Calibration.fit(v, fingerprint_id=fingerprint_id)
    # Too few vectors to fit per-dimension ranges: a symmetric range wide enough for every component of these
    # (unit vectors: [-1, 1]). Coarser int8 codes, never clipped ones; pass calibration= for a real fit.
    log.info("only %d vectors in the first add(): int8 uses the symmetric range instead of fitted ranges; build "
             "with calibration=embedder.calibrate(sample) for finer codes", len(v))
    bound = max(1.0, float(np.abs(v).max()))
    return Calibration(np.stack([np.full(v.shape[1], -bound), np.full(v.shape[1], bound)]), n_samples=len(v),
                       fingerprint_id=fingerprint_id)


class QuantizedIndex:
    """Vectors of one embedding space, stored for cheap exact search.

    Args:
        fingerprint: the document fingerprint of the vectors (``embedder.fingerprint("document")``).
        dim: the dimension stored (a Matryoshka truncation of the model's vectors); default the model's.
        calibration: int8 ranges at ``dim``; fitted on the first :meth:`add` (at least 32 vectors) when not given.
            For an index built in several small batches, fit it once on a sample (``embedder.calibrate``).
        keep_float: also keep float16 vectors on disk, for ``rescore="float"``.
        shortlist: ``"binary"`` (default): Hamming distance over sign bits, ``dim / 8`` bytes a vector in RAM; or an
            int: the Matryoshka funnel, the first that many dimensions renormalized, float32 in RAM.
        threads: threads faiss may use for a search (default: faiss's own setting, all cores).
        backend: ``"auto"`` (faiss when installed, else numpy), ``"faiss"`` or ``"numpy"``.
    """

    def __init__(self, fingerprint: Fingerprint, *, dim: int | None = None, calibration: Calibration | None = None,
                 keep_float: bool = False, shortlist: Literal["binary"] | int = "binary",
                 threads: int | None = None, backend: Literal["auto", "faiss", "numpy"] = "auto") -> None:
        self.fingerprint = fingerprint
        self.dim = fingerprint.dim if dim is None else int(dim)
        if not 0 < self.dim <= fingerprint.dim:
            raise DimensionError(f"dim must be between 1 and the model's {fingerprint.dim}, got {self.dim}")
        if calibration is not None and calibration.dim != self.dim:
            raise DimensionError(f"calibration is {calibration.dim}-d, the index stores {self.dim}-d; refit it")
        self.calibration = calibration
        self.keep_float = keep_float
        self.shortlist = shortlist
        self._scan: BinaryScan | FloatScan
        if shortlist == "binary":  # a dim that is not a multiple of 8 pads its last byte with zero bits
            self._scan = BinaryScan((self.dim + 7) // 8, backend=backend, threads=threads)
        elif isinstance(shortlist, int) and not isinstance(shortlist, bool) and 0 < shortlist < self.dim:
            self._scan = FloatScan(shortlist)
        else:
            raise ConfigError(f"shortlist must be 'binary' or a prefix dimension below {self.dim}, got {shortlist!r}")
        self.payloads: dict[str, dict[str, Any]] = {}
        self._int8: np.ndarray = np.zeros((0, self.dim), dtype=np.int8)
        self._f16: np.ndarray | None = np.zeros((0, self.dim), dtype=np.float16) if keep_float else None
        self._ids = np.zeros(0, dtype="S1")
        self._alive = np.zeros(0, dtype=bool)
        self._dead = 0  # rows deleted but still in the arrays (tombstones), kept so search need not count them
        self._order = np.zeros(0, dtype=np.int64)  # ids sorted; among equal ids, older rows first
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._pending_rows: dict[str, int] = {}  # id -> offset among the pending rows (the newest wins)
        self._pending_n = 0
        self._pending_dead: list[int] = []  # offsets of pending rows replaced before they were flushed
        self._path: Path | None = None
        # filter -> (its predicate, whether each row's payload matches): extended as rows are added (a row's
        # payload never changes: re-adding an id appends a new row), ANDed with the live rows when read
        self._masks: dict[str, tuple[Callable[[Mapping[str, Any]], bool], np.ndarray]] = {}

    # ------------------------------------------------------------------------------------------- describe
    def __len__(self) -> int:
        return len(self._alive) - self._dead + self._pending_n - len(self._pending_dead)

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and bool(self._rows([id_])[0] >= 0)

    def __repr__(self) -> str:
        return (f"QuantizedIndex({self.fingerprint.id}, dim={self.dim}, shortlist={self.shortlist!r}, "
                f"vectors={len(self)}, keep_float={self.keep_float}, path={str(self._path) if self._path else None})")

    @property
    def ids(self) -> list[str]:
        self._flush()
        return [i.decode() for i in self._ids[self._alive]]

    def memory_bytes(self) -> dict[str, int]:
        """What the index holds in RAM (codes, ids, bookkeeping) and what it keeps on disk or mapped."""
        self._flush()
        codes = self._scan.codes()
        mapped = self._path is not None
        vec = self._int8.nbytes + (self._f16.nbytes if self._f16 is not None else 0)
        return {"codes": int(codes.nbytes), "ids": int(self._ids.nbytes + self._order.nbytes + self._alive.nbytes),
                "vectors_in_ram": 0 if mapped else int(vec), "vectors_on_disk": int(vec) if mapped else 0}

    # ------------------------------------------------------------------------------------------- write
    def _check(self, vectors: Any) -> np.ndarray:
        return check_vectors(vectors, self.dim, f"this index holds {self.dim}-d vectors of {self.fingerprint.id}")

    def _codes(self, v: np.ndarray) -> np.ndarray:
        """What the shortlist scans: sign bits, or the renormalized Matryoshka prefix of the funnel."""
        if isinstance(self._scan, BinaryScan):
            return Codec(self.dim, precision="ubinary").derive(v)
        return Codec(self._scan.dim).derive_float(v)

    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None) -> None:
        """Add vectors under ``ids``; an id already present is replaced. Payloads must be JSON-serializable."""
        id_list = as_ids(ids)
        v = self._check(vectors)
        check_counts(id_list, v, payloads)
        if len(set(id_list)) != len(id_list):
            raise InputError("ids must be unique within one add()")
        if payloads is not None:
            for n, p in enumerate(payloads):
                try:
                    json.dumps(p)
                except (TypeError, ValueError) as exc:
                    raise InputError(f"payload #{n} is not JSON-serializable ({exc}); nothing was added", n) from exc
        if self.calibration is None:
            self.calibration = _first_calibration(v, self.fingerprint.id)
        int8 = Codec(self.dim, precision="int8", calibration=self.calibration).derive(v)
        # Re-adding an id replaces it: its flushed row becomes a tombstone, a pending row is marked to become one
        # when the buffer is flushed. Nothing here flushes the buffer.
        self._kill(self._rows(id_list, flush=False))
        for n, i in enumerate(id_list):
            old = self._pending_rows.get(i)
            if old is not None:
                self._pending_dead.append(old)
            self._pending_rows[i] = self._pending_n + n
            self.payloads.pop(i, None)
        self._pending_n += len(id_list)
        self._pending.append((np.array([i.encode() for i in id_list]), int8,
                              v.astype(np.float16) if self._f16 is not None else None))
        self._scan.add(self._codes(v))
        for i, p in zip(id_list, payloads or [{}] * len(id_list), strict=True):
            if p:
                self.payloads[i] = dict(p)

    def _kill(self, rows: np.ndarray) -> int:
        """Tombstone flushed ``rows`` (``-1`` entries are skipped); returns how many."""
        hit = np.unique(rows[rows >= 0])
        self._alive[hit] = False
        self._dead += len(hit)
        return len(hit)

    def _flush(self) -> None:
        if not self._pending:
            return
        new_ids = np.concatenate([p[0] for p in self._pending])
        start = len(self._ids)
        self._int8 = np.concatenate([self._int8, *(p[1] for p in self._pending)])
        if self._f16 is not None:
            self._f16 = np.concatenate([self._f16, *(p[2] for p in self._pending if p[2] is not None)])
        self._pending = []
        self._path = None  # the vectors were copied into RAM; save() maps them again
        ids = np.concatenate([self._ids, new_ids])
        alive = np.ones(len(new_ids), dtype=bool)
        alive[self._pending_dead] = False
        self._dead += len(self._pending_dead)
        self._pending_rows, self._pending_n, self._pending_dead = {}, 0, []
        # Merge the new ids into the sorted order: equal ids go after the older rows (side="right").
        new_order = start + np.argsort(new_ids, kind="stable")
        at = np.searchsorted(ids[: start], ids[new_order], side="right", sorter=self._order)
        self._order = np.insert(self._order, at, new_order)
        self._ids = ids
        self._alive = np.concatenate([self._alive, alive])

    def _rows(self, ids: list[str], *, flush: bool = True) -> np.ndarray:
        """Row of each id, or -1 when absent or deleted (``flush=False``: among the flushed rows only)."""
        if flush:
            self._flush()
        if not len(self._ids):
            return np.full(len(ids), -1, dtype=np.int64)
        keys = np.array([i.encode() for i in ids])
        pos = np.searchsorted(self._ids, keys, side="right", sorter=self._order) - 1
        rows = self._order[np.clip(pos, 0, None)]
        found = (pos >= 0) & (self._ids[rows] == keys) & self._alive[rows]
        return np.where(found, rows, -1)

    def delete(self, ids: Any = None, *, where: Filter | None = None) -> int:
        """Delete ``ids`` (unknown ids are ignored), or the entries matching ``where`` (both given: the ids that
        match); returns how many were deleted."""
        node = parse_filter(where)
        if ids is None and node is None:
            raise ConfigError("delete() needs ids or where=; clear() deletes everything")
        self._flush()
        if ids is None:
            rows = np.flatnonzero(self._allowed(node))
        else:
            rows = self._rows(as_ids(ids))
            if node is not None:
                rows = rows[(rows >= 0) & self._allowed(node)[np.clip(rows, 0, None)]]
        rows = rows[rows >= 0]
        for r in rows:
            self.payloads.pop(self._ids[r].decode(), None)
        return self._kill(rows)

    def clear(self) -> None:
        """Delete every entry (the calibration and settings stay)."""
        self._flush()
        self._kill(np.flatnonzero(self._alive))
        self.payloads = {}

    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]:
        return [self.payloads.get(i, {}) for i in ids]

    def get(self, ids: Any = None, *, where: Filter | None = None, with_vectors: bool = False,
            limit: int | None = None) -> list[Record]:
        """The entries of ``ids`` that exist, in the order asked (or those matching ``where``, in insertion
        order, at most ``limit``). Vectors are the float16 copies when kept, else the int8 codes decoded."""
        node = parse_filter(where)
        self._flush()
        if ids is None:
            rows = np.flatnonzero(self._allowed(node) if node is not None else self._alive)
        else:
            rows = self._rows(as_ids(ids))
            rows = rows[rows >= 0]
            if node is not None:
                rows = rows[self._allowed(node)[rows]]
        if limit is not None:
            rows = rows[:limit]
        vectors: list[np.ndarray | None] = [None] * len(rows)
        if with_vectors and len(rows):
            order = np.argsort(rows)  # read the (memory-mapped) vectors in row order
            if self._f16 is not None:
                block = np.asarray(self._f16[rows[order]], dtype=np.float32)
            else:
                assert self.calibration is not None
                block = dequantize(np.asarray(self._int8[rows[order]]), self.calibration).astype(np.float32)
            vectors = list(block[np.argsort(order)])
        out = []
        for r, v in zip(rows, vectors, strict=True):
            i = self._ids[r].decode()
            out.append(Record(i, dict(self.payloads.get(i, {})), v))
        return out

    def _allowed(self, node: FilterNode | None) -> np.ndarray:
        """The live (flushed) rows whose payload matches ``node``. Each filter's matches are computed once per row
        and kept (32 filters at most), so a filter costs a pass over the payloads the first time only."""
        if node is None:
            return self._alive.copy()
        key = canonical(node)
        pred, mask = self._masks.pop(key, (None, np.zeros(0, dtype=bool)))
        if pred is None:
            pred = compile_filter(node)
        if len(mask) < len(self._ids):
            payloads = self.payloads
            new = np.fromiter((pred(payloads.get(i.decode(), {})) for i in self._ids[len(mask):]), dtype=bool,
                              count=len(self._ids) - len(mask))
            mask = np.concatenate([mask, new])
        if len(self._masks) >= 32:
            self._masks.pop(next(iter(self._masks)))
        self._masks[key] = (pred, mask)  # most recently used last
        return mask & self._alive

    # ------------------------------------------------------------------------------------------- search
    def search(self, queries: Any, k: int = 10, *, oversample: float = 4.0, rescore: Rescore = "int8",
               where: Filter | None = None) -> SearchResult:
        """Top ``k`` of each query: shortlist ``ceil(k * oversample)`` candidates, rescore them, keep ``k``.

        ``where`` (a metadata filter, :mod:`embedopt.stores.filters`) restricts the shortlist scan itself to the
        matching rows, so the search stays exact and returns ``k`` hits whenever ``k`` entries match."""
        q = self._check(queries)
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if oversample < 1:
            raise ConfigError(f"oversample must be >= 1, got {oversample}")
        if rescore not in RESCORES:
            raise ConfigError(f"rescore must be one of {RESCORES}, got {rescore!r}")
        if rescore == "float" and self._f16 is None:
            raise ConfigError("rescore='float' needs the float16 vectors: build the index with keep_float=True")
        node = parse_filter(where)
        self._flush()
        allowed = self._allowed(node) if node is not None else None
        alive = len(self._alive) - self._dead if allowed is None else int(allowed.sum())
        if alive == 0:
            return SearchResult([[] for _ in q], [np.zeros(0, dtype=np.float32) for _ in q])
        started = time.perf_counter()
        keep = min(alive, max(k, int(np.ceil(k * oversample))))
        codes, extra = self._codes(q), max(keep, 16)  # extra rows fetched to see the whole group tied at the cut

        def keys(rows: np.ndarray) -> np.ndarray:  # equal scores go by a hash of the id, never by storage order
            return tie_keys(self._ids[rows])

        if allowed is None:
            dead = len(self._ids) - alive
            found = tie_safe_top(self._scan.search, codes, keep, first=keep + dead + extra, limit=len(self._ids),
                                 usable=lambda r: self._alive[r], keys=keys, largest=isinstance(self._scan, FloatScan))
        else:  # the filter's rows only (deleted rows are not among them)
            found = tie_safe_top(lambda c, n: self._scan.search(c, n, allowed), codes, keep, first=keep + extra,
                                 limit=alive, usable=lambda r: np.ones(len(r), dtype=bool), keys=keys,
                                 largest=isinstance(self._scan, FloatScan))
        shortlisted = time.perf_counter()
        ids: list[list[str]] = []
        scores: list[np.ndarray] = []
        for j in range(len(q)):
            cand, cand_first = found[j]
            if rescore == "none":
                s = (-cand_first if isinstance(self._scan, BinaryScan) else cand_first).astype(np.float32)
            elif rescore == "int8":
                assert self.calibration is not None
                s = float_int8_scores(q[j], self._int8[np.sort(cand)], self.calibration)
                s = s[np.argsort(np.argsort(cand))]  # reads in row order (kind to memory maps), scores in cand order
            else:
                assert self._f16 is not None
                s = self._f16[cand].astype(np.float32) @ q[j]
            top = np.lexsort((keys(cand), -s))[:k]
            ids.append([self._ids[r].decode() for r in cand[top]])
            scores.append(s[top].astype(np.float32))
        done = time.perf_counter()
        return SearchResult(ids, scores, keep, {"shortlist": (shortlisted - started) * 1e3,
                                                "rescore": (done - shortlisted) * 1e3})

    # ------------------------------------------------------------------------------------------- persist
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index (deleted rows dropped) to ``folder`` and map its vectors from there from now on."""
        self._flush()
        if self.calibration is None:
            raise ConfigError("an empty index has nothing to save; add vectors first")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        keep = self._alive
        ids = self._ids[keep]
        arrays = {"codes.npy": self._scan.codes()[keep], "int8.npy": np.asarray(self._int8[keep]), "ids.npy": ids}
        if self._f16 is not None:
            arrays["float16.npy"] = np.asarray(self._f16[keep])
        tag = f".tmp-{os.getpid()}"
        for name, arr in arrays.items():
            with open(out / (name + tag), "wb") as f:
                np.save(f, arr, allow_pickle=False)
        with open(out / ("payloads.jsonl" + tag), "w", encoding="utf-8") as f:
            for i in ids:
                p = self.payloads.get(i.decode())
                if p:
                    f.write(json.dumps({"id": i.decode(), "payload": p}) + "\n")
        meta = {"format": _FORMAT, "version": _VERSION, "fingerprint": self.fingerprint.to_dict(), "dim": self.dim,
                "shortlist": self.shortlist, "count": len(ids), "keep_float": self._f16 is not None,
                "calibration": json.loads(self.calibration.to_json())}
        (out / ("index.json" + tag)).write_text(json.dumps(meta, indent=1))
        for name in [*arrays, "payloads.jsonl", "index.json"]:  # index.json last: it names a complete set
            os.replace(out / (name + tag), out / name)
        if self._f16 is None and (out / "float16.npy").exists():
            (out / "float16.npy").unlink()
        fresh = QuantizedIndex.load(out, backend="numpy" if isinstance(self._scan, BinaryScan)
                                    and self._scan.backend == "numpy" else "auto", threads=self._threads())
        self.__dict__.update(fresh.__dict__)
        return out

    def _threads(self) -> int | None:
        return self._scan.threads if isinstance(self._scan, BinaryScan) else None

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, expect: Fingerprint | None = None, mmap: bool = True,
             threads: int | None = None, backend: Literal["auto", "faiss", "numpy"] = "auto") -> QuantizedIndex:
        """Open an index saved by :meth:`save`. With ``expect`` (the embedder's document fingerprint), an index
        built in another embedding space is refused."""
        root = Path(folder)
        try:
            meta = json.loads((root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{root} holds no readable embedopt index ({exc}); build it with "
                              "QuantizedIndex(...).add(...).save(folder)") from exc
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ConfigError(f"{root} is not an embedopt quantized index of version {_VERSION}")
        fp = Fingerprint.from_dict(meta["fingerprint"])
        if expect is not None and expect.space_id != fp.space_id:
            raise ConfigError(f"the index in {root} holds vectors of {fp.id}, not of {expect.id}: another model or "
                              "settings. Re-embed the corpus with this model into a new index (embedopt migrate), "
                              "or query it with the model that built it.")
        try:
            calibration = Calibration.from_json(json.dumps(meta["calibration"]))
            index = cls(fp, dim=int(meta["dim"]), calibration=calibration, keep_float=bool(meta["keep_float"]),
                        shortlist=meta["shortlist"], threads=threads, backend=backend)
            mode: Literal["r"] | None = "r" if mmap else None
            codes = np.load(root / "codes.npy", allow_pickle=False)  # the shortlist codes live in RAM
            ids = np.load(root / "ids.npy", allow_pickle=False)
            int8 = np.load(root / "int8.npy", mmap_mode=mode, allow_pickle=False)
            f16 = np.load(root / "float16.npy", mmap_mode=mode, allow_pickle=False) if index.keep_float else None
            n = int(meta["count"])
            shapes_ok = (len(codes) == len(ids) == len(int8) == n and int8.shape[1] == index.dim
                         and (f16 is None or f16.shape == int8.shape))
            payloads = {}
            with open(root / "payloads.jsonl", encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    payloads[row["id"]] = row["payload"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the index in {root} is damaged or incomplete ({exc}); rebuild it from the "
                              "documents") from exc
        if not shapes_ok:
            raise ConfigError(f"the index in {root} is damaged: its files disagree on the number of vectors "
                              f"({n} expected); rebuild it from the documents")
        index._scan.add(codes)
        index._ids, index._int8, index._f16 = ids, int8, f16
        index._alive = np.ones(n, dtype=bool)
        index._order = np.argsort(ids, kind="stable")
        index.payloads = payloads
        index._path = root if mmap else None
        return index
