"""The embedded store: compact codes in RAM for the shortlist, calibrated int8 (and optionally float16) vectors
on disk for rescoring.

Search has two steps. An exact scan of the RAM codes keeps the best ``ceil(k * oversample)`` candidates: Hamming
distance between binary codes (faiss ``IndexBinaryFlat``), or — the Matryoshka funnel — the inner product of a
short, renormalized prefix of the vectors. The candidates are then rescored with the float query against the
documents' int8 (or float16) vectors, never against the bits, and the best ``k`` returned.

An index records the fingerprint of the embedding space and the int8 calibration; loading it for another model
is refused. After :meth:`QuantizedIndex.save` (and on :meth:`QuantizedIndex.load`) the int8 and float16 vectors
are memory-mapped from the index folder, so only the codes and the ids stay in RAM.

**Files.** The folder holds ``index.json`` (settings, fingerprint, calibration, the index's identity),
``codes.npy``, ``ids.npy``, ``int8.npy``, ``float16.npy`` (with ``keep_float``), ``payloads.jsonl``, and
``manifest.json``: the size and sha256 of every other file in the folder and the same identity. It is written
whole beside its target and renamed into place. :meth:`QuantizedIndex.load` checks the manifest and the files'
agreement with one another, so a truncated, changed or garbage file, or one swapped in from another index of the
same shape, raises :class:`~embedopt.errors.IndexCorruptError` naming the file, never a wrong answer or a raw
exception. A folder saved before manifests existed is refused by default, with how to add one:
``QuantizedIndex.load(folder, verify=False).save(folder)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._files import atomic_folder
from ..codec import Codec
from ..errors import ConfigError, DimensionError, EmbedOptError, IndexCorruptError, InputError
from ..eval.metrics import tie_keys
from ..fingerprint import Fingerprint
from ..quantization import MIN_CALIBRATION_SAMPLES, Calibration, dequantize, float_int8_scores
from ._scan import BinaryScan, FloatScan, tie_safe_top
from .base import RESCORES, Record, Rescore, SearchResult, as_ids, check_counts, check_payloads, check_vectors
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
        payloads = check_payloads(payloads)
        check_counts(id_list, v, payloads)
        if len(set(id_list)) != len(id_list):
            raise InputError("ids must be unique within one add()")
        if not id_list:
            return
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
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if (not isinstance(oversample, (int, float, np.integer, np.floating)) or isinstance(oversample, bool)
                or not math.isfinite(oversample) or oversample < 1):
            raise ConfigError(f"oversample must be a finite number >= 1 (candidates kept = k x oversample), "
                              f"got {oversample!r}")
        k = int(k)
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
        """Write the index (deleted rows dropped) to ``folder`` and map its vectors from there from now on.

        The folder is written whole beside its target and renamed into place (a kill leaves the old folder or the
        new one), with a ``manifest.json`` of every file's size and sha256 and the index's identity, which
        :meth:`load` checks. An existing ``folder`` is replaced; one holding anything but an index is refused."""
        self._flush()
        if self.calibration is None:
            raise ConfigError("an empty index has nothing to save; add vectors first")
        out = Path(folder)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.json").is_file())):
            raise ConfigError(f"{out} exists and is not an embedopt index folder; save() replaces the folder "
                              "whole, so give it a new (or empty) folder")
        with atomic_folder(out) as tmp:
            index_id = uuid.uuid4().hex
            self._write_files(tmp, index_id)
            _write_manifest(tmp, index_id)  # last: it covers every file written above, whatever wrote it
        fresh = QuantizedIndex._open(out, expect=None, mmap=True, threads=self._threads(), verify=False,
                                     backend="numpy" if isinstance(self._scan, BinaryScan)
                                     and self._scan.backend == "numpy" else "auto")
        self.__dict__.update(fresh.__dict__)
        return out

    def _write_files(self, tmp: Path, index_id: str) -> None:
        """Write the index's files into the (new, empty) folder ``tmp``."""
        assert self.calibration is not None
        keep = self._alive
        ids = self._ids[keep]
        arrays = {"codes.npy": self._scan.codes()[keep], "int8.npy": np.asarray(self._int8[keep]), "ids.npy": ids}
        if self._f16 is not None:
            arrays["float16.npy"] = np.asarray(self._f16[keep])
        for name, arr in arrays.items():
            with open(tmp / name, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        with open(tmp / "payloads.jsonl", "w", encoding="utf-8") as f:
            for i in ids:
                p = self.payloads.get(i.decode())
                if p:
                    f.write(json.dumps({"id": i.decode(), "payload": p}) + "\n")
        meta = {"format": _FORMAT, "version": _VERSION, "index_id": index_id,
                "fingerprint": self.fingerprint.to_dict(), "dim": self.dim, "shortlist": self.shortlist,
                "count": len(ids), "keep_float": self._f16 is not None,
                "calibration": json.loads(self.calibration.to_json())}
        (tmp / "index.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    def _threads(self) -> int | None:
        return self._scan.threads if isinstance(self._scan, BinaryScan) else None

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, expect: Fingerprint | None = None, mmap: bool = True,
             threads: int | None = None, backend: Literal["auto", "faiss", "numpy"] = "auto",
             verify: bool = True) -> QuantizedIndex:
        """Open an index saved by :meth:`save`. With ``expect`` (the embedder's document fingerprint), an index
        built in another embedding space is refused (:class:`~embedopt.errors.ConfigError`).

        The folder is checked against its manifest: every file present with its size, and (``verify=True``) its
        sha256, which reads each file once; the files must belong to this index and agree with one another
        (shapes, dtypes, unique ids, payloads of known ids). Anything else raises
        :class:`~embedopt.errors.IndexCorruptError` naming the file and what to do. ``verify=False`` checks sizes
        only, for very large indexes on trusted disks, and opens a folder saved before manifests existed (with a
        warning; save it again to add one)."""
        return cls._open(Path(folder), expect=expect, mmap=mmap, threads=threads, backend=backend, verify=verify)

    @classmethod
    def _open(cls, root: Path, *, expect: Fingerprint | None, mmap: bool, threads: int | None,
              backend: Literal["auto", "faiss", "numpy"], verify: bool) -> QuantizedIndex:
        def damaged(name: str, what: str) -> IndexCorruptError:
            return IndexCorruptError(f"the index in {root} is damaged: {name} {what}; {_REBUILD}", path=str(root / name))

        if not root.is_dir() or not ((root / "index.json").is_file() or (root / _MANIFEST).is_file()):
            raise IndexCorruptError(f"{root} holds no embedopt index (no index.json); build one with "
                                    "QuantizedIndex(...).add(...).save(folder), or give the folder it was saved to",
                                    path=str(root))
        manifest = _check_manifest(root, verify, damaged)
        try:
            meta = json.loads((root / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise damaged("index.json", f"is not readable JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise IndexCorruptError(f"{root} is not an embedopt quantized index of version {_VERSION} (index.json "
                                    f"names another format); {_REBUILD}", path=str(root / "index.json"))
        if manifest is not None and meta.get("index_id") != manifest.get("index_id"):
            raise damaged("index.json", "belongs to another index than the manifest (files mixed from two saved "
                          "indexes)")
        try:
            fp = Fingerprint.from_dict(meta["fingerprint"])
            calibration = Calibration.from_json(json.dumps(meta["calibration"]))
            n = meta["count"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"count is {n!r}")
        except (EmbedOptError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise damaged("index.json", f"has unusable settings ({exc})") from exc
        if expect is not None and expect.space_id != fp.space_id:
            raise ConfigError(f"the index in {root} holds vectors of {fp.id}, not of {expect.id}: another model or "
                              "settings. Re-embed the corpus with this model into a new index (embedopt migrate), "
                              "or query it with the model that built it.")
        try:
            index = cls(fp, dim=meta["dim"], calibration=calibration, keep_float=bool(meta["keep_float"]),
                        shortlist=meta["shortlist"], threads=threads, backend=backend)
        except (EmbedOptError, KeyError, TypeError, ValueError) as exc:
            raise damaged("index.json", f"has unusable settings ({exc})") from exc
        mode: Literal["r"] | None = "r" if mmap else None

        def array(name: str, dtype: str, width: int, mapped: bool) -> np.ndarray:
            try:
                arr = np.load(root / name, mmap_mode=mode if mapped else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise damaged(name, f"is not a readable array ({type(exc).__name__}: {exc})") from exc
            want = (n,) if width == 0 else (n, width)
            if not isinstance(arr, np.ndarray) or arr.shape != want or np.dtype(arr.dtype).kind != dtype[0] or (
                    dtype != "S" and arr.dtype != np.dtype(dtype)):
                got = f"{getattr(arr, 'dtype', '?')} {getattr(arr, 'shape', '?')}"
                raise damaged(name, f"holds {got}, expected {dtype} of shape {want} (index.json counts {n})")
            return arr

        if isinstance(index._scan, BinaryScan):
            codes = array("codes.npy", "uint8", index._scan.nbytes, False)  # the shortlist codes live in RAM
        else:
            codes = array("codes.npy", "float32", index._scan.dim, False)
        ids = array("ids.npy", "S", 0, False)
        int8 = array("int8.npy", "int8", index.dim, True)
        f16 = array("float16.npy", "float16", index.dim, True) if index.keep_float else None
        try:
            names = {i.decode() for i in ids}
        except UnicodeDecodeError as exc:
            raise damaged("ids.npy", f"holds an id that is not UTF-8 ({exc})") from exc
        if len(names) != n or "" in names:
            raise damaged("ids.npy", "holds duplicated or empty ids")
        if codes.dtype.kind == "f" and not np.isfinite(codes).all():
            raise damaged("codes.npy", "holds NaN or infinity")
        index.payloads = _read_payloads(root, names, damaged)
        index._scan.add(np.ascontiguousarray(codes))
        index._ids, index._int8, index._f16 = ids, int8, f16
        index._alive = np.ones(n, dtype=bool)
        index._order = np.argsort(ids, kind="stable")
        index._path = root if mmap else None
        return index


_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "embedopt.quantized-index.manifest"
_REBUILD = "rebuild the index from the documents, or restore the folder from a backup"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path, index_id: str) -> None:
    """Size and sha256 of every file under ``folder`` (found by walking it, so files any feature wrote are
    covered), and the index's identity."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != _MANIFEST}
    text = json.dumps({"format": _MANIFEST_FORMAT, "version": 1, "index_id": index_id, "files": files}, indent=1)
    (folder / _MANIFEST).write_text(text, encoding="utf-8")


def _check_manifest(root: Path, verify: bool,
                    damaged: Callable[[str, str], IndexCorruptError]) -> dict[str, Any] | None:
    """The manifest, after checking every file it lists (size; sha256 when ``verify``); ``None`` for a folder
    saved without one, which only ``verify=False`` accepts."""
    path = root / _MANIFEST
    if not path.is_file():
        if verify:
            raise IndexCorruptError(
                f"{root} has no {_MANIFEST}: it was saved by an older embedopt or the file was lost, so its files "
                "cannot be checked. If you trust them, add one: QuantizedIndex.load(folder, verify=False)"
                f".save(folder); otherwise {_REBUILD}", path=str(path))
        log.warning("%s has no %s: its files are not checked; save the index again to add one", root, _MANIFEST)
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != _MANIFEST_FORMAT or not isinstance(files, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str)
                for e in files.values()):
            raise ValueError("not an index manifest")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise damaged(_MANIFEST, f"is not readable ({exc})") from exc
    for name in ("index.json", "codes.npy", "ids.npy", "int8.npy", "payloads.jsonl"):
        if name not in files:
            raise damaged(_MANIFEST, f"does not list {name}")
    for name, entry in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise damaged(_MANIFEST, f"names a file outside the folder ({name!r})")
        file = root / name
        if not file.is_file():
            raise damaged(name, "is missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise damaged(name, f"is {size} bytes, {entry['bytes']} when saved (truncated or replaced)")
        if verify and _sha256(file) != entry["sha256"]:
            raise damaged(name, "changed since it was saved (its sha256 differs from the manifest's)")
    return dict(manifest)


def _read_payloads(root: Path, ids: set[str],
                   damaged: Callable[[str, str], IndexCorruptError]) -> dict[str, dict[str, Any]]:
    payloads: dict[str, dict[str, Any]] = {}
    try:
        with open(root / "payloads.jsonl", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                row = json.loads(line)
                if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("payload"),
                                                                                               dict)):
                    raise ValueError(f"line {n} is not an id and a payload")
                if row["id"] not in ids or row["id"] in payloads:
                    raise ValueError(f"line {n} names an id that is not in the index, or one already seen")
                payloads[row["id"]] = row["payload"]
    except (OSError, ValueError) as exc:
        raise damaged("payloads.jsonl", f"is unusable ({exc})") from exc
    return payloads
