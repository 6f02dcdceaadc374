"""What embeddings cost: a ledger of tokens, requests and dollars per route, budget caps, and API-vs-self-hosted
estimates."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import ConfigError

__all__ = ["Budget", "CostLedger", "RouteTotals", "estimate"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RouteTotals:
    """Totals for one route (or provider) since the ledger was made."""

    kind: str = "api"
    requests: int = 0
    """Successful requests."""
    failures: int = 0
    texts: int = 0
    tokens: int = 0
    """Tokens billed: the provider's own count where it reports one, else the estimate sent."""
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


@dataclass
class CostLedger:
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
        with self._lock:
            self.routes.setdefault(route, RouteTotals(kind=kind)).failures += 1

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
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
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
