"""EdgeStore: Qdrant's engine in-process (qdrant-edge-py). The store contract runs over it in
tests/contracts/test_stores.py; here, what is its own: the quantization settings really in effect, persistence,
recovery from the write-ahead log after an unclean stop, versioning, and the one QuantizationConfig that maps
onto qdrant-edge and onto a Qdrant server's collection models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

from embedopt import ConfigError
from embedopt.fingerprint import Fingerprint
from embedopt.stores import EdgeStore, HnswConfig, QuantizationConfig

DIM = 64
FP = Fingerprint("test", "edge", "r1", "document", "", DIM, True)
OTHER = Fingerprint("test", "edge-other-model", "r1", "document", "", DIM, True)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _filled(path: Path, quantization: QuantizationConfig | str, n: int = 1500) -> tuple[EdgeStore, np.ndarray]:
    store = EdgeStore(FP, path, quantization=quantization, indexing_threshold_kb=1, optimize_after=None)
    v = _vectors(n)
    store.add([f"d{i}" for i in range(n)], v, [{"n": i} for i in range(n)])
    assert store.optimize() is True  # the HNSW graph and the codes are built here, not in the background
    assert store.info()["indexed_vectors"] == n
    return store, v


@pytest.mark.parametrize("quantization", ["binary", "binary-1.5bit", "binary-2bit", "scalar", "product"])
def test_quantization_is_in_effect_and_rescoring_restores_exact_scores(tmp_path, quantization):
    """Without rescoring, scores come from the quantized codes (they differ from the true dot products); with
    rescoring they are the exact dot products of the original vectors. qdrant-client's local mode would give
    exact scores either way: it ignores quantization."""
    store, v = _filled(tmp_path / "s", quantization)
    q = v[:20]
    raw = store.search(q, k=10, oversample=4, rescore="none")
    rescored = store.search(q, k=10, oversample=4, rescore="float")
    row = {f"d{i}": i for i in range(len(v))}

    def error(found) -> float:
        return max(float(np.abs(s - v[[row[i] for i in ids]] @ qv).max())
                   for ids, s, qv in zip(found.ids, found.scores, q, strict=True))

    assert error(raw) > 1e-3
    assert error(rescored) < 1e-4
    assert [ids[0] for ids in rescored.ids] == [f"d{i}" for i in range(20)]
    store.close()


def test_float_search_is_exact_and_exact_mode_agrees(tmp_path):
    store, v = _filled(tmp_path / "s", "none")
    truth = np.argsort(-(v[:5] @ v.T), axis=1)[:, :10]
    exact = store.search(v[:5], k=10, exact=True)
    assert exact.ids == [[f"d{i}" for i in row] for row in truth]
    store.close()


def test_persistence_reload_and_settings_kept(tmp_path):
    store, v = _filled(tmp_path / "s", QuantizationConfig("binary", bits=2), n=500)
    before = store.search(v[:3], k=5)
    store.flush()
    store.close()
    again = EdgeStore.open_live(tmp_path / "s", expect=FP)
    assert again.config == QuantizationConfig("binary", bits=2) and len(again) == 500
    assert again.search(v[:3], k=5).ids == before.ids
    assert again.get(["d7"])[0].payload == {"n": 7}
    with pytest.raises(ConfigError, match="same settings"):
        EdgeStore(FP, tmp_path / "s", quantization="scalar")
    with pytest.raises(ConfigError, match="another model"):
        EdgeStore.open_live(tmp_path / "s", expect=OTHER)
    again.close()


def test_wal_recovers_points_after_an_unclean_stop(tmp_path):
    """Points written and never flushed survive a process killed without closing the shard: they are replayed
    from the write-ahead log when it is loaded again."""
    src = Path(__file__).resolve().parents[1] / "src"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(src)!r})
        import numpy as np
        from embedopt.fingerprint import Fingerprint
        from embedopt.stores import EdgeStore
        fp = Fingerprint("test", "edge", "r1", "document", "", {DIM}, True)
        store = EdgeStore(fp, {str(tmp_path / 'wal')!r}, quantization="binary", optimize_after=None)
        v = np.random.default_rng(1).standard_normal((200, {DIM})).astype(np.float32)
        store.add([f"w{{i}}" for i in range(200)], v, [{{"n": i}} for i in range(200)])
        os._exit(0)  # no flush, no close: as if killed
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    store = EdgeStore.open_live(tmp_path / "wal")
    assert len(store) == 200 and store.get(["w199"])[0].payload == {"n": 199}
    store.close()


def test_another_space_is_refused_and_a_new_version_cuts_over(tmp_path):
    old = EdgeStore(FP, tmp_path / "v", quantization="binary")
    old.add(["a"], _vectors(1))
    with pytest.raises(ConfigError, match="two spaces never meet"):
        EdgeStore(OTHER, tmp_path / "v", quantization="binary")
    new = EdgeStore(OTHER, tmp_path / "v", quantization="binary", activate=False)  # built beside the live one
    assert new.live_version() == old.name != new.name
    new.add(["b"], _vectors(1, seed=2))
    assert new.activate() == old.name and new.live_version() == new.name
    with pytest.raises(ConfigError, match="two spaces never meet"):
        EdgeStore(FP, tmp_path / "v", quantization="binary")
    assert len(old) == 1  # nothing deleted: a rollback is another activate()
    old.close()
    new.close()


def test_one_quantization_config_maps_onto_qdrant_edge_and_a_qdrant_server():
    """The same QuantizationConfig gives qdrant-edge's config objects and qdrant-client's collection models (what
    a server or cluster is created with), so moving from the embedded engine to a server is a config change."""
    import qdrant_edge as qe
    from qdrant_client import models as m

    cases = {
        QuantizationConfig("binary"): (m.BinaryQuantizationEncoding.ONE_BIT, qe.BinaryQuantizationEncoding.OneBit),
        QuantizationConfig("binary", bits=1.5, query_encoding="scalar8"): (
            m.BinaryQuantizationEncoding.ONE_AND_HALF_BITS, qe.BinaryQuantizationEncoding.OneAndHalfBits),
        QuantizationConfig("binary", bits=2, always_ram=False): (
            m.BinaryQuantizationEncoding.TWO_BITS, qe.BinaryQuantizationEncoding.TwoBits),
    }
    for config, (client_enc, edge_enc) in cases.items():
        server, edge = config.to_qdrant(m), config.to_edge(qe)
        assert isinstance(server, m.BinaryQuantization) and server.binary.encoding == client_enc
        assert server.binary.always_ram == config.always_ram == edge.always_ram and edge.encoding == edge_enc
    q8 = QuantizationConfig("binary", bits=1.5, query_encoding="scalar8")
    assert q8.to_qdrant(m).binary.query_encoding == m.BinaryQuantizationQueryEncoding.SCALAR8BITS
    assert q8.to_edge(qe).query_encoding == qe.BinaryQuantizationQueryEncoding.Scalar8Bits
    scalar = QuantizationConfig("scalar", quantile=0.95)
    assert scalar.to_qdrant(m) == m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
        type=m.ScalarType.INT8, quantile=0.95, always_ram=True))
    assert scalar.to_edge(qe).quantile == pytest.approx(0.95) and scalar.to_edge(qe).type == qe.ScalarType.Int8
    product = QuantizationConfig("product", compression=32)
    assert product.to_qdrant(m).product.compression == m.CompressionRatio.X32
    assert product.to_edge(qe).compression == qe.CompressionRatio.X32
    none = QuantizationConfig("none")
    assert none.to_qdrant(m) is None and none.to_edge(qe) is None
    params = QuantizationConfig("binary", oversample=3.0).search_params(m, rescore=True, hnsw_ef=64)
    assert params == m.SearchParams(hnsw_ef=64, exact=False, quantization=m.QuantizationSearchParams(
        ignore=False, rescore=True, oversampling=3.0))
    edge_params = QuantizationConfig("binary", oversample=3.0).search_params(qe, rescore=True, hnsw_ef=64)
    assert edge_params.hnsw_ef == 64 and edge_params.quantization.oversampling == pytest.approx(3.0)
    hnsw = HnswConfig(m=32, ef_construct=200)
    assert hnsw.to_qdrant(m) == m.HnswConfigDiff(m=32, ef_construct=200, full_scan_threshold=10_000,
                                                 max_indexing_threads=0)
    assert hnsw.to_edge(qe).m == 32 and hnsw.to_edge(qe).ef_construct == 200
    assert QuantizationConfig.of("binary-2bit") == QuantizationConfig("binary", bits=2)
    with pytest.raises(ConfigError, match="bits"):
        QuantizationConfig("binary", bits=3)


def test_qdrant_store_takes_the_same_config(tmp_path):
    """QdrantStore creates its collection from the QuantizationConfig (local mode here: no server runs; the
    collection's stored config is what a server would be given)."""
    from embedopt.stores import QdrantStore

    store = QdrantStore(FP, collection="cfg", quantization=QuantizationConfig("binary", bits=2),
                        hnsw=HnswConfig(m=24))
    info = store.client.get_collection(store.name)
    assert info.config.params.vectors["full"].quantization_config.binary.encoding.value == "two_bits"
    assert store.quantization == "binary-2bit"
