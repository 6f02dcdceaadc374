"""Drift monitoring on real vectors: a silent model switch and a data shift are flagged, the same distribution
raises no false alarm over 50 batches, and the history survives a restart."""

from __future__ import annotations

import numpy as np
import pytest

from embedopt import ConfigError, DimensionError, Embedder, InputError
from embedopt.cli import main
from embedopt.drift import DriftMonitor
from embedopt.eval import load_beir

from .conftest import DEBIAN, SAMPLE

pytestmark = pytest.mark.slow
BATCH = 32


@pytest.fixture(scope="module")
def raw_minilm(minilm):
    """MiniLM's raw (unnormalized) vectors of the manpages sample, so the norm is a signal too."""
    ds = load_beir(SAMPLE)
    return Embedder(minilm, normalize=False, show_progress=False), ds.doc_texts()


def batches(vectors: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [vectors[rng.choice(len(vectors), BATCH, replace=False)] for _ in range(n)]


@pytest.fixture(scope="module")
def manpage_vectors(raw_minilm):
    embedder, texts = raw_minilm
    return embedder.embed_documents(texts)


def learned(vectors: np.ndarray, **options) -> DriftMonitor:
    monitor = DriftMonitor("test", db=":memory:", **options)
    for b in batches(vectors, monitor.reference_batches, seed=1):
        assert monitor.observe(b) == []
    return monitor


def test_same_distribution_raises_no_false_alarm_over_50_batches(manpage_vectors):
    monitor = learned(manpage_vectors)
    alerts = [a for b in batches(manpage_vectors, 50, seed=2) for a in monitor.observe(b)]
    assert alerts == []
    assert len(monitor.history()) == monitor.reference_batches + 50


def test_a_silent_switch_to_another_384d_model_fires_in_the_first_batch(manpage_vectors, raw_minilm):
    from embedopt.providers import StaticProvider
    from embedopt.providers.static import cached_distill

    other = Embedder(StaticProvider(cached_distill(pca_dims=None)), normalize=False, show_progress=False)
    _, texts = raw_minilm
    switched = other.embed_documents(texts)
    assert switched.shape[1] == manpage_vectors.shape[1] == 384  # same dim: nothing else would notice
    seen = []
    monitor = learned(manpage_vectors, on_alert=seen.append)
    first = monitor.observe(batches(switched, 1, seed=3)[0])
    assert {a.metric for a in first} >= {"centroid_shift"} and seen == first
    assert all(a.batch == monitor.reference_batches for a in first)


def test_a_shift_in_data_is_flagged(manpage_vectors, raw_minilm):
    embedder, _ = raw_minilm
    debian = embedder.embed_documents(load_beir(DEBIAN).doc_texts()[:200])
    monitor = learned(manpage_vectors)
    alerts = [a for b in batches(debian, 3, seed=4) for a in monitor.observe(b)]
    assert any(a.metric == "centroid_shift" for a in alerts)


def test_low_top1_band_golden_metrics_and_bad_input(manpage_vectors):
    monitor = learned(manpage_vectors, bands={"low_top1_share": (0.0, 0.2)})
    one, two = batches(manpage_vectors, 2, seed=7)
    ok = monitor.observe(one, top1_scores=np.full(BATCH, 0.6), golden={"recall@10": 0.9})
    bad = monitor.observe(two, top1_scores=np.r_[np.full(10, 0.1), np.full(22, 0.6)])
    assert ok == [] and [a.metric for a in bad] == ["low_top1_share"]
    assert monitor.history()[-2]["golden_recall@10"] == 0.9
    with pytest.raises(DimensionError, match="reset_reference"):
        monitor.observe(one[:, :128])
    with pytest.raises(InputError):
        monitor.observe(np.full((4, 384), np.nan))
    with pytest.raises(ConfigError):
        DriftMonitor("x", db=":memory:", reference_batches=1)


def test_history_survives_a_restart_and_the_cli_reports_it(manpage_vectors, tmp_path, capsys):
    db = tmp_path / "drift.sqlite3"
    first = DriftMonitor("prod", db=db, reference_batches=3)
    for b in batches(manpage_vectors, 5, seed=5):
        first.observe(b, fingerprint="minilm")
    first.close()
    again = DriftMonitor("prod", db=db, reference_batches=3)
    assert again.batches == 5 and "ready" in repr(again)  # the reference came back from SQLite
    assert again.observe(batches(manpage_vectors, 1, seed=6)[0]) == []
    again.close()
    assert main(["drift", "report", "--db", str(db), "--plot", str(tmp_path / "d.png")]) == 0
    out = capsys.readouterr().out
    assert "prod: 6 batches, 0 alerts" in out and "centroid_shift" in out
    assert (tmp_path / "d.png").stat().st_size > 5_000
