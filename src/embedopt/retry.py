"""Retries with exponential backoff and full jitter, honouring Retry-After, bounded in attempts and total time.

Used once, by the core (the Embedder for a lone provider, the Router per route); providers never retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConfigError, ProviderError

__all__ = ["RetryPolicy"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How to retry a retryable :class:`~embedopt.errors.ProviderError` (429, 5xx, timeouts, malformed bodies).

    Attempt ``n`` (from 1) waits a random time in ``[0, min(max_delay, base_delay * 2**(n-1))]`` (full jitter),
    or the server's Retry-After when it sent one (capped at ``max_delay``), and never past ``max_total`` seconds
    since the first attempt. Other errors (400, 401, bad input) are raised at once.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_total: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total < 0:
            raise ConfigError("retry delays must be >= 0 seconds")

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(max_attempts=1)

    def delay(self, attempt: int, error: ProviderError, rng: random.Random | None = None) -> float:
        if error.retry_after is not None:
            return min(max(0.0, error.retry_after), self.max_delay)
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0, cap)

    def _next(self, attempt: int, error: ProviderError, started: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt, error)
        if time.monotonic() - started + wait > self.max_total:
            return None
        logger.info("embedopt: %s (attempt %d of %d); retrying in %.2f s", error, attempt, self.max_attempts, wait)
        return wait

    def call(self, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except ProviderError as error:
                wait = self._next(attempt, error, started)
                if wait is None:
                    raise
                time.sleep(wait)

    async def acall(self, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except ProviderError as error:
                wait = self._next(attempt, error, started)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
