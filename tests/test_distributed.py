"""embedopt.distributed on a real local Ray cluster started here: a head (no CPUs, so all work lands on the
workers) and two worker nodes on 127.0.0.1, a real redis-server as the shared cache, the static model.

What it shows: the shards hold exactly what the single-process path computes; a rerun over a finished output
computes nothing (resume), and a new output over the same Redis computes nothing either (the shared cache); a
worker node killed mid-job leaves every id in exactly one committed shard.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import SAMPLE

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs ray: pip install "embedopt[ray]"')

MiB = 2**20


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from embedopt.distributed import connect
    from embedopt.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "embedopt\[ray\]"'):
        connect()


def test_unknown_options_are_refused_before_any_work(tmp_path):
    from embedopt.distributed import embed_files, migrate
    from embedopt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['wokers'\]; valid ones: .*'workers'"):
        embed_files(tmp_path / "corpus.jsonl", tmp_path / "out", wokers=2)
    with pytest.raises(ConfigError, match="unknown option"):
        migrate(tmp_path / "idx", "minilm", batchsize=4)
    assert not (tmp_path / "out").exists() and not (tmp_path / "idx").exists()


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # quick failure detection, so the killed node is noticed in a second or two rather than in 30
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                      "object_store_memory": 80 * MiB, "_system_config": system})
    workers = [c.add_node(num_cpus=2, object_store_memory=80 * MiB) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    from .redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    rows = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines() if line.strip()]
    path = tmp_path_factory.mktemp("input") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in rows))
    return path, {r["_id"]: r["text"] for r in rows}


@pytest.fixture(scope="module")
def spec(static_model_dir: Path) -> str:
    return f"static:{static_model_dir}"


@pytest.fixture(scope="module")
def single_process(spec: str, corpus) -> dict[str, np.ndarray]:
    """The reference: the same model embedded in this process with no cache, as `embedopt embed` does."""
    from embedopt import Embedder

    _, texts = corpus
    ids = list(texts)
    vectors = Embedder.from_spec(spec, cache=None, show_progress=False).embed([texts[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))


@pytest.fixture(scope="module")
def first_run(cluster, redis, corpus, spec, tmp_path_factory):
    """`embedopt embed corpus.jsonl -o DIR ... --ray` (Ray is initialized here, so it joins this cluster)."""
    from embedopt.cli import main
    from embedopt.distributed import DistributedReport

    path, _ = corpus
    out = tmp_path_factory.mktemp("first") / "shards"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["embed", str(path), "-o", str(out), "-m", spec, "--cache", f"memory,{redis.url}",
                     "--workers", "2", "--batch-size", "50", "--no-progress", "--ray"]) == 0
    fields = json.loads(printed.getvalue())
    report = DistributedReport(**{k: v for k, v in fields.items() if k not in ("docs_per_second", "cache_hit_rate")})
    return out, report


def _by_id(out: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    from embedopt.distributed import read_shards

    ids, vectors = read_shards(out)
    return ids, dict(zip(ids, vectors, strict=True))


@pytest.mark.slow
@needs_ray
def test_shards_equal_the_single_process_path(first_run, corpus, single_process):
    """The first run is the CLI's: `embedopt embed ... --ray`."""
    out, report = first_run
    ids, got = _by_id(out)
    assert sorted(ids) == sorted(corpus[1])  # every id, once
    assert len(ids) == len(set(ids))
    for i, vec in single_process.items():
        np.testing.assert_array_equal(got[i], vec)
    assert report.rows == len(corpus[1]) and report.shards == len(corpus[1]) // 50
    assert report.computed == len(corpus[1]) and report.cache_hits == 0  # a fresh Redis: all computed once
    assert all(":" in w for w in report.workers)


@pytest.mark.slow
@needs_ray
def test_rerun_after_completion_computes_nothing(first_run, corpus, spec, redis, tmp_path):
    from embedopt.distributed import embed_files

    out, _ = first_run
    path, texts = corpus
    manifest = (out / "manifest.jsonl").read_text()
    again = embed_files(path, out, model=spec, cache=f"memory,{redis.url}", workers=2, batch_size=50,
                        progress=False)
    assert (again.rows, again.computed, again.shards, again.resumed) == (0, 0, 0, len(texts))
    assert (out / "manifest.jsonl").read_text() == manifest  # nothing written again

    # A new output over the same shared Redis: every vector comes from the cache, none from the model; the
    # driver also fills a Qdrant store (qdrant-client's local mode) from the committed shards.
    store = None
    if importlib.util.find_spec("qdrant_client") is not None:
        from embedopt import Embedder
        from embedopt.stores import QdrantStore

        store = QdrantStore(Embedder.from_spec(spec).fingerprint("document"), collection="docs", quantization="none")
    fresh = embed_files(path, tmp_path / "again", model=spec, cache=f"memory,{redis.url}", workers=2,
                        batch_size=80, format="npy", progress=False, store=store)
    assert (fresh.rows, fresh.computed, fresh.cache_hits) == (len(texts), 0, len(texts))
    ids, got = _by_id(tmp_path / "again")
    assert sorted(ids) == sorted(texts)
    for i, vec in _by_id(out)[1].items():
        np.testing.assert_array_equal(got[i], vec)
    if store is not None:
        assert len(store) == len(texts)
        some = sorted(texts)[:5]
        found = store.search(np.stack([got[i] for i in some]), k=1)
        assert [row[0] for row in found.ids] == some


@pytest.mark.slow
@needs_ray
def test_an_output_of_another_layout_is_refused(first_run, corpus, spec, redis):
    from embedopt.distributed import embed_files
    from embedopt.errors import ConfigError

    out, _ = first_run
    with pytest.raises(ConfigError, match="another job"):
        embed_files(corpus[0], out, model=spec, dim=64, cache=f"memory,{redis.url}", progress=False)


@pytest.mark.slow
@needs_ray
def test_migrate_start_on_ray(cluster, corpus, spec, tmp_path):
    """`embedopt migrate start ... --ray`: the backfill of a versioned index on the cluster."""
    from embedopt.cli import main
    from embedopt.versioning import VersionedIndex, status

    _, texts = corpus
    root = tmp_path / "index"
    ids = list(texts)
    VersionedIndex.build(root, spec, [texts[i] for i in ids], ids, cache=None)
    assert main(["migrate", "start", str(root), "-m", spec, "--dim", "64", "--cache", "none", "--batch-size", "64",
                 "--no-progress", "--ray"]) == 0
    st = status(root)
    assert st["migration"]["state"] == "ready" and st["documents_v2"] == st["documents_v1"] == len(texts)
    vi = VersionedIndex(root, cache=None)
    assert set(vi.open("v2").ids) == set(ids)
    assert not (root / "versions" / "v2" / "ray-shards").exists()  # the scratch shards are gone
    hits = [vi.search(texts[i], k=1, version="v2")[0][0] for i in ids[:20]]
    assert sum(h == i for h, i in zip(hits, ids[:20], strict=True)) >= 18  # each document finds itself


@pytest.mark.slow
@needs_ray
def test_worker_killed_mid_job_loses_and_doubles_nothing(cluster, corpus, spec, redis, single_process, tmp_path):
    """Runs last: it leaves the cluster one worker short. A worker node is SIGKILLed (raylet, object store and
    actor) as soon as its actors have written a few shards (Ray runs ahead of the driver, so the kill is timed
    on the files, not on what the driver has received); Ray restarts the actor and reruns the lost tasks."""
    from embedopt.distributed import embed_files

    c, workers = cluster
    path, texts = corpus
    out = tmp_path / "killed"
    killed: dict[str, float] = {}

    def kill_when_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(list(out.glob("shard-*.npy"))) >= 3:
                c.remove_node(workers[0], allow_graceful=False)
                killed["at"] = time.time()
                killed["shards"] = len(list(out.glob("shard-*.npy")))
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_when_started, daemon=True)
    watcher.start()
    cache = redis.url.rsplit("/", 1)[0] + "/1"  # another Redis db: nothing cached, everything computed
    report = embed_files(path, out, model=spec, cache=f"memory,{cache}", workers=2, batch_size=2, format="npy",
                         progress=False)
    watcher.join()
    assert killed, "the worker was never killed"
    ids, got = _by_id(out)
    assert len(ids) == len(set(ids)) == len(texts)  # nothing doubled, nothing lost
    assert sorted(ids) == sorted(texts)
    for i, vec in single_process.items():
        np.testing.assert_array_equal(got[i], vec)
    assert report.rows == len(texts) and report.shards == len(texts) // 2
    # the job was still computing when the node died: committed shards were written after the kill
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    after = [e for e in entries if os.stat(out / e["file"]).st_mtime > killed["at"]]
    assert killed["shards"] < len(entries) and after
