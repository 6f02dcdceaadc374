"""Versioned embedded indexes and safe migration between embedding models.

A versioned index is a folder::

    ROOT/LIVE.json                   {"live": "v1", "previous": null}: the pointer, replaced atomically
    ROOT/versions/v1/version.json    the model spec and dim that version was built with
    ROOT/versions/v1/CURRENT         the generation folder holding the saved QuantizedIndex (replaced atomically)
    ROOT/migration.json              the migration in progress, if any

A migration (:func:`start`) creates the new version, and while it runs :meth:`VersionedIndex.add_texts` writes
new documents to both versions. The backfill re-embeds the live version's documents into the new one in batches,
saving after each, through the embedding cache, so a killed backfill resumes where it stopped: ids already in the
new version are skipped, none is missing or doubled. Queries are served from the live version throughout.
:func:`shadow` compares both on sample queries (overlap@k, and NDCG@10 with judgements); :func:`cutover` swaps
the pointer, :func:`rollback` swaps it back. Nothing is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import atomic_write_text
from .embedder import Embedder
from .errors import ConfigError
from .stores import QuantizedIndex

__all__ = ["VersionedIndex", "backfill", "cutover", "plan", "rollback", "shadow", "start", "status"]


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _read_json(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """A JSON object holding ``keys``, or ConfigError naming the file and what to do."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing; restore the versioned index folder from a backup") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); restore it from a backup, or rewrite it") from exc
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ConfigError(f"{path} is not what embedopt wrote there (expected an object with "
                          f"{', '.join(keys)}); restore it from a backup, or rewrite it")
    return data


@dataclass(frozen=True)
class Version:
    name: str
    model: str
    dim: int | None


class VersionedIndex:
    """Index versions under one folder, and the pointer naming the live one. See the module docstring."""

    def __init__(self, root: str | os.PathLike[str], *, cache: str | None = "memory,sqlite") -> None:
        self.root = Path(root)
        self.cache = cache
        if not (self.root / "LIVE.json").is_file():
            raise ConfigError(f"{self.root} is not a versioned index (no LIVE.json); create one with "
                              "VersionedIndex.build(root, model, texts, ids)")
        self._embedders: dict[str, Embedder] = {}
        self._opened: dict[str, tuple[str, QuantizedIndex]] = {}  # version -> (generation, its loaded index)

    # ------------------------------------------------------------------------------------------- layout
    @classmethod
    def build(cls, root: str | os.PathLike[str], model: str, texts: Sequence[str], ids: Sequence[str], *,
              metadatas: Sequence[Mapping[str, Any]] | None = None, version: str = "v1", dim: int | None = None,
              cache: str | None = "memory,sqlite") -> VersionedIndex:
        """A new versioned index whose first (live) version holds ``texts`` embedded with ``model``."""
        r = Path(root)
        if (r / "LIVE.json").exists():
            raise ConfigError(f"{r} already holds a versioned index; migrate it instead of building over it")
        r.mkdir(parents=True, exist_ok=True)
        _new_version(r, version, model, dim)
        _write_json(r / "LIVE.json", {"live": version, "previous": None, "updated": time.time()})
        vi = cls(r, cache=cache)
        vi._add(version, texts, ids, metadatas)
        return vi

    @property
    def pointer(self) -> dict[str, Any]:
        return _read_json(self.root / "LIVE.json", ("live",))

    @property
    def live(self) -> str:
        live = self.pointer["live"]
        if not isinstance(live, str) or not (self.root / "versions" / live / "version.json").is_file():
            raise ConfigError(f"{self.root / 'LIVE.json'} names version {live!r}, which {self.root / 'versions'} "
                              "does not hold; point it at one that exists (embedopt migrate rollback), or restore "
                              "the folder from a backup")
        return live

    def versions(self) -> list[str]:
        return sorted(p.name for p in (self.root / "versions").iterdir() if (p / "version.json").is_file())

    def version(self, name: str) -> Version:
        meta = _read_json(self.root / "versions" / name / "version.json", ("model",))
        return Version(name, str(meta["model"]), meta.get("dim"))

    def embedder(self, name: str) -> Embedder:
        if name not in self._embedders:
            v = self.version(name)
            self._embedders[name] = Embedder.from_spec(v.model, cache=self.cache, dim=v.dim, show_progress=False)
        return self._embedders[name]

    def open(self, name: str) -> QuantizedIndex:
        """The saved index of version ``name`` (memory-mapped), or an empty one of its model's space. It is loaded
        again only when the version's CURRENT generation changed (another process saved), not on every query."""
        folder = self.root / "versions" / name
        current = folder / "CURRENT"
        e = self.embedder(name)
        if not current.is_file():
            return QuantizedIndex(e.fingerprint("document"), dim=e.dim)
        gen = current.read_text().strip()
        if not gen or "/" in gen or not (folder / gen).is_dir():
            raise ConfigError(f"{current} names {gen!r}, not a saved generation of {folder}; restore the folder "
                              "from a backup, or rebuild the version")
        cached = self._opened.get(name)
        if cached is not None and cached[0] == gen:
            return cached[1]
        index = QuantizedIndex.load(folder / gen, expect=e.fingerprint("document"))
        self._opened[name] = (gen, index)
        return index

    def _save(self, name: str, index: QuantizedIndex) -> None:
        """Save into a new generation folder, then replace CURRENT atomically: a kill leaves the old or the new."""
        folder = self.root / "versions" / name
        gen = f"g{time.time_ns()}"
        self._opened.pop(name, None)  # until saved, the changed index is not what CURRENT names
        index.save(folder / gen)  # the index now maps the new generation's files
        atomic_write_text(folder / "CURRENT", gen)
        self._opened[name] = (gen, index)
        for old in folder.glob("g*"):
            if old.name != gen:
                shutil.rmtree(old, ignore_errors=True)

    def _add(self, name: str, texts: Sequence[str], ids: Sequence[str],
             metadatas: Sequence[Mapping[str, Any]] | None) -> None:
        if not texts:
            return
        index = self.open(name)
        vectors = self.embedder(name).embed_documents(list(texts))
        metas = metadatas or [{} for _ in texts]
        index.add(list(ids), vectors, [{**m, "text": t} for m, t in zip(metas, texts, strict=True)])
        self._save(name, index)

    # ------------------------------------------------------------------------------------------- serving
    def add_texts(self, texts: Sequence[str], ids: Sequence[str],
                  metadatas: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add documents to the live version, and to the migration's target while one is in progress."""
        self._add(self.live, texts, ids, metadatas)
        m = migration(self.root)
        if m is not None and m["state"] in ("backfilling", "ready"):
            self._add(m["to"], texts, ids, metadatas)

    def search(self, query: str, k: int = 10, *, version: str | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (id, score) from the live version (read at call time), or from ``version``."""
        name = version or self.live
        found = self.open(name).search(self.embedder(name).embed_query(query), k)
        return list(zip(found.ids[0], (float(s) for s in found.scores[0]), strict=True))


def _new_version(root: Path, name: str, model: str, dim: int | None) -> None:
    folder = root / "versions" / name
    if folder.exists():
        raise ConfigError(f"version {name!r} already exists in {root}")
    folder.mkdir(parents=True)
    _write_json(folder / "version.json", {"model": model, "dim": dim, "created": time.time()})


def migration(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(root) / "migration.json"
    return _read_json(path, ("from", "to", "model", "state")) if path.is_file() else None


# ------------------------------------------------------------------------------------------------ migration
def plan(root: str | os.PathLike[str], model: str, *, dim: int | None = None) -> dict[str, Any]:
    """What a migration to ``model`` would do: the spaces, the documents to re-embed, the version it creates."""
    vi = VersionedIndex(root)
    live = vi.version(vi.live)
    target = Embedder.from_spec(model, cache=None, dim=dim, show_progress=False)
    index = vi.open(vi.live)
    source_fp = vi.embedder(vi.live).fingerprint("document")
    return {"live": vi.live, "live_model": live.model, "live_fingerprint": source_fp.id,
            "target_model": model, "target_fingerprint": target.fingerprint("document").id,
            "same_space": source_fp.space_id == target.fingerprint("document").space_id,
            "documents": len(index), "new_version": _next_version(vi)}


def _next_version(vi: VersionedIndex) -> str:
    numbers = [int(v[1:]) for v in vi.versions() if v[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1}"


def start(root: str | os.PathLike[str], model: str, *, dim: int | None = None, batch_size: int = 256,
          cache: str | None = "memory,sqlite", show_progress: bool = True,
          after_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Begin (or resume) the migration to ``model``: create the new version, then backfill it."""
    _begin(root, model, dim)
    return backfill(root, batch_size=batch_size, cache=cache, show_progress=show_progress, after_batch=after_batch)


def _begin(root: str | os.PathLike[str], model: str, dim: int | None) -> dict[str, Any]:
    """Create the migration's new version (or find the one in progress): the first half of :func:`start`, shared
    with the backfill on a Ray cluster (``embedopt.distributed``)."""
    vi = VersionedIndex(root, cache=None)
    m = migration(root)
    if m is None or m["state"] in ("cutover", "rolled_back", "done"):
        name = _next_version(vi)
        _new_version(vi.root, name, model, dim)
        m = {"from": vi.live, "to": name, "model": model, "dim": dim, "state": "backfilling", "started": time.time()}
        _write_json(vi.root / "migration.json", m)
    elif m["model"] != model:
        raise ConfigError(f"a migration to {m['model']} ({m['to']}) is in progress; finish or roll it back first")
    return m


def backfill(root: str | os.PathLike[str], *, batch_size: int = 256, cache: str | None = "memory,sqlite",
             show_progress: bool = True, after_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Re-embed the live version's documents missing from the target, ``batch_size`` at a time, saving after
    each batch; resumable."""
    from .batching import progress_bar

    vi = VersionedIndex(root, cache=cache)
    m = migration(root)
    if m is None or m["state"] != "backfilling":
        raise ConfigError(f"no backfill in progress in {root}; start one with `embedopt migrate start`")
    source = vi.open(m["from"])
    target = vi.open(m["to"])
    present = set(target.ids)
    todo = [i for i in source.ids if i not in present]
    with progress_bar(len(todo), enabled=show_progress, desc=f"backfill {m['to']}") as update:
        for at in range(0, len(todo), batch_size):
            ids = todo[at: at + batch_size]
            payloads = source.get_payloads(ids)
            texts = [p["text"] for p in payloads]
            target.add(ids, vi.embedder(m["to"]).embed_documents(texts), payloads)
            vi._save(m["to"], target)
            update(len(ids))
            if after_batch is not None:
                after_batch(len(target), len(source))
    m["state"] = "ready"
    _write_json(vi.root / "migration.json", m)
    return status(root)


def status(root: str | os.PathLike[str]) -> dict[str, Any]:
    vi = VersionedIndex(root)
    m = migration(root)
    out: dict[str, Any] = {"live": vi.live, "previous": vi.pointer.get("previous"), "versions": vi.versions()}
    for name in vi.versions():
        out[f"documents_{name}"] = len(vi.open(name))
    if m is not None:
        out["migration"] = {k: m[k] for k in ("from", "to", "model", "state")}
    return out


def shadow(root: str | os.PathLike[str], queries: Mapping[str, str], *, k: int = 10,
           qrels: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """Run sample queries against the live version and the migration's target: mean overlap@k of their top k,
    and NDCG@10 of each where judgements exist. Serving is unchanged."""
    from .eval.metrics import evaluate

    vi = VersionedIndex(root)
    m = migration(root)
    if m is None:
        raise ConfigError("no migration to compare against; start one first")
    a_name, b_name = m["from"], m["to"]
    a_index, b_index = vi.open(a_name), vi.open(b_name)
    qids = list(queries)
    texts = [queries[q] for q in qids]
    runs = {}
    for name, index in ((a_name, a_index), (b_name, b_index)):
        found = index.search(vi.embedder(name).embed(texts, "query"), k)
        runs[name] = dict(zip(qids, found.ids, strict=True))
    overlap = sum(len(set(runs[a_name][q]) & set(runs[b_name][q])) / k for q in qids) / max(1, len(qids))
    report: dict[str, Any] = {"queries": len(qids), "k": k, "from": a_name, "to": b_name,
                              f"overlap@{k}": round(overlap, 4)}
    if qrels:
        judged = {q: qrels[q] for q in qids if q in qrels}
        for name in (a_name, b_name):
            report[f"ndcg@10_{name}"] = round(evaluate(runs[name], judged)["ndcg@10"], 4)
    return report


def cutover(root: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Point LIVE at the migration's target, atomically. Refused before the backfill is complete."""
    vi = VersionedIndex(root)
    m = migration(root)
    if m is None or (m["state"] != "ready" and not force):
        raise ConfigError(f"the migration is not ready to cut over ({(m or {}).get('state')}); finish the "
                          "backfill with `embedopt migrate start`, or pass force=True")
    assert m is not None
    _write_json(vi.root / "LIVE.json", {"live": m["to"], "previous": m["from"], "updated": time.time()})
    m["state"] = "cutover"
    _write_json(vi.root / "migration.json", m)
    return status(root)


def rollback(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Point LIVE back at the previous version, atomically; both versions stay on disk."""
    vi = VersionedIndex(root)
    previous = vi.pointer.get("previous")
    if not previous:
        raise ConfigError("there is no previous version to roll back to")
    _write_json(vi.root / "LIVE.json", {"live": previous, "previous": vi.live, "updated": time.time()})
    m = migration(root)
    if m is not None:
        m["state"] = "rolled_back"
        _write_json(vi.root / "migration.json", m)
    return status(root)
