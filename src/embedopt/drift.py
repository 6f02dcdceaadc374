"""Embedding drift monitoring: watch what the vectors look like, batch after batch, and alert on a change.

Per batch the monitor records the mean vector norm (feed the model's raw vectors, ``Embedder(normalize=False)``,
for this signal: a normalized vector's norm is always 1, and models that end in a Normalize layer, such as
all-MiniLM-L6-v2, give none), the batch centroid's shift from the reference centroid
(``1 - cosine``; a reference batch is measured leaving itself out), the spread (mean cosine of the batch's vectors to their own centroid), and when given the share
of queries whose top-1 score is low and golden-set metrics (Recall@K, MRR). The first ``reference_batches``
batches set the reference: the centroid, and each figure's mean and standard deviation. Every later batch is
compared with it: a figure whose z-score passes ``z_threshold``, or that leaves a fixed band, raises an alert,
sent to the log (one warning line) and to ``on_alert``. A silent model switch moves the centroid to another
space; new kinds of documents move it within the space; the same distribution keeps it within its noise.

The history is kept in SQLite (``$EMBEDOPT_HOME/drift.sqlite3`` by default): numbers and JSON, no pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import cache_dir
from ._sqlite import connect
from .errors import ConfigError, DimensionError, InputError

__all__ = ["DriftAlert", "DriftMonitor"]

logger = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_batches (
    monitor TEXT NOT NULL, batch INTEGER NOT NULL, ts REAL NOT NULL, fingerprint TEXT, n INTEGER NOT NULL,
    metrics TEXT NOT NULL, alerts TEXT NOT NULL, PRIMARY KEY (monitor, batch));
CREATE TABLE IF NOT EXISTS drift_reference (
    monitor TEXT PRIMARY KEY, dim INTEGER NOT NULL, centroid BLOB NOT NULL, stats TEXT NOT NULL, batches INTEGER);
"""


@dataclass(frozen=True)
class DriftAlert:
    monitor: str
    batch: int
    metric: str
    value: float
    expected: float
    """The reference mean (or the band's nearest edge)."""
    z: float | None
    message: str


def _default_db() -> Path:
    return cache_dir() / "drift.sqlite3"


class DriftMonitor:
    """Record per-batch figures of embeddings and alert when one leaves its band.

    Args:
        name: the monitor's name (one per index or model in production); its history is kept under it.
        db: SQLite file for the history (default ``$EMBEDOPT_HOME/drift.sqlite3``); ``":memory:"`` keeps none.
        reference_batches: batches that set the reference before any alert can fire. 20 batches of 32 MiniLM
            vectors kept the largest z-score of 50 further same-distribution batches at 1.7-4.3 over 12 trials,
            below the default threshold of 6; with 10, one trial reached 5.3.
        z_threshold: alert when ``|value - mean| / std`` of a figure passes this.
        bands: fixed ``(low, high)`` limits per figure (``{"low_top1_share": (0, 0.2)}``), checked from batch one.
        low_score: a query whose top-1 similarity is below this counts as low.
        on_alert: called with each :class:`DriftAlert`.
    """

    FIGURES = ("mean_norm", "centroid_shift", "spread", "low_top1_share")

    def __init__(self, name: str, *, db: str | os.PathLike[str] | None = None, reference_batches: int = 20,
                 z_threshold: float = 6.0, bands: Mapping[str, tuple[float, float]] | None = None,
                 low_score: float = 0.3, on_alert: Callable[[DriftAlert], None] | None = None) -> None:
        if reference_batches < 2:
            raise ConfigError(f"reference_batches must be >= 2 to estimate a spread, got {reference_batches}")
        if z_threshold <= 0:
            raise ConfigError(f"z_threshold must be > 0, got {z_threshold}")
        self.name = name
        self.reference_batches = reference_batches
        self.z_threshold = z_threshold
        self.bands = dict(bands or {})
        self.low_score = low_score
        self.on_alert = on_alert
        path = ":memory:" if db == ":memory:" else str(Path(db) if db is not None else _default_db())
        self.db = path
        self._lock = threading.Lock()
        self._conn = _open(path)
        self._pending: list[tuple[np.ndarray, dict[str, float]]] = []  # reference batches so far
        self._centroid: np.ndarray | None = None
        self._stats: dict[str, tuple[float, float]] = {}
        self._load_reference()
        row = self._conn.execute("SELECT MAX(batch) FROM drift_batches WHERE monitor = ?", (name,)).fetchone()
        self.batches = int(row[0]) + 1 if row and row[0] is not None else 0

    def __repr__(self) -> str:
        state = "ready" if self._centroid is not None else f"learning ({len(self._pending)}/{self.reference_batches})"
        return f"DriftMonitor({self.name!r}, batches={self.batches}, reference={state}, db={self.db!r})"

    # ------------------------------------------------------------------------------------------- reference
    def _load_reference(self) -> None:
        row = self._conn.execute("SELECT dim, centroid, stats FROM drift_reference WHERE monitor = ?",
                                 (self.name,)).fetchone()
        if row is not None:
            self._centroid = np.frombuffer(row[1], dtype="<f4").reshape(int(row[0])).astype(np.float32)
            self._stats = {k: (float(v[0]), float(v[1])) for k, v in json.loads(row[2]).items()}

    def _fix_reference(self) -> None:
        centroids = np.stack([c for c, _ in self._pending])
        centroid = centroids.mean(axis=0).astype(np.float32)
        # Leave one out: each reference batch's shift is measured against the centroid of the others, as a new
        # batch's is against a centroid it did not help make (in-sample shifts are too small, and alarm falsely).
        total = centroids.sum(axis=0)
        figures = [{**f, "centroid_shift": _shift(c, (total - c) / (len(centroids) - 1))}
                   for c, f in self._pending]
        stats: dict[str, tuple[float, float]] = {}
        for key in figures[0]:
            values = [f[key] for f in figures if not math.isnan(f[key])]
            if values:
                mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                stats[key] = (mean, max(std, 1e-4 * abs(mean), 1e-6))
        self._centroid, self._stats = centroid, stats
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO drift_reference VALUES (?, ?, ?, ?, ?)",
                               (self.name, len(centroid), centroid.astype("<f4").tobytes(), json.dumps(stats),
                                len(self._pending)))
        self._pending = []

    def reset_reference(self) -> None:
        """Forget the reference (after an intended change, such as a model migration); the next batches set it."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM drift_reference WHERE monitor = ?", (self.name,))
        self._centroid, self._stats, self._pending = None, {}, []

    # ------------------------------------------------------------------------------------------- observe
    def observe(self, vectors: Any, *, top1_scores: Any = None, golden: Mapping[str, float] | None = None,
                fingerprint: str | None = None) -> list[DriftAlert]:
        """Record one batch; returns the alerts it raised (also logged and sent to ``on_alert``)."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or len(v) < 2:
            raise InputError(f"a batch is a 2-D array of at least 2 vectors, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise InputError("the batch contains NaN or infinity; drop those vectors before observing")
        if self._centroid is not None and v.shape[1] != len(self._centroid):
            raise DimensionError(f"the batch is {v.shape[1]}-d, the reference {len(self._centroid)}-d: a model "
                                 "change; call reset_reference() after an intended one")
        norms = np.linalg.norm(v, axis=1)
        unit = v / np.maximum(norms[:, None], 1e-12)
        centroid = unit.mean(axis=0)
        c_unit = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        figures = {"mean_norm": float(norms.mean()), "spread": float((unit @ c_unit).mean()),
                   "low_top1_share": float("nan")}
        if top1_scores is not None:
            s = np.asarray(top1_scores, dtype=np.float32)
            figures["low_top1_share"] = float((s < self.low_score).mean()) if len(s) else float("nan")
        for key, value in (golden or {}).items():
            figures[f"golden_{key}"] = float(value)
        alerts: list[DriftAlert] = []
        batch = self.batches
        if self._centroid is None:
            figures["centroid_shift"] = float("nan")
            self._pending.append((centroid.astype(np.float32), figures))
            if len(self._pending) >= self.reference_batches:
                self._fix_reference()
        else:
            figures["centroid_shift"] = _shift(centroid, self._centroid)
            alerts = self._check(batch, figures)
        alerts += self._check_bands(batch, figures)
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO drift_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (self.name, batch, time.time(), fingerprint, len(v),
                                json.dumps({k: (None if math.isnan(x) else x) for k, x in figures.items()}),
                                json.dumps([a.__dict__ for a in alerts])))
        self.batches += 1
        for a in alerts:
            logger.warning(a.message)
            if self.on_alert is not None:
                self.on_alert(a)
        return alerts

    def _check(self, batch: int, figures: dict[str, float]) -> list[DriftAlert]:
        out = []
        for key, value in figures.items():
            if key not in self._stats or math.isnan(value):
                continue
            mean, std = self._stats[key]
            z = (value - mean) / std
            if abs(z) > self.z_threshold:
                out.append(DriftAlert(self.name, batch, key, value, mean, round(z, 1),
                                      f"embedding drift in {self.name!r} batch {batch}: {key} = {value:.4g}, "
                                      f"reference {mean:.4g} ± {std:.2g} (z = {z:.1f}); a model or data change? "
                                      "Check the provider's fingerprint and the incoming documents"))
        return out

    def _check_bands(self, batch: int, figures: dict[str, float]) -> list[DriftAlert]:
        out = []
        for key, (low, high) in self.bands.items():
            value = figures.get(key, float("nan"))
            if not math.isnan(value) and not low <= value <= high:
                edge = low if value < low else high
                out.append(DriftAlert(self.name, batch, key, value, edge, None,
                                      f"embedding drift in {self.name!r} batch {batch}: {key} = {value:.4g} is "
                                      f"outside its band [{low}, {high}]"))
        return out

    # ------------------------------------------------------------------------------------------- history
    def history(self) -> list[dict[str, Any]]:
        """Every recorded batch, oldest first: batch, time, fingerprint, size, figures, alerts."""
        rows = self._conn.execute("SELECT batch, ts, fingerprint, n, metrics, alerts FROM drift_batches "
                                  "WHERE monitor = ? ORDER BY batch", (self.name,)).fetchall()
        return [{"batch": b, "ts": ts, "fingerprint": fp, "n": n, **json.loads(m), "alerts": json.loads(a)}
                for b, ts, fp, n, m, a in rows]

    def close(self) -> None:
        self._conn.close()


def _shift(centroid: np.ndarray, reference: np.ndarray) -> float:
    a = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    b = reference / max(float(np.linalg.norm(reference)), 1e-12)
    return float(1.0 - a @ b)


def _open(path: str | Path) -> sqlite3.Connection:
    """The history database, or ConfigError naming the file when it is not one (a text file, a folder)."""
    try:
        return connect(path, timeout=10, schema=_SCHEMA)
    except sqlite3.Error as exc:
        raise ConfigError(f"drift history {os.fspath(path)!r} is not a usable SQLite database ({exc}); give "
                          "another file with --db/db=, or move this one away") from exc


def monitors(db: str | os.PathLike[str] | None = None) -> list[str]:
    """The monitor names recorded in ``db``."""
    conn = _open(Path(db) if db is not None else _default_db())
    try:
        return [r[0] for r in conn.execute("SELECT DISTINCT monitor FROM drift_batches ORDER BY monitor")]
    finally:
        conn.close()
