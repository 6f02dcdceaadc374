"""The grid runner, its table, plot and CLI, on the committed manpages sample with the distilled static model."""

from __future__ import annotations

import json

import pytest

from embedopt.cli import main
from embedopt.tools.evaluate import default_dims, run_grid
from embedopt.tools.report import plot, table

from .conftest import SAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid(static_model_dir):
    return run_grid(SAMPLE, models=[f"static:{static_model_dir}"], dims=[256, 64], cache="memory",
                    precisions=["float32", "float16", "int8", "int8-symmetric", "binary"], oversample=[None, 4.0],
                    latency_queries=20,
                    show_progress=False)


def test_every_configuration_is_derived_and_scored(grid):
    labels = [(r.dim, r.label) for r in grid.rows]
    assert labels == [(d, p) for d in (256, 64) for p in ("float32", "float16", "int8 docs, float query",
                                                          "int8 symmetric", "binary", "binary+int8@4x")]
    by = {(r.dim, r.label): r for r in grid.rows}
    base = by[(256, "float32")]
    assert base.retention == 1.0 and base.bytes_per_vector == 1024 and by[(256, "binary")].bytes_per_vector == 32
    assert by[(256, "int8 docs, float query")].ndcg_at_10 == pytest.approx(base.ndcg_at_10, abs=0.01)
    assert by[(256, "binary")].ndcg_at_10 < base.ndcg_at_10 - 0.03  # bits alone lose quality...
    assert by[(256, "binary+int8@4x")].ndcg_at_10 >= 0.98 * base.ndcg_at_10  # ...and rescoring wins it back
    assert by[(64, "float32")].ndcg_at_10 < base.ndcg_at_10  # a static model is not Matryoshka-trained
    assert all(r.ms_per_query > 0 and 0 <= r.map_at_100 <= 1 for r in grid.rows)
    assert default_dims(384) == [384, 256, 128, 64] and default_dims(1024) == [1024, 768, 512, 256, 128, 64]


def test_table_json_and_plot(grid, tmp_path):
    text = table(grid, use_rich=False)
    assert "binary+int8@4x" in text and "NDCG@10" in text
    data = json.loads(grid.to_json(tmp_path / "r.json").read_text())
    assert data["documents"] == 400 and len(data["rows"]) == 12 and data["rows"][0]["label"] == "float32"
    png = plot(grid, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_writes_results_and_plot(static_model_dir, tmp_path, capsys):
    code = main(["eval", str(SAMPLE), "--models", f"static:{static_model_dir}", "--dims", "128",
                 "--precisions", "float32,binary", "--oversample", "none,4", "--cache", "none", "--plain",
                 "-o", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png"), "--no-progress"])
    assert code == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["float32", "binary", "binary+int8@4x"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert "binary+int8@4x" in capsys.readouterr().out
