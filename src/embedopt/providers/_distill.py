"""Distil a static model2vec model from a local sentence-transformers model, offline, and cache it on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .._extras import require
from .._files import atomic_folder, cache_dir
from ..errors import ConfigError, ModelLoadError
from ._local import DEFAULT_MODEL, packaged_hint, resolve_model

__all__ = ["cached_distill", "distill"]

logger = logging.getLogger(__name__)
_META = "embedopt-distill.json"


def distill(model: str | os.PathLike[str] = DEFAULT_MODEL, output_dir: str | os.PathLike[str] | None = None, *,
            pca_dims: int | None = 256, device: str | None = None) -> Path:
    """Distil ``model`` into a static model saved in ``output_dir`` and return the folder.

    The source may be any sentence-transformers model that loads here: a folder, a packaged copy, or a hub id
    when the hub is reachable. ``pca_dims=None`` keeps the source dimension. Nothing is downloaded for a
    local source. The folder is written atomically: an interrupted run leaves no half-written model behind.
    """
    if pca_dims is not None and pca_dims < 2:
        raise ConfigError(f"pca_dims must be >= 2 or None, got {pca_dims}")
    m2v_distill = require("model2vec.distill", extra="static", feature="embedopt distill", package="model2vec")
    resolved = resolve_model(model)
    if output_dir is None:
        output_dir = cache_dir() / "static" / _cache_name(resolved.name, resolved.location, pca_dims)
    out = Path(output_dir)
    started = time.perf_counter()
    try:
        static = m2v_distill.distill(resolved.location, pca_dims=pca_dims, device=device)
    except Exception as exc:
        raise ModelLoadError(
            f"could not distil {os.fspath(model)!r}: {type(exc).__name__}: {exc}. The source must be a "
            "sentence-transformers model that loads on this machine." + packaged_hint(os.fspath(model))
        ) from exc
    with atomic_folder(out) as tmp:
        static.save_pretrained(str(tmp))
        meta = {"source": resolved.name, "source_from": resolved.source, "pca_dims": pca_dims,
                "seconds": round(time.perf_counter() - started, 1)}
        (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("distilled %s into %s in %.1fs", resolved.name, out, time.perf_counter() - started)
    return out


def cached_distill(model: str | os.PathLike[str] = DEFAULT_MODEL, *, pca_dims: int | None = 256,
                   device: str | None = None) -> Path:
    """Return the cached static model distilled from ``model``, distilling it first if there is none."""
    resolved = resolve_model(model)
    folder = cache_dir() / "static" / _cache_name(resolved.name, resolved.location, pca_dims)
    if (folder / _META).is_file():
        return folder
    # Minutes behind model2vec's bare "Encoding tokens" bar on a small CPU: say what it is, once.
    logger.warning("distilling a static model from %s (first use only, about 90 s on 2 CPU cores; model2vec's "
                   "progress bar encodes the source model's vocabulary); it is cached in %s", resolved.name, folder)
    return distill(model, folder, pca_dims=pca_dims, device=device)


def _cache_name(name: str, location: str, pca_dims: int | None) -> str:
    """Key the cache by the source's files (sizes and modification times) so a changed model is re-distilled."""
    stamp = [name, str(pca_dims)]
    loc = Path(location)
    if loc.is_dir():
        for f in sorted(loc.rglob("*")):
            if f.is_file():
                st = f.stat()
                stamp.append(f"{f.relative_to(loc)}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:12]
    return f"{name.split('/')[-1]}-static-{pca_dims or 'full'}-{digest}"
