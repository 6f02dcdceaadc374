"""embedopt: cheap, fast and safe-to-change embeddings for RAG.

>>> from embedopt import Embedder
>>> from embedopt.providers import SentenceTransformerProvider
>>> embedder = Embedder(SentenceTransformerProvider(), dim=256, precision="binary")   # doctest: +SKIP
"""

from .cache import CacheTier, MemoryTier
from .codec import Codec
from .costs import Budget, CostLedger
from .embedder import Embedder, EmbedStats
from .errors import (
    BudgetExceededError,
    CacheError,
    CalibrationError,
    ConfigError,
    CorruptEntry,
    DimensionError,
    EmbedOptError,
    IndexCorruptError,
    InputError,
    MissingExtraError,
    ModelLoadError,
    ProviderError,
)
from .fingerprint import Fingerprint, InputType
from .quantization import Calibration, Precision
from .retry import RetryPolicy
from .router import Route, Router
from .semantic_cache import SemanticCache, SemanticHit
from .specs import load_provider, open_cache

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetExceededError",
    "CacheError",
    "CacheTier",
    "Calibration",
    "CalibrationError",
    "Codec",
    "ConfigError",
    "CorruptEntry",
    "CostLedger",
    "DimensionError",
    "EmbedOptError",
    "EmbedStats",
    "Embedder",
    "Fingerprint",
    "IndexCorruptError",
    "InputError",
    "InputType",
    "MemoryTier",
    "MissingExtraError",
    "ModelLoadError",
    "Precision",
    "ProviderError",
    "RetryPolicy",
    "Route",
    "Router",
    "SemanticCache",
    "SemanticHit",
    "__version__",
    "load_provider",
    "open_cache",
]
