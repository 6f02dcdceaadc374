"""Migration end to end, static model → MiniLM (two embedding spaces), on the manpages sample: a backfill killed
midway and resumed (no document missing or doubled), queries served from the live version throughout, a shadow
report, cut-over and rollback, nothing deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from embedopt import ConfigError
from embedopt import versioning as v
from embedopt.cli import main
from embedopt.eval import load_beir

from .conftest import ROOT, SAMPLE

pytestmark = pytest.mark.slow


def test_static_to_minilm_with_a_kill_during_backfill(static_model_dir, tmp_path, capsys):
    ds = load_beir(SAMPLE)
    root = tmp_path / "index"
    cache = f"memory,sqlite:{tmp_path / 'vectors.sqlite3'}"
    static = f"static:{static_model_dir}"
    vi = v.VersionedIndex.build(root, static, ds.doc_texts(), ds.doc_ids, cache=cache)
    query = ds.queries[ds.query_ids[0]]
    before = vi.search(query, 5)
    assert vi.live == "v1" and len(vi.open("v1")) == 400

    p = v.plan(root, "minilm")
    assert not p["same_space"] and p["documents"] == 400 and p["new_version"] == "v2"

    # Serve queries from the live version in a thread for the whole migration.
    served, stop = [], threading.Event()

    def serve() -> None:
        reader = v.VersionedIndex(root, cache=cache)
        while not stop.is_set():
            served.append((reader.live, reader.search(query, 5)))
            time.sleep(0.05)

    server = threading.Thread(target=serve)
    server.start()
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "embedopt.cli", "migrate", "start", str(root), "--model",
                                 "minilm", "--batch-size", "20", "--cache", cache, "--no-progress"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            current = root / "versions" / "v2" / "CURRENT"
            if current.is_file() and 60 <= len(v.VersionedIndex(root).open("v2")) < 400:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = len(v.VersionedIndex(root).open("v2"))
        assert 60 <= partial < 400  # killed midway; what it saved is intact
        assert v.migration(root)["state"] == "backfilling"

        done = v.start(root, "minilm", batch_size=20, cache=cache, show_progress=False)  # resume
        assert done["documents_v2"] == 400 and done["migration"]["state"] == "ready"
        ids = v.VersionedIndex(root).open("v2").ids
        assert len(ids) == len(set(ids)) == 400 and set(ids) == set(ds.doc_ids)  # none missing, none doubled

        report = v.shadow(root, {q: ds.queries[q] for q in ds.query_ids[:100]}, qrels=ds.qrels)
        assert report["from"] == "v1" and report["to"] == "v2" and 0 <= report["overlap@10"] < 1
        assert report["ndcg@10_v2"] > report["ndcg@10_v1"]  # MiniLM beats the static model
    finally:
        stop.set()
        server.join()
    assert served and all(live == "v1" and hits == before for live, hits in served)  # served from v1 throughout

    after = v.cutover(root)
    assert after["live"] == "v2" and after["previous"] == "v1"
    minilm_hits = v.VersionedIndex(root, cache=cache).search(query, 5)
    assert minilm_hits != before
    back = v.rollback(root)
    assert back["live"] == "v1" and v.VersionedIndex(root, cache=cache).search(query, 5) == before
    assert sorted(back["versions"]) == ["v1", "v2"] and back["documents_v2"] == 400  # nothing deleted

    assert main(["migrate", "status", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["migration"]["state"] == "rolled_back"


def test_dual_write_during_a_migration_and_refusals(static_model_dir, tmp_path):
    ds = load_beir(SAMPLE)
    root = tmp_path / "index"
    static = f"static:{static_model_dir}"
    vi = v.VersionedIndex.build(root, static, ds.doc_texts()[:50], ds.doc_ids[:50], cache="memory")
    with pytest.raises(ConfigError, match="not ready"):
        v.cutover(root)
    with pytest.raises(ConfigError, match="already holds"):
        v.VersionedIndex.build(root, static, ["x"], ["x"])
    v.start(root, "minilm", batch_size=25, cache="memory", show_progress=False)
    vi.add_texts(["a brand new page about tar archives"], ["new.1"])  # written to both versions
    assert "new.1" in vi.open("v1") and "new.1" in vi.open("v2")
    with pytest.raises(ConfigError, match="in progress"):
        v.start(root, f"static:{static_model_dir}", cache="memory")
