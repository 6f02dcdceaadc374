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
