"""embedopt: cheap, fast and safe-to-change embeddings for RAG.

>>> from embedopt import Embedder
>>> from embedopt.providers import SentenceTransformerProvider
>>> embedder = Embedder(SentenceTransformerProvider(), dim=256, precision="binary")   # doctest: +SKIP
"""

from .cache import CacheTier, MemoryTier
from .embedder import Embedder, EmbedStats
from .errors import (
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

__version__ = "0.1.0"

__all__ = [
    "CacheError",
    "CacheTier",
    "Calibration",
    "CalibrationError",
    "ConfigError",
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
    "__version__",
]
