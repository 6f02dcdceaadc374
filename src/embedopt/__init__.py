"""embedopt: cheap, fast and safe-to-change embeddings for RAG.

>>> from embedopt import Embedder
>>> from embedopt.providers import SentenceTransformerProvider
>>> embedder = Embedder(SentenceTransformerProvider(), dim=256, precision="binary")   # doctest: +SKIP
"""

from .cache import CacheTier, MemoryTier
from .costs import Budget, CostLedger
from .embedder import Embedder, EmbedStats
from .errors import (
    BudgetExceededError,
    CacheError,
    CalibrationError,
    ConfigError,
    DimensionError,
    EmbedOptError,
    InputError,
    MissingExtraError,
    ModelLoadError,
    ProviderError,
)
from .fingerprint import Fingerprint, InputType
from .quantization import Calibration, Precision
from .retry import RetryPolicy
from .router import Route, Router

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetExceededError",
    "CacheError",
    "CacheTier",
    "Calibration",
    "CalibrationError",
    "ConfigError",
    "CostLedger",
    "DimensionError",
    "EmbedOptError",
    "EmbedStats",
    "Embedder",
    "Fingerprint",
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
    "__version__",
]
