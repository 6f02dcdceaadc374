import json
import subprocess
import sys

import numpy as np
import pytest

from embedopt.cli import main

pytestmark = pytest.mark.slow


def test_embed_stdin_to_npy_with_static_model(static_model_dir, tmp_path):
    out = tmp_path / "v.npy"
    run = subprocess.run([sys.executable, "-m", "embedopt.cli", "embed", "-", "-o", str(out), "-m",
                          f"static:{static_model_dir}", "--dim", "64", "--precision", "ubinary"],
                         input="list directory contents\n\ncopy files\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    arr = np.load(out, allow_pickle=False)
    assert arr.shape == (2, 8) and arr.dtype == np.uint8
    assert "fingerprint=model2vec." in run.stderr


def test_embed_jsonl_keeps_ids(static_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"_id": "ls.1", "text": "list directory contents"}\n{"_id": "cp.1", "text": "copy files"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["embed", str(src), "-o", str(out), "-m", f"static:{static_model_dir}", "--input-type", "query"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ls.1", "cp.1"] and len(rows[0]["vector"]) == 256


def test_info_prints_fingerprints(static_model_dir, capsys):
    assert main(["info", "-m", f"static:{static_model_dir}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["native_dim"] == 256 and report["bytes_per_vector"]["binary"] == 32
    assert report["fingerprints"]["query"] != report["fingerprints"]["document"]


def test_errors_exit_2_with_the_message(static_model_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"_id": "a", "body": "no text field"}\n')
    assert main(["embed", str(src), "-o", str(tmp_path / "o.npy"), "-m", f"static:{static_model_dir}"]) == 2
    assert "line 1 has no text in field 'text'" in capsys.readouterr().err
    assert main(["embed", str(src), "-o", str(tmp_path / "o.csv")]) == 2
    assert "must end in .npy or .jsonl" in capsys.readouterr().err
    good = tmp_path / "in.txt"
    good.write_text("hello\n")
    assert main(["embed", str(good), "-o", str(tmp_path / "o.npy"), "-m", f"static:{static_model_dir}",
                 "--dim", "999"]) == 2
    assert "native dimension 256" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_cache_warm_stats_clear(static_model_dir, tmp_path, capsys, redis_server):
    src = tmp_path / "in.txt"
    src.write_text("list directory contents\ncopy files\nlist directory contents\n")
    spec = f"{redis_server.url},sqlite:{tmp_path / 'v.sqlite3'}"
    model = f"static:{static_model_dir}"
    assert main(["cache", "warm", str(src), "-m", model, "--cache", spec]) == 0
    assert "warmed 2 unique texts as documents: 2 computed, 0 already cached" in capsys.readouterr().err
    assert main(["cache", "warm", str(src), "-m", model, "--cache", spec, "--input-type", "query"]) == 0
    assert main(["cache", "warm", str(src), "-m", model, "--cache", spec]) == 0
    assert "0 computed, 2 already cached" in capsys.readouterr().err.splitlines()[-1]

    assert main(["cache", "stats", "--cache", spec, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["redis"]["entries"] == 4 and report["sqlite"]["entries"] == 4
    fingerprints = report["sqlite"]["fingerprints"]
    assert sorted(fingerprints.values()) == [2, 2]
    doc_fp = next(fp for fp in fingerprints if ".document." in fp)

    # the vectors the CLI cached are the ones an Embedder with the same cache finds
    from embedopt import Embedder
    from embedopt.specs import load_provider

    e = Embedder(load_provider(model), cache=f"sqlite:{tmp_path / 'v.sqlite3'}")
    e.embed_documents(["copy files"])
    assert e.stats.cache_hits == 1 and e.stats.computed == 0

    assert main(["cache", "clear", "--cache", spec, "--fingerprint", doc_fp]) == 0
    assert "redis: removed 2 entries" in capsys.readouterr().out
    assert main(["cache", "stats", "--cache", spec]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and ".query." in out and ".document." not in out
    assert main(["cache", "clear", "--cache", spec]) == 0
    assert main(["cache", "stats", "--cache", "memory"]) == 0


def test_cache_bad_spec_exits_2(capsys):
    assert main(["cache", "stats", "--cache", "memcached://x"]) == 2
    assert "unknown cache tier" in capsys.readouterr().err
