"""What embeddings cost: a ledger of tokens, requests and dollars per route, budget caps held by a
:class:`BudgetStore` (reserve before a call, settle after), and API-vs-self-hosted estimates."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from ._files import atomic_write_text
from .errors import ConfigError

__all__ = ["Budget", "BudgetStore", "CostLedger", "MemoryBudgetStore", "Reservation", "RouteTotals", "estimate"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RouteTotals:
    """Totals for one route (or provider) since the ledger was made."""

    kind: str = "api"
    requests: int = 0
    """Successful requests."""
    failures: int = 0
    """Requests that failed (after their retries)."""
    rejected: int = 0
    """Answers the provider sent (and an API billed) that were refused: malformed, wrong shape or indices,
    another model's. Their tokens and dollars are in ``tokens`` and ``usd``."""
    texts: int = 0
    tokens: int = 0
    """Tokens billed: the provider's own count where it reports one, else the estimate sent; rejected answers
    included."""
    usd: float = 0.0
    seconds: float = 0.0
    """Wall time of successful requests."""


@dataclass(frozen=True)
class Budget:
    """Spending caps in USD, per UTC day and per UTC month, over API routes (``None``: no cap)."""

    daily_usd: float | None = None
    monthly_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("daily_usd", "monthly_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")


def _day_month(when: datetime | None) -> tuple[str, str]:
    when = when or _now()
    return when.strftime("%Y-%m-%d"), when.strftime("%Y-%m")


@dataclass(frozen=True)
class Reservation:
    """Dollars held against a :class:`Budget` for one call in flight, until it is settled or released."""

    usd: float
    day: str
    """The UTC day (``YYYY-MM-DD``) and month the hold counts against."""
    month: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names the hold in a shared store (which may expire holds a crashed process never settled)."""


@runtime_checkable
class BudgetStore(Protocol):
    """Where spend against a :class:`Budget` is held and counted: reserve before a paid call, settle after it
    (what it really cost), release when nothing was billed. A check-and-hold is one atomic step, so concurrent
    callers can never pass a cap together. :class:`MemoryBudgetStore` holds this process's spend; a shared
    store (Redis, say) implements the same three methods and ``spent`` for many processes."""

    def reserve(self, budget: Budget, usd: float, when: datetime | None = None) -> Reservation | None:
        """Hold ``usd`` if the spend so far, the holds in flight and ``usd`` stay within every cap of
        ``budget``; ``None`` (nothing held) when they would not."""
        ...

    def settle(self, reservation: Reservation, usd: float) -> None:
        """The call ended and cost ``usd`` (it may differ from the hold): drop the hold, count the spend."""
        ...

    def release(self, reservation: Reservation) -> None:
        """The call ended with nothing billed: drop the hold."""
        ...

    def spent(self, *, day: str | None = None, month: str | None = None) -> float:
        """USD settled on the UTC ``day`` or ``month`` (today by default), holds not included."""
        ...


class _Locked:
    """Copied and pickled as its data: a lock is not state, and the copy gets a lock of its own."""

    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class MemoryBudgetStore(_Locked):
    """A :class:`BudgetStore` in this process's memory: exact under any number of threads (one lock around
    each check-and-hold). Share one instance between Routers to give them one budget.

    Args:
        daily_usd, monthly_usd: spend already made, by UTC day (``YYYY-MM-DD``) and month (``YYYY-MM``), for
            instance from a saved :class:`CostLedger` (see :meth:`from_ledger`).
    """

    def __init__(self, daily_usd: dict[str, float] | None = None, monthly_usd: dict[str, float] | None = None) -> None:
        self._daily = dict(daily_usd or {})
        self._monthly = dict(monthly_usd or {})
        self._held_daily: dict[str, float] = {}
        self._held_monthly: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_ledger(cls, ledger: CostLedger) -> MemoryBudgetStore:
        """A store that starts from the spend a ledger has recorded."""
        data = ledger.to_dict()
        return cls(data["daily_usd"], data["monthly_usd"])

    def __repr__(self) -> str:
        return f"MemoryBudgetStore(today=${self.spent():.6f}, held=${self.held():.6f})"

    def reserve(self, budget: Budget, usd: float, when: datetime | None = None) -> Reservation | None:
        day, month = _day_month(when)
        usd = max(0.0, float(usd))
        with self._lock:
            if budget.daily_usd is not None and \
                    self._daily.get(day, 0.0) + self._held_daily.get(day, 0.0) + usd > budget.daily_usd:
                return None
            if budget.monthly_usd is not None and \
                    self._monthly.get(month, 0.0) + self._held_monthly.get(month, 0.0) + usd > budget.monthly_usd:
                return None
            self._held_daily[day] = self._held_daily.get(day, 0.0) + usd
            self._held_monthly[month] = self._held_monthly.get(month, 0.0) + usd
        return Reservation(usd, day, month)

    def _drop(self, r: Reservation) -> None:
        for held, key in ((self._held_daily, r.day), (self._held_monthly, r.month)):
            left = held.get(key, 0.0) - r.usd
            if left > 1e-12:
                held[key] = left
            else:
                held.pop(key, None)

    def settle(self, reservation: Reservation, usd: float) -> None:
        with self._lock:
            self._drop(reservation)
            if usd > 0:
                self._daily[reservation.day] = self._daily.get(reservation.day, 0.0) + usd
                self._monthly[reservation.month] = self._monthly.get(reservation.month, 0.0) + usd

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._drop(reservation)

    def spent(self, *, day: str | None = None, month: str | None = None) -> float:
        with self._lock:
            if month is not None:
                return self._monthly.get(month, 0.0)
            return self._daily.get(day or _day_month(None)[0], 0.0)

    def held(self) -> float:
        """USD held today by calls in flight."""
        with self._lock:
            return self._held_daily.get(_day_month(None)[0], 0.0)



@dataclass
class CostLedger(_Locked):
    """Thread-safe running totals: per route, per UTC day and month, and what the cache saved.

    ``to_json()`` exports everything; ``embedopt costs`` prints a saved export.
    """

    routes: dict[str, RouteTotals] = field(default_factory=dict)
    daily_usd: dict[str, float] = field(default_factory=dict)
    monthly_usd: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    cache_tokens_saved: int = 0
    cache_usd_saved: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ record
    def record(self, route: str, *, kind: str, texts: int, tokens: int, price_per_1m_tokens: float,
               seconds: float = 0.0, when: datetime | None = None) -> float:
        """One successful request; returns its cost in USD."""
        usd = tokens * price_per_1m_tokens / 1e6
        when = when or _now()
        with self._lock:
            totals = self.routes.setdefault(route, RouteTotals(kind=kind))
            totals.requests += 1
            totals.texts += texts
            totals.tokens += tokens
            totals.usd += usd
            totals.seconds += seconds
            if usd:
                day, month = when.strftime("%Y-%m-%d"), when.strftime("%Y-%m")
                self.daily_usd[day] = self.daily_usd.get(day, 0.0) + usd
                self.monthly_usd[month] = self.monthly_usd.get(month, 0.0) + usd
        return usd

    def record_failure(self, route: str, *, kind: str) -> None:
        """A request that failed after its retries (its billed attempts are recorded by :meth:`record_rejected`)."""
        with self._lock:
            self.routes.setdefault(route, RouteTotals(kind=kind)).failures += 1

    def record_rejected(self, route: str, *, kind: str, tokens: int, price_per_1m_tokens: float,
                        when: datetime | None = None) -> float:
        """An answer that was billed but refused (malformed, wrong shape or indices, another model's): its
        tokens and dollars count, as the API charges them; returns the dollars."""
        usd = tokens * price_per_1m_tokens / 1e6
        day, month = _day_month(when)
        with self._lock:
            totals = self.routes.setdefault(route, RouteTotals(kind=kind))
            totals.rejected += 1
            totals.tokens += tokens
            totals.usd += usd
            if usd:
                self.daily_usd[day] = self.daily_usd.get(day, 0.0) + usd
                self.monthly_usd[month] = self.monthly_usd.get(month, 0.0) + usd
        return usd

    def record_cache_hits(self, hits: int, tokens: int, price_per_1m_tokens: float) -> None:
        with self._lock:
            self.cache_hits += hits
            self.cache_tokens_saved += tokens
            self.cache_usd_saved += tokens * price_per_1m_tokens / 1e6

    # ------------------------------------------------------------------------------------------------- query
    def spent(self, *, day: str | None = None, month: str | None = None) -> float:
        """USD spent on the UTC ``day`` (``YYYY-MM-DD``) or ``month`` (``YYYY-MM``); today by default."""
        with self._lock:
            if month is not None:
                return self.monthly_usd.get(month, 0.0)
            return self.daily_usd.get(day or _now().strftime("%Y-%m-%d"), 0.0)

    def allows(self, budget: Budget | None, usd: float, when: datetime | None = None) -> bool:
        """Whether spending ``usd`` more now stays within ``budget``."""
        if budget is None or usd <= 0:
            return True
        when = when or _now()
        day, month = when.strftime("%Y-%m-%d"), when.strftime("%Y-%m")
        if budget.daily_usd is not None and self.spent(day=day) + usd > budget.daily_usd:
            return False
        return not (budget.monthly_usd is not None and self.spent(month=month) + usd > budget.monthly_usd)

    @property
    def total_usd(self) -> float:
        with self._lock:
            return sum(r.usd for r in self.routes.values())

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "routes": {name: asdict(t) for name, t in self.routes.items()},
                "total_usd": sum(r.usd for r in self.routes.values()),
                "daily_usd": dict(self.daily_usd),
                "monthly_usd": dict(self.monthly_usd),
                "cache": {"hits": self.cache_hits, "tokens_saved": self.cache_tokens_saved,
                          "usd_saved": self.cache_usd_saved},
            }

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:  # written whole or not at all
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostLedger:
        ledger = cls(routes={k: RouteTotals(**v) for k, v in data.get("routes", {}).items()},
                     daily_usd=dict(data.get("daily_usd", {})), monthly_usd=dict(data.get("monthly_usd", {})))
        cache = data.get("cache", {})
        ledger.cache_hits = int(cache.get("hits", 0))
        ledger.cache_tokens_saved = int(cache.get("tokens_saved", 0))
        ledger.cache_usd_saved = float(cache.get("usd_saved", 0.0))
        return ledger


def estimate(*, requests_per_day: float, tokens_per_request: float, price_per_1m_tokens: float,
             instance_usd_per_hour: float, instance_tokens_per_second: float,
             cache_hit_rate: float = 0.0) -> dict[str, float]:
    """API dollars vs self-hosted machine time for one workload, per day and per 30-day month.

    The self-hosted side is given twice: an instance kept on all day, and one billed only for the hours the
    work takes (autoscaled to zero). ``cache_hit_rate`` removes that share of requests from both sides.
    """
    if min(requests_per_day, tokens_per_request, price_per_1m_tokens, instance_usd_per_hour) < 0:
        raise ConfigError("workload figures must be >= 0")
    if instance_tokens_per_second <= 0:
        raise ConfigError("instance_tokens_per_second must be > 0 (measure it: `make bench`)")
    if not 0 <= cache_hit_rate < 1:
        raise ConfigError(f"cache_hit_rate must be in [0, 1), got {cache_hit_rate}")
    tokens = requests_per_day * tokens_per_request * (1 - cache_hit_rate)
    api = tokens * price_per_1m_tokens / 1e6
    busy_hours = tokens / instance_tokens_per_second / 3600
    always_on = 24 * instance_usd_per_hour
    busy = busy_hours * instance_usd_per_hour
    breakeven = (always_on / price_per_1m_tokens * 1e6) if price_per_1m_tokens > 0 else float("inf")
    return {
        "tokens_per_day": tokens,
        "api_usd_per_day": api,
        "self_hosted_always_on_usd_per_day": always_on,
        "self_hosted_busy_hours_per_day": busy_hours,
        "self_hosted_busy_only_usd_per_day": busy,
        "api_usd_per_month": api * 30,
        "self_hosted_always_on_usd_per_month": always_on * 30,
        "breakeven_tokens_per_day_vs_always_on": breakeven,
        "instance_saturated": float(busy_hours > 24),
    }
