"""One exception tree for everything embedopt raises.

Backend exceptions (torch, model2vec, HTTP clients, Redis, SQLite) are caught at the boundary where they happen
and re-raised as one of these with ``raise ... from exc``, so callers need to catch only :class:`EmbedOptError`.
Every message says what to do next.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "CacheError",
    "CalibrationError",
    "ConfigError",
    "CorruptEntry",
    "DimensionError",
    "EmbedOptError",
    "IndexCorruptError",
    "InputError",
    "MissingExtraError",
    "ModelLoadError",
    "ProviderError",
]


class EmbedOptError(Exception):
    """Base class of every error raised by embedopt."""


class ConfigError(EmbedOptError, ValueError):
    """An option is unknown, out of range, or inconsistent with another option."""


class MissingExtraError(EmbedOptError, ImportError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, extra: str, package: str, feature: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(
            f"{feature} needs the `{package}` package, which is not installed. "
            f'Install it with: pip install "embedopt[{extra}]"'
        )


class InputError(EmbedOptError, ValueError):
    """The texts handed to an embedder are unusable. ``index`` is the position of the first bad one."""

    def __init__(self, message: str, index: int | None = None) -> None:
        self.index = index
        super().__init__(message)


class DimensionError(EmbedOptError, ValueError):
    """A requested or supplied dimension does not fit the model or the index."""


class CalibrationError(EmbedOptError, ValueError):
    """int8/uint8 quantization was asked for without a usable calibration."""


class ModelLoadError(EmbedOptError):
    """A model could not be found or loaded."""


class ProviderError(EmbedOptError):
    """A provider failed to embed, or returned vectors that cannot be used (NaN, wrong shape).

    ``status`` is the HTTP status where there was one; ``retryable`` says whether trying again may help (429,
    5xx, timeouts, dropped connections, malformed bodies); ``retry_after`` is the server's Retry-After in seconds.
    ``billed_tokens`` is set when the provider answered (and an API billed the call) but the answer was refused
    (malformed, wrong shape, wrong indices, another model's): the cost ledger and budgets count those tokens.
    """

    def __init__(self, message: str, *, provider: str | None = None, model: str | None = None,
                 status: int | None = None, retryable: bool = False, retry_after: float | None = None,
                 billed_tokens: int | None = None) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.billed_tokens = billed_tokens
        super().__init__(message)


class BudgetExceededError(ProviderError):
    """Every route that could serve a request would go over a spending cap (see :class:`~embedopt.Budget`)."""


class CacheError(EmbedOptError):
    """A cache tier could not be read or written (Redis down, SQLite file locked or unwritable).

    Raised by a tier used on its own; :class:`~embedopt.cache.TieredCache` and the Embedder catch it, skip the
    tier and go on, so an embedding request never fails because of the cache.
    """

    def __init__(self, message: str, *, tier: str) -> None:
        self.tier = tier
        super().__init__(message)


class CorruptEntry(EmbedOptError, ValueError):
    """A stored value that cannot be trusted (truncated, bad checksum, another format, NaN). Cache tiers treat it
    as a miss and the next write overwrites it; only code that decodes entries itself sees this error."""


class IndexCorruptError(EmbedOptError, ValueError):
    """A saved index folder that cannot be trusted: a file missing, truncated, changed since it was saved or
    taken from another index, or the folder saved without a manifest. ``path`` is the file (or folder) at fault;
    the message says whether to rebuild the index or restore the folder from a backup."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)
