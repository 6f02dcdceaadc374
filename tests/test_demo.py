"""The README's main command runs, offline, and prints what it promises."""

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_runs_offline_and_reports_every_configuration(static_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "examples/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(r"^(MiniLM-L6 \(384-d\)|static \(256-d\))\s+(\S+(?: rescore@40)?)\s+(\d+)\s+([\d.]+)\s+([\d.]+)%",
                      run.stdout, re.M)
    got = {(m, p): (int(b), float(n)) for m, p, b, n, _ in rows}
    assert got[("MiniLM-L6 (384-d)", "float32")][0] == 1536 and got[("MiniLM-L6 (384-d)", "binary")][0] == 48
    # MiniLM beats the static model, and rescoring recovers what binary codes lose
    assert got[("MiniLM-L6 (384-d)", "float32")][1] > got[("static (256-d)", "float32")][1]
    assert got[("MiniLM-L6 (384-d)", "binary+int8 rescore@40")][1] >= got[("MiniLM-L6 (384-d)", "binary")][1]
    assert "Encode speed on this CPU" in run.stdout
