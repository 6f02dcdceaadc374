"""The documented public names of each package, pinned (as httpx's tests/test_exported_members.py does): a name
added or removed is a decision, made here on purpose. The README and the docs import only these names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from .conftest import ROOT

PUBLIC: dict[str, list[str]] = {
    "embedopt": [
        "Budget", "BudgetExceededError", "CacheError", "CacheTier", "Calibration", "CalibrationError", "Codec",
        "ConfigError", "CorruptEntry", "CostLedger", "DimensionError", "EmbedOptError", "EmbedStats", "Embedder",
        "Fingerprint", "IndexCorruptError", "InputError", "InputType", "MemoryTier", "MissingExtraError", "ModelLoadError", "Precision",
        "ProviderError", "RetryPolicy", "Route", "Router", "SemanticCache", "SemanticHit", "__version__",
        "load_provider", "open_cache"],
    "embedopt.cache": ["CacheTier", "CorruptEntry", "MemoryTier", "RedisTier", "SQLiteTier", "TieredCache",
                       "cache_key", "decode_vector", "encode_vector"],
    "embedopt.codec": ["VALUE_PRECISIONS", "Codec", "Precision", "ValuePrecision", "check_value_precision"],
    "embedopt.config": ["EmbedderFields"],
    "embedopt.costs": ["Budget", "BudgetStore", "CostLedger", "MemoryBudgetStore", "Reservation", "RouteTotals",
                       "estimate"],
    "embedopt.distributed": ["DistributedReport", "Embed", "EmbedShards", "ShardInfo", "backfill", "connect",
                             "embed_files", "migrate", "read_shards", "run", "shard_key"],
    "embedopt.drift": ["DriftAlert", "DriftMonitor"],
    "embedopt.errors": ["BudgetExceededError", "CacheError", "CalibrationError", "ConfigError", "CorruptEntry",
                        "DimensionError", "EmbedOptError", "IndexCorruptError", "InputError", "MissingExtraError",
                        "ModelLoadError", "ProviderError"],
    "embedopt.eval": ["JOINS", "BeirDataset", "average_precision_at_k", "evaluate", "join_text", "load_beir",
                      "mrr_at_k", "ndcg_at_k", "recall_at_k", "tie_keys", "top_k"],
    "embedopt.providers": ["BaseProvider", "Embedded", "FunctionProvider", "OpenAIProvider", "Provider",
                           "ProviderEntry", "ProviderInfo", "ProviderKind", "SentenceTransformerProvider",
                           "StaticProvider", "VoyageProvider", "estimate_tokens"],
    "embedopt.quantization": ["MIN_CALIBRATION_SAMPLES", "Calibration", "Precision", "bytes_per_vector", "dequantize",
                              "float_int8_scores", "hamming_distances", "int8_scores", "quantize"],
    "embedopt.rerank": ["CrossEncoderReranker", "RerankResult", "Reranker", "VoyageReranker"],
    "embedopt.hybrid": ["LEXICAL_FOLDER", "HybridStore"],
    "embedopt.tools.export_onnx": ["DEFAULT_SCHEME", "PROBE_TEXTS", "SCHEMES", "SHARE_AT", "Scheme", "export_onnx"],
    "embedopt.tools.hybrid": ["FusionEval", "run_fusion_eval"],
    "embedopt.retrieval": ["Hit", "RetrievalResult", "Retriever", "hybrid_hits", "mmr", "mmr_store", "search_hybrid",
                           "search_store"],
    "embedopt.router": ["POLICIES", "Route", "Router"],
    "embedopt.semantic_cache": ["DEFAULT_THRESHOLD", "MemorySemanticBackend", "RedisSemanticBackend",
                                "SemanticCache", "SemanticHit"],
    "embedopt.serve": ["Gateway", "ServeConfig", "build_parser", "create_app", "default_config", "hash_key",
                       "load_config", "main", "parse_config", "run"],
    "embedopt.specs": ["CacheSpec", "ModelSpec", "cache_entries", "load_provider", "local_model", "open_cache",
                       "option_names", "parse_cache", "parse_model", "provider_entries", "shared_provider"],
    "embedopt.stores": ["EdgeStore", "Filter", "HnswConfig", "QdrantStore", "QuantizationConfig", "QuantizedIndex",
                        "Record", "Rescore", "SearchResult", "VectorStore"],
    "embedopt.versioning": ["VersionedIndex", "backfill", "cutover", "plan", "rollback", "shadow", "start", "status"],
    "langchain_embedopt": ["EmbedOptEmbeddings", "EmbedOptReranker", "EmbedOptRetriever", "EmbedOptSemanticCache",
                           "EmbedOptVectorStore"],
    "llamaindex_embedopt": ["EmbedOptEmbedding", "EmbedOptRerank", "EmbedOptRetriever", "EmbedOptVectorStore"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned_and_importable(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"


_IMPORT = re.compile(r"^\s*from\s+((?:embedopt|langchain_embedopt|llamaindex_embedopt)[\w.]*)\s+import\s+\(?([^)#\n]+)",
                     re.MULTILINE)


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                         for p in (ROOT / "docs").glob("*.md"))])
def test_the_docs_import_only_pinned_names(doc):
    for block in _python_blocks(ROOT / doc):
        for module, names in _IMPORT.findall(block):
            assert module in PUBLIC, f"{doc} imports from {module}, which has no pinned public names"
            for name in (n.strip().split(" as ")[0] for n in names.split(",") if n.strip()):
                assert name in PUBLIC[module], f"{doc} imports {module}.{name}, which is not a pinned public name"
