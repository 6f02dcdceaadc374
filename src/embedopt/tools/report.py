"""Reports: a grid's results as a table in the terminal (rich when installed) and a PNG plot of quality against
bytes per vector and against query latency, with each model's float32 baseline marked; a drift history plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._extras import require
from .._files import atomic_file
from .evaluate import GridResult, Row

__all__ = ["plot", "plot_history", "pyplot", "save_figure", "table"]

_COLUMNS = ("model", "dim", "stored as", "RAM B/vec", "all B/vec", "NDCG@10", "kept", "R@100", "MRR@10", "MAP@100",
            "ms/query")


def _cells(r: Row) -> list[str]:
    kept = "—" if r.retention is None else f"{r.retention:.1%}"  # never a made-up 100%
    return [r.model, str(r.dim), r.label, f"{r.bytes_per_vector:,}", f"{r.bytes_kept:,}", f"{r.ndcg_at_10:.4f}",
            kept, f"{r.recall_at_100:.4f}", f"{r.mrr_at_10:.4f}", f"{r.map_at_100:.4f}", f"{r.ms_per_query:g}"]


def table(result: GridResult, *, use_rich: bool | None = None) -> str:
    """The rows as a table; printed with rich when it is installed (and ``use_rich`` is not False)."""
    title = (f"{result.dataset}: {result.documents:,} documents, {result.queries:,} queries; kept = NDCG@10 over "
             "float32 at the native dim; all B/vec = RAM codes + the int8 vectors a rescore reads")
    if use_rich is not False:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            t = Table(title=title)
            for c in _COLUMNS:
                t.add_column(c, justify="left" if c in ("model", "stored as") else "right")
            for r in result.rows:
                t.add_row(*_cells(r))
            console = Console(record=True, width=170)
            console.print(t)
            return console.export_text()
    widths = [max(len(c), *(len(_cells(r)[i]) for r in result.rows)) for i, c in enumerate(_COLUMNS)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(_cells(r), widths, strict=True)) for r in result.rows]
    text = "\n".join(lines)
    print(text)
    return text


def pyplot(feature: str) -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or an error naming ``pip install "embedopt[eval]"``."""
    matplotlib = require("matplotlib", extra="eval", feature=feature)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int) -> Path:
    """Save ``fig`` to ``path`` (its format from the suffix; PNG without one) atomically, and close it."""
    out = Path(path)
    with atomic_file(out, "wb") as f:
        fig.savefig(f, dpi=dpi, format=out.suffix[1:].lower() or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def plot(result: GridResult, path: str | os.PathLike[str]) -> Path:
    """Two panels: NDCG@10 against all the bytes kept per vector (RAM codes plus the int8 vectors a rescore reads;
    log scale) and against milliseconds per query; each model's float32 native-dim baseline dashed."""
    plt = pyplot("embedopt eval --plot")

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = {"float32": "o", "float16": "D", "int8": "s", "int8-symmetric": "v", "binary": "^"}
    for n, model in enumerate(dict.fromkeys(r.model for r in result.rows)):
        rows = [r for r in result.rows if r.model == model and r.rerank is None]
        color = f"C{n}"
        for ax, x in ((axes[0], "bytes_kept"), (axes[1], "ms_per_query")):
            for r in rows:
                ax.scatter(getattr(r, x), r.ndcg_at_10, color=color, marker=markers[r.precision],
                           alpha=0.85, s=40 if r.oversample is None else 70,
                           edgecolors="black" if r.oversample else "none")
                ax.annotate(f"{r.dim}", (getattr(r, x), r.ndcg_at_10), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            if model in result.baselines:
                ax.axhline(result.baselines[model], color=color, linestyle="--", linewidth=1,
                           label=f"{model}: float32 native-dim baseline")
    for ax, label in ((axes[0], "bytes kept per vector: RAM codes + int8 read by a rescore (log)"),
                      (axes[1], "search ms per query (log)")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    for p, m in markers.items():
        if any(r.precision == p for r in result.rows):
            axes[0].scatter([], [], color="grey", marker=m, label={"int8": "int8 docs, float query",
                                                                   "int8-symmetric": "int8 symmetric"}.get(p, p))
    axes[0].scatter([], [], color="grey", marker="^", s=70, edgecolors="black", label="binary + int8 rescore")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.dataset}: quality against cost (labels: dims)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_history(history: list[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """One panel per recorded figure over batches, alerts marked in red."""
    plt = pyplot("embedopt drift report --plot")

    keys = [k for k in history[0] if k not in ("batch", "ts", "fingerprint", "n", "alerts")
            and any(h.get(k) is not None for h in history)] if history else []
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(10, 2.2 * max(1, len(keys))), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=False):
        xs = [h["batch"] for h in history if h.get(key) is not None]
        ys = [h[key] for h in history if h.get(key) is not None]
        ax.plot(xs, ys, marker=".", linewidth=1)
        bad = [(h["batch"], h[key]) for h in history if any(a["metric"] == key for a in h["alerts"])]
        if bad:
            ax.scatter(*zip(*bad, strict=True), color="red", zorder=3, label="alert")
            ax.legend(fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("batch")
    fig.suptitle(title or "embedding drift")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
