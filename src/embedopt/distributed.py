"""Bulk embedding and index backfill on a Ray cluster, sharing the cache.

Documents are read with Ray Data (jsonl or parquet, or any Ray ``Dataset`` of your own) and embedded by a pool
of actors, each holding one :class:`~embedopt.Embedder` (the model is loaded once per actor, on CPU or GPU). The
Embedder's cache sits in front of the model: with a ``redis://`` tier in the cache spec every actor on every node
shares it, and a text any actor (or any earlier job) embedded is not computed again.

Each batch an actor embeds becomes one **shard**: a parquet file (``id``, ``vector``) or an ``.npy`` file with
its ids beside it, written to a temporary name and renamed, so a shard is whole or absent. A shard is named by a
stable key, the hash of its ids: a task that Ray runs again after a worker died writes the same name with the
same content. The driver appends each shard it receives to ``manifest.jsonl``; only shards listed there count.
A job run again over the same output skips the ids of every listed shard (resume by id), so a job killed at any
point loses nothing and doubles nothing.

Two entry points build the pipeline for you (:func:`embed_files`, and :func:`backfill` for
``embedopt migrate start --ray``); :class:`Embed` and :class:`EmbedShards` are the callable classes to hand to
``Dataset.map_batches`` in a pipeline of your own, and :func:`run` drives one over any ``Dataset``.

Ray is an optional extra (``pip install "embedopt[ray]"``), imported only when a function here is called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._extras import require
from ._files import atomic_file, atomic_write_text
from .errors import ConfigError, EmbedOptError
from .fingerprint import INPUT_TYPES, InputType

if TYPE_CHECKING:
    from .embedder import Embedder

__all__ = ["DistributedReport", "Embed", "EmbedShards", "ShardInfo", "backfill", "connect", "embed_files",
           "migrate", "read_shards", "run", "shard_key"]

ShardFormat = Literal["parquet", "npy"]
_FORMATS = ("parquet", "npy")
_FEATURE = "distributed embedding (embedopt.distributed, --ray)"
_MANIFEST = "manifest.jsonl"
_JOB = "job.json"


def _ray() -> Any:
    return require("ray", extra="ray", feature=_FEATURE)


def _ray_data() -> Any:
    _ray()
    return require("ray.data", extra="ray", feature=_FEATURE, package="ray[data]")


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``), or with ``None``
    the one ``RAY_ADDRESS`` or a local ``ray start`` names, else start a local one; Ray Data's own progress
    output is turned down (embedopt reports progress). Nothing happens when Ray is already initialized in this
    process (a pipeline of your own)."""
    ray = _ray()
    if ray.is_initialized():
        return
    ray.init(address=address or None, logging_level="WARNING", log_to_driver=False)
    ctx = _ray_data().DataContext.get_current()
    ctx.enable_progress_bars = False  # embedopt reports progress itself (a bar with the cache hit rate)
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's per-operator progress lines


# ------------------------------------------------------------------------------------------------- shards
def shard_key(ids: Sequence[str]) -> str:
    """The stable name of the shard holding ``ids``: the same ids give the same name, in any order."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(i.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _digests(ids: Sequence[str]) -> np.ndarray:
    """128-bit digests of ids (``S16``): how the resume filter compares ids, compactly and vectorized."""
    return np.array([hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=16).digest() for i in ids],
                    dtype="S16")


def _write_shard(folder: Path, key: str, ids: list[str], vectors: np.ndarray, fmt: ShardFormat) -> str:
    """Write one shard whole or not at all; returns its file name (relative to ``folder``)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
        table = pa.table({"id": pa.array(ids, pa.string()),
                          "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
        name = f"shard-{key}.parquet"
        with atomic_file(folder / name, "wb") as f:
            pq.write_table(table, f)
        return name
    name = f"shard-{key}.npy"
    atomic_write_text(folder / f"shard-{key}.ids.json", json.dumps(ids))
    with atomic_file(folder / name, "wb") as f:
        np.save(f, vectors, allow_pickle=False)
    return name


def _read_shard(folder: Path, name: str) -> tuple[list[str], np.ndarray]:
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(folder / name)
        col = table.column("vector").combine_chunks()
        width = col.type.list_size
        vectors = col.values.to_numpy(zero_copy_only=False).reshape(-1, width)
        return [str(i) for i in table.column("id").to_pylist()], vectors
    ids = json.loads((folder / name.replace(".npy", ".ids.json")).read_text())
    return [str(i) for i in ids], np.load(folder / name, allow_pickle=False)


def _read_ids(folder: Path, name: str) -> list[str]:
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [str(i) for i in pq.read_table(folder / name, columns=["id"]).column("id").to_pylist()]
    return [str(i) for i in json.loads((folder / name.replace(".npy", ".ids.json")).read_text())]


def _manifest(folder: Path) -> list[dict[str, Any]]:
    path = folder / _MANIFEST
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill of the driver: that shard is not committed
            continue
    return out


def read_shards(output: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Every committed shard of ``output`` (those its manifest lists), as ids and one array of vectors, in
    manifest order. Shard files not in the manifest (from tasks Ray ran again) are ignored."""
    folder = Path(output)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for entry in _manifest(folder):
        got_ids, vecs = _read_shard(folder, entry["file"])
        ids += got_ids
        blocks.append(vecs)
    if not blocks:
        return [], np.zeros((0, 0), dtype=np.float32)
    return ids, np.concatenate(blocks)


# ------------------------------------------------------------------------------------------------ actors
@dataclass(frozen=True)
class _Settings:
    model: str
    input_type: InputType = "document"
    cache: str | None = None
    dim: int | None = None
    precision: str = "float32"
    normalize: bool = True
    calibration_path: str | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_type not in INPUT_TYPES:
            raise ConfigError(f"input_type must be one of {INPUT_TYPES}, got {self.input_type!r}")

    def embedder(self) -> Embedder:
        from .embedder import Embedder

        return Embedder.from_spec(self.model, cache=self.cache, dim=self.dim, precision=self.precision,
                                  normalize=self.normalize, calibration_path=self.calibration_path,
                                  provider_options=self.provider_options or None, show_progress=False)


class Embed:
    """A callable class for ``Dataset.map_batches``: adds a ``vector`` column (the embeddings of ``text_column``).

    One Embedder per actor: the model is loaded once, in the constructor. Use it in a pipeline of your own::

        ds.map_batches(Embed, fn_constructor_kwargs={"model": "minilm", "cache": "memory,redis://h:6379/0"},
                       compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1, batch_size=256)

    Args:
        model: a model spec (``minilm``, ``static:FOLDER``, ``st:NAME``, ``openai:MODEL``, ...).
        text_column: the column holding the texts.
        input_type: ``document`` or ``query``.
        cache: a cache spec; put a ``redis://`` tier in it to share the cache between actors and nodes.
        dim, precision, normalize, calibration_path, provider_options: as for ``Embedder.from_spec``.
    """

    def __init__(self, model: str, *, text_column: str = "text", input_type: InputType = "document",
                 cache: str | None = None, dim: int | None = None, precision: str = "float32",
                 normalize: bool = True, calibration_path: str | None = None,
                 provider_options: Mapping[str, Any] | None = None) -> None:
        self.settings = _Settings(model, input_type, cache, dim, precision, normalize, calibration_path,
                                  dict(provider_options or {}))
        self.text_column = text_column
        self.embedder = self.settings.embedder()

    def _embed(self, texts: Sequence[Any]) -> np.ndarray:
        return self.embedder.embed([str(t) if not isinstance(t, str) else t for t in texts],
                                   self.settings.input_type)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.text_column not in batch:
            raise ConfigError(f"no column {self.text_column!r} in the batch (columns: {sorted(batch)}); "
                              "pass text_column=")
        return {**batch, "vector": self._embed(list(batch[self.text_column]))}


class EmbedShards(Embed):
    """A callable class for ``Dataset.map_batches`` that writes each batch's vectors as one shard in ``output``
    (a folder every worker can reach) and returns one row per shard: ``shard``, ``file``, ``rows``,
    ``computed`` (texts the model embedded), ``cache_hits``, ``seconds``, ``worker``. Rows need ``id`` and
    ``text`` columns. :func:`run` drives it and keeps the manifest; see the module docstring."""

    def __init__(self, model: str, output: str, *, format: ShardFormat = "parquet", **options: Any) -> None:
        super().__init__(model, **options)
        if format not in _FORMATS:
            raise ConfigError(f"format must be one of {_FORMATS}, got {format!r}")
        self.output = Path(output)
        self.format: ShardFormat = format
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        ids = [str(i) for i in batch["id"]]
        if not ids:  # every row of this batch was done already
            return {"shard": np.array([""]), "file": np.array([""]), "rows": np.array([0]),
                    "computed": np.array([0]), "cache_hits": np.array([0]), "seconds": np.array([0.0]),
                    "worker": np.array([self.worker])}
        before = (self.embedder.stats.computed, self.embedder.stats.cache_hits)
        vectors = self._embed(list(batch["text"]))
        key = shard_key(ids)
        name = _write_shard(self.output, key, ids, vectors, self.format)
        s = self.embedder.stats
        return {"shard": np.array([key]), "file": np.array([name]), "rows": np.array([len(ids)]),
                "computed": np.array([s.computed - before[0]]), "cache_hits": np.array([s.cache_hits - before[1]]),
                "seconds": np.array([time.perf_counter() - started]), "worker": np.array([self.worker])}


def _prepare(batch: dict[str, np.ndarray], id_field: str | None, text_field: str,
             done: Any) -> dict[str, np.ndarray]:
    """Rows to ``id`` (str) and ``text``; drops ids already in a committed shard (``done``: a Ray reference to
    their sorted digests), which is how a job resumes."""
    column = id_field or next((c for c in ("_id", "id") if c in batch), None)
    if column is None or column not in batch:
        raise ConfigError(f"no id column {id_field or '_id or id'!r} in the input (columns: {sorted(batch)}); "
                          "choose it with id_field= (--id-field)")
    if text_field not in batch:
        raise ConfigError(f"no text column {text_field!r} in the input (columns: {sorted(batch)}); choose it "
                          "with text_field= (--field)")
    ids = np.array([str(i) for i in batch[column]], dtype=object)
    texts = batch[text_field]
    if done is not None and len(ids):
        digests = done if isinstance(done, np.ndarray) else _ray().get(done)
        keep = ~np.isin(_digests(list(ids)), digests)
        ids, texts = ids[keep], texts[keep]
    return {"id": ids, "text": texts}


# ------------------------------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class ShardInfo:
    """One committed shard, as the driver received it."""

    shard: str
    file: str
    rows: int
    computed: int
    cache_hits: int
    seconds: float
    worker: str


@dataclass
class DistributedReport:
    """What a job did. ``rows`` counts the ids written by this run; ``resumed`` the ids found already done."""

    output: str
    shards: int = 0
    rows: int = 0
    computed: int = 0
    cache_hits: int = 0
    resumed: int = 0
    seconds: float = 0.0
    workers: list[str] = field(default_factory=list)

    @property
    def docs_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def cache_hit_rate(self) -> float:
        looked = self.computed + self.cache_hits
        return self.cache_hits / looked if looked else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "docs_per_second": round(self.docs_per_second, 2),
                "cache_hit_rate": round(self.cache_hit_rate, 4)}


def _check_job(folder: Path, job: Mapping[str, Any]) -> None:
    """The output folder holds vectors of one embedding space and one layout: refuse to mix."""
    path = folder / _JOB
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in job.items() if old.get(k) != v}
        if diff:
            raise ConfigError(f"{folder} holds shards of another job ({diff}); vectors of two spaces or layouts "
                              "never meet: write to a new folder, or delete this one to start over")
    else:
        atomic_write_text(path, json.dumps(dict(job), indent=2) + "\n")


def _unwrap(exc: BaseException) -> BaseException:
    """The embedopt error inside a Ray task error, if there is one (Ray wraps errors raised in workers)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, EmbedOptError):
            return cur
        seen.add(id(cur))
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    return exc


def run(dataset: Any, output: str | os.PathLike[str], *, model: str, id_field: str | None = None,
        text_field: str = "text", input_type: InputType = "document", cache: str | None = None, dim: int | None = None,
        precision: str = "float32", normalize: bool = True, calibration_path: str | None = None,
        provider_options: Mapping[str, Any] | None = None, format: ShardFormat = "parquet", workers: int = 2,
        num_cpus: float = 1, num_gpus: float = 0, batch_size: int = 512, resume: bool = True,
        progress: bool | None = None, on_shard: Callable[[ShardInfo, list[str], np.ndarray], None] | None = None,
        on_progress: Callable[[DistributedReport], None] | None = None) -> DistributedReport:
    """Embed every row of a Ray ``dataset`` into shards under ``output`` on an actor pool; see the module
    docstring. Ray must be initialized (:func:`connect`).

    Args:
        dataset: a ``ray.data.Dataset`` with an id column (``id_field``; default ``_id`` or ``id``) and
            ``text_field``.
        output: a folder every worker can write to (local disk for one machine, a shared mount for a cluster).
        model, input_type, cache, dim, precision, normalize, calibration_path, provider_options: the Embedder
            each actor builds (see :class:`Embed`). Put a ``redis://`` tier in ``cache`` to share it.
        format: ``parquet`` (``id``, ``vector`` columns) or ``npy`` (vectors, and ids in ``.ids.json``).
        workers: actors in the pool; each takes ``num_cpus`` CPUs and ``num_gpus`` GPUs.
        batch_size: rows an actor embeds at once, and so the rows of one shard.
        resume: skip ids already in a committed shard of ``output`` (``False``: refuse a non-empty output).
        progress: a progress bar (``None``: when the output is a terminal).
        on_shard: called on the driver with each committed shard's info, ids and vectors (to fill a store).
        on_progress: called on the driver with the report so far after each shard.

    Returns:
        The :class:`DistributedReport` of this run.
    """
    if format not in _FORMATS:
        raise ConfigError(f"format must be one of {_FORMATS}, got {format!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    ray = _ray()
    rd = _ray_data()
    if not ray.is_initialized():
        raise ConfigError("Ray is not initialized; call embedopt.distributed.connect(address) first")
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if workers * num_cpus >= cpus:
        raise ConfigError(f"{workers} workers x {num_cpus} CPUs would take all {cpus:g} CPUs of the cluster and leave "
                          "none to read the input (the job would wait forever); use fewer workers or a smaller "
                          "num_cpus (--workers, --cpus-per-worker)")
    settings = _Settings(model, input_type, cache, dim, precision, normalize, calibration_path,
                         dict(provider_options or {}))
    # the spec checked and the space named before any work (no cache opened on the driver: the actors use it)
    fp = replace(settings, cache=None).embedder().fingerprint(settings.input_type)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    committed = _manifest(folder)
    if committed and not resume:
        raise ConfigError(f"{folder} already holds {len(committed)} shards; resume=True to continue that job, or "
                          "write to a new folder")
    _check_job(folder, {"fingerprint": fp.id, "dim": dim, "precision": precision, "format": format})
    done_ids = [i for e in committed for i in _read_ids(folder, e["file"])]
    report = DistributedReport(str(folder), resumed=len(done_ids))
    done: Any = None
    if done_ids:
        done = ray.put(np.unique(_digests(done_ids)))
    prepared = dataset.map_batches(_prepare, fn_args=(id_field, text_field, done), batch_size=4096)
    options = {"text_column": "text", "input_type": input_type, "cache": cache, "dim": dim,
               "precision": precision, "normalize": normalize, "calibration_path": calibration_path,
               "provider_options": dict(provider_options or {}), "format": format}
    shards = prepared.map_batches(EmbedShards, fn_constructor_args=(model, str(folder.resolve())),
                                  fn_constructor_kwargs=options, compute=rd.ActorPoolStrategy(size=workers),
                                  num_cpus=num_cpus, num_gpus=num_gpus or None, batch_size=batch_size)
    started = time.perf_counter()
    seen: set[str] = {e["shard"] for e in committed}
    workers_seen: set[str] = set()
    show = progress if progress is not None else os.isatty(2)
    bar = _bar(show, report.resumed)
    try:
        with (folder / _MANIFEST).open("a", encoding="utf-8") as manifest:
            for row in _rows(shards):
                info = ShardInfo(str(row["shard"]), str(row["file"]), int(row["rows"]), int(row["computed"]),
                                 int(row["cache_hits"]), float(row["seconds"]), str(row["worker"]))
                if info.rows == 0 or info.shard in seen:
                    continue  # an empty batch (everything was done), or a shard Ray delivered once already
                seen.add(info.shard)
                if on_shard is not None:
                    got_ids, vectors = _read_shard(folder, info.file)
                    on_shard(info, got_ids, vectors)
                manifest.write(json.dumps(asdict(info)) + "\n")
                manifest.flush()
                os.fsync(manifest.fileno())
                report.shards += 1
                report.rows += info.rows
                report.computed += info.computed
                report.cache_hits += info.cache_hits
                workers_seen.add(info.worker)
                report.seconds = time.perf_counter() - started
                report.workers = sorted(workers_seen)
                bar(info.rows, report)
                if on_progress is not None:
                    on_progress(report)
    except Exception as exc:
        inner = _unwrap(exc)
        if inner is not exc:
            raise inner from exc
        raise
    finally:
        bar(0, None)
    report.seconds = time.perf_counter() - started
    return report


def _rows(shards: Any) -> Iterator[Mapping[str, Any]]:
    yield from shards.iter_rows()


def _bar(show: bool, resumed: int) -> Callable[[int, DistributedReport | None], None]:
    """A tqdm bar (no total: counting a jsonl corpus would read it twice) with the cache hit rate."""
    if not show:
        return lambda n, r: None
    from tqdm.auto import tqdm

    bar = tqdm(desc="embed (ray)", unit="doc", initial=resumed)

    def update(n: int, report: DistributedReport | None) -> None:
        if report is None:
            bar.close()
            return
        bar.set_postfix(shards=report.shards, hit_rate=f"{report.cache_hit_rate:.0%}", workers=len(report.workers))
        bar.update(n)

    return update


def _read(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Any:
    rd = _ray_data()
    items = [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]
    if not items:
        raise ConfigError("no input paths given")
    suffixes = {Path(p).suffix for p in items if not Path(p).is_dir()}
    if suffixes <= {".parquet"} and suffixes:
        return rd.read_parquet(items)
    if suffixes <= {".jsonl", ".json"} and suffixes:
        return rd.read_json(items, lines=True)
    raise ConfigError(f"input must be .jsonl or .parquet files (one kind at a time), got {sorted(suffixes)}")


def _check_options(options: Mapping[str, Any], *, exclude: Sequence[str]) -> None:
    import inspect

    valid = sorted(set(inspect.signature(run).parameters) - set(exclude))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; valid ones: {valid}")


def embed_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                *, model: str = "minilm", address: str | None = None, store: Any = None,
                **options: Any) -> DistributedReport:
    """Read jsonl or parquet ``paths`` with Ray Data and embed them into shards under ``output`` (see :func:`run`
    for ``options``), joining the cluster at ``address`` first (:func:`connect`). With ``store`` (a
    :class:`~embedopt.stores.QuantizedIndex`, :class:`~embedopt.stores.QdrantStore`, ...), each committed
    shard's vectors are also added to it from the driver, under their ids."""
    _check_options(options, exclude=("dataset", "output", "model"))
    if "on_shard" in options and store is not None:
        raise ConfigError("pass either store= or on_shard=, not both")
    connect(address)
    if store is not None:
        options["on_shard"] = lambda info, ids, vectors: store.add(ids, vectors)
    return run(_read(paths), output, model=model, **options)


#: run() options a backfill sets itself (from the migration's version), so a caller may not
_BACKFILL_FIXED = ("dataset", "output", "model", "dim", "cache", "input_type", "on_shard")


def migrate(root: str | os.PathLike[str], model: str, *, dim: int | None = None, **options: Any) -> dict[str, Any]:
    """``embedopt migrate start --ray``: begin (or resume) the migration of a versioned index to ``model`` (as
    :func:`embedopt.versioning.start` does), then run its backfill on the Ray cluster (:func:`backfill`)."""
    from . import versioning as v

    _check_options({k: o for k, o in options.items() if k not in ("address", "cache", "save_every")},
                   exclude=_BACKFILL_FIXED)  # a typo is refused before the new version is created
    v._begin(root, model, dim)
    return backfill(root, **options)


def backfill(root: str | os.PathLike[str], *, address: str | None = None, cache: str | None = "memory,sqlite",
             save_every: float = 60.0, **options: Any) -> dict[str, Any]:
    """The backfill of a versioned index's migration (:func:`embedopt.versioning.start`) on a Ray cluster.

    The live version's documents missing from the target are embedded by the actor pool; the driver adds each
    shard to the target and saves it at least every ``save_every`` seconds and at the end. Resumable: ids
    already saved in the target are skipped, as the single-process backfill does. Returns the migration's
    status.
    """
    from . import versioning as v

    _check_options(options, exclude=_BACKFILL_FIXED)
    vi = v.VersionedIndex(root, cache=cache)
    m = v.migration(root)
    if m is None or m["state"] != "backfilling":
        raise ConfigError(f"no backfill in progress in {root}; start one with `embedopt migrate start`")
    target_version = vi.version(m["to"])
    source, target = vi.open(m["from"]), vi.open(m["to"])
    present = set(target.ids)
    todo = [i for i in source.ids if i not in present]
    if todo:
        import pyarrow as pa

        connect(address)
        texts = [p["text"] for p in source.get_payloads(todo)]
        ds = _ray_data().from_arrow(pa.table({"id": todo, "text": texts}))
        work = vi.root / "versions" / m["to"] / "ray-shards"
        shutil.rmtree(work, ignore_errors=True)  # scratch: what counts as done is what the target saved
        last = [time.monotonic()]

        def add(info: ShardInfo, ids: list[str], vectors: np.ndarray) -> None:
            target.add(ids, vectors, source.get_payloads(ids))
            if time.monotonic() - last[0] >= save_every:
                vi._save(m["to"], target)
                last[0] = time.monotonic()

        run(ds, work, model=target_version.model, dim=target_version.dim, cache=cache, input_type="document",
            on_shard=add, **options)
        vi._save(m["to"], target)
        shutil.rmtree(work, ignore_errors=True)
    if len(vi.open(m["to"])) < len(source):
        raise EmbedOptError(f"the backfill of {m['to']} is incomplete ({len(target)} of {len(source)} documents); "
                            "run it again: it resumes")
    m["state"] = "ready"
    atomic_write_text(vi.root / "migration.json", json.dumps(m, indent=2) + "\n")
    return v.status(root)
