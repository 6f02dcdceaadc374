"""What every benchmark shares: where results go, a description of the machine they ran on, and the one way a
result file is written (whole or not at all, so an interrupted run never leaves half a JSON file)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedopt._files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent

# bench/qdrant_edge.py has the name of the qdrant_edge package. The scripts import nothing else from this folder
# after _common, so it leaves the import path here and `import qdrant_edge` finds the package, not the script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
RESULTS = ROOT / "bench" / "results"
DATASETS = ROOT.parent / "shared" / "datasets"


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a figure was measured on (add library versions and thread counts as ``extra``)."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform(), **extra}


def write_results(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, json.dumps(data, indent=2) + "\n")


def median_ms(fn: Callable[[], Any], repeats: int, *, warm: bool = True) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs (after one warm-up run)."""
    if warm:
        fn()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1e3)
    return statistics.median(runs)
