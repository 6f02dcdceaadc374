"""A circuit breaker for anything that can fail and come back: cache tiers, semantic-cache backends, providers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("embedopt")
T = TypeVar("T")


class CircuitBreaker:
    """Closed (use it) → open after ``failure_threshold`` failures in a row (skip it for ``cooldown`` s) →
    half-open (one trial call).

    The cooldown doubles after each failed trial, up to ``max_cooldown``; one success closes the breaker. An
    outage logs one warning when it starts and one info line when it ends, however many calls it skips.
    """

    def __init__(self, name: str, cooldown: float = 5.0, max_cooldown: float = 60.0, *,
                 consequence: str = "going on without it", failure_threshold: int = 1) -> None:
        self.name = name
        self.base = cooldown
        self.max = max_cooldown
        self.consequence = consequence
        self.failure_threshold = max(1, failure_threshold)
        self.failures_in_a_row = 0
        self.cooldown = cooldown
        self.open_until = 0.0
        self.is_open = False
        self.skipped = 0
        self.trips = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if not self.is_open:
                return True
            now = time.monotonic()
            if now >= self.open_until:
                # half-open: let this call through, hold the others back until it answers
                self.open_until = now + self.cooldown
                return True
            self.skipped += 1
            return False

    def success(self) -> None:
        self.failures_in_a_row = 0
        if not self.is_open:
            return
        with self._lock:
            if not self.is_open:
                return
            self.is_open = False
            self.cooldown = self.base
        logger.info("embedopt: %s answers again; using it again", self.name)

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            if self.is_open:  # a failed trial: stay open, wait longer
                self.cooldown = min(self.cooldown * 2, self.max)
                self.open_until = time.monotonic() + self.cooldown
                logger.debug("embedopt: %s still failing: %s", self.name, exc)
                return
            self.failures_in_a_row += 1
            if self.failures_in_a_row < self.failure_threshold:
                logger.info("embedopt: %s failed (%d in a row): %s", self.name, self.failures_in_a_row, exc)
                return
            self.is_open = True
            self.trips += 1
            self.open_until = time.monotonic() + self.cooldown
        logger.warning("embedopt: %s failed (%s: %s); skipping it and trying again after %g s (up to %g s); %s",
                       self.name, type(exc).__name__, exc, self.base, self.max, self.consequence)

    def guard(self, call: Callable[[], T], *,
              on_error: Callable[[Exception], None] | None = None) -> tuple[bool, T | None]:
        """Run ``call`` unless the breaker is open: ``(True, result)``, or ``(False, None)`` when it was skipped or
        raised. A failure is recorded (and handed to ``on_error``), never re-raised: the caller goes on without it."""
        if not self.allow():
            return False, None
        try:
            result = call()
        except Exception as exc:
            self.failure(exc)
            if on_error is not None:
                on_error(exc)
            return False, None
        self.success()
        return True, result

    async def aguard(self, call: Callable[[], Awaitable[T]], *,
                     on_error: Callable[[Exception], None] | None = None) -> tuple[bool, T | None]:
        """The async twin of :meth:`guard`."""
        if not self.allow():
            return False, None
        try:
            result = await call()
        except Exception as exc:
            self.failure(exc)
            if on_error is not None:
                on_error(exc)
            return False, None
        self.success()
        return True, result

    @property
    def state(self) -> str:
        return "open" if self.is_open else "closed"
