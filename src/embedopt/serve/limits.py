"""Who may call, how often, and how much they may spend.

* Keys: ``Authorization: Bearer KEY``; the config stores ``sha256(KEY)`` only and the key itself is never logged.
* Rate limits: two token buckets per tenant (requests and tokens per minute, burst = one minute's worth).
* Budgets: USD per UTC day and month. A request *reserves* its worst-case cost before any compute, and *settles*
  afterwards to what it really cost (cache hits are free), so concurrent requests can never spend past a cap.

Two backends with the same behaviour: :class:`MemoryLimits` (one process) and :class:`RedisLimits` (every
replica on one Redis; admission is one Lua script, atomic across replicas, using Redis' own clock). Money is
counted in integer pico-dollars so that increments are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from .config import ServeConfig, TenantConfig, hash_key

__all__ = [
    "ANONYMOUS",
    "Admission",
    "Limits",
    "LimitsUnavailable",
    "MemoryLimits",
    "RedisLimits",
    "Refused",
    "authenticate",
    "make_limits",
    "usd_to_pusd",
]

ANONYMOUS = TenantConfig("anonymous")
_PUSD = 10**12  # pico-dollars per dollar


def usd_to_pusd(usd: float) -> int:
    return round(usd * _PUSD)


def cost_pusd(tokens: int, price_per_1m_tokens: float) -> int:
    """The price of ``tokens`` in pico-dollars (price is USD per million tokens)."""
    return round(tokens * price_per_1m_tokens * 1e6)


def authenticate(header: str | None, cfg: ServeConfig) -> TenantConfig | None:
    """The tenant a request's ``Authorization`` header names, ``ANONYMOUS`` where allowed, else ``None`` (401).

    With no keys configured every request is anonymous, whatever key it sends (SDKs insist on sending one). With
    keys, a wrong key is refused even where anonymous access is allowed: it is a mistake worth reporting."""
    if not cfg.keys:
        return ANONYMOUS if cfg.anonymous else None
    if header:
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() == "bearer" and key:
            digest = hash_key(key)
            for known, tenant in cfg.keys.items():  # constant time per comparison; a handful of keys
                if hmac.compare_digest(known, digest):
                    return cfg.tenants[tenant]
            return None
    return ANONYMOUS if cfg.anonymous else None


class Refused(Exception):
    """A request the limits turn away: 429 (rate or budget) with a message; ``retry_after`` in seconds or None."""

    def __init__(self, message: str, *, retry_after: float | None, kind: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind
        """``rate_limit_exceeded``, ``insufficient_quota`` or ``request_too_large``."""


class LimitsUnavailable(Exception):
    """The shared limits store (Redis) cannot be reached: the request is refused (503), never let through."""


@dataclass
class Admission:
    tenant: str
    reserved_pusd: int
    day: str
    month: str
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    tracked: bool = True
    """False for an unlimited tenant: nothing was reserved, nothing to settle."""


def _periods() -> tuple[str, str]:
    """Today's UTC day and month, as budget keys name them."""
    return _periods_of(int(time.time() // 86400))


@functools.lru_cache(maxsize=4)
def _periods_of(day_number: int) -> tuple[str, str]:
    day = datetime.fromtimestamp(day_number * 86400, timezone.utc)
    return day.strftime("%Y-%m-%d"), day.strftime("%Y-%m")


def unlimited(tenant: TenantConfig) -> bool:
    """A tenant with no rate limit and no budget: nothing to count, nothing to ask the store."""
    return (tenant.requests_per_minute is None and tenant.tokens_per_minute is None and tenant.daily_usd is None
            and tenant.monthly_usd is None)


def _budget_message(tenant: TenantConfig, period: str, spent: int, cost: int, cap: int) -> str:
    return (f"tenant {tenant.name!r} would pass its {period} budget of ${cap / _PUSD:.6g} "
            f"(spent or reserved ${spent / _PUSD:.6g}, this request up to ${cost / _PUSD:.6g}); "
            "wait for the next period or ask for a larger budget")


def _too_large(tenant: TenantConfig, tokens: int) -> Refused:
    return Refused(f"this request has {tokens} tokens, more than tenant {tenant.name!r} may send in a minute "
                   f"({tenant.tokens_per_minute}); split it into smaller requests",
                   retry_after=None, kind="request_too_large")


class Limits(Protocol):
    async def admit(self, tenant: TenantConfig, *, tokens: int, cost: int) -> Admission: ...

    async def settle(self, admission: Admission, cost: int) -> None: ...

    async def spent(self, tenant: TenantConfig) -> tuple[int, int]: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------------- memory
class MemoryLimits:
    """Rate limits and budgets of one process (used when no Redis is configured)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._spent: dict[str, int] = {}

    @staticmethod
    def _level(state: tuple[float, float] | None, per_minute: int, now: float) -> float:
        if state is None:
            return float(per_minute)
        level, ts = state
        return min(float(per_minute), level + (now - ts) * per_minute / 60.0)

    async def admit(self, tenant: TenantConfig, *, tokens: int, cost: int) -> Admission:
        day, month = _periods()
        now = time.monotonic()
        rpm, tpm = tenant.requests_per_minute, tenant.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise _too_large(tenant, tokens)
        with self._lock:
            wait = 0.0
            levels: dict[str, float] = {}
            for kind, limit, need in (("req", rpm, 1), ("tok", tpm, tokens)):
                if limit is None:
                    continue
                level = self._level(self._buckets.get((tenant.name, kind)), limit, now)
                levels[kind] = level
                if level < need:
                    wait = max(wait, (need - level) * 60.0 / limit)
            if wait > 0:
                raise Refused(f"tenant {tenant.name!r} is over its rate limit ({rpm} requests / {tpm} tokens per "
                              f"minute); retry in {wait:.2f} s", retry_after=wait, kind="rate_limit_exceeded")
            dkey, mkey = f"{tenant.name}|d|{day}", f"{tenant.name}|m|{month}"
            if cost > 0:
                for period, key, cap_usd in (("daily", dkey, tenant.daily_usd), ("monthly", mkey, tenant.monthly_usd)):
                    if cap_usd is not None and self._spent.get(key, 0) + cost > usd_to_pusd(cap_usd):
                        raise Refused(_budget_message(tenant, period, self._spent.get(key, 0), cost,
                                                      usd_to_pusd(cap_usd)), retry_after=None,
                                      kind="insufficient_quota")
            if "req" in levels:
                self._buckets[(tenant.name, "req")] = (levels["req"] - 1, now)
            if "tok" in levels:
                self._buckets[(tenant.name, "tok")] = (levels["tok"] - tokens, now)
            if cost:
                self._spent[dkey] = self._spent.get(dkey, 0) + cost
                self._spent[mkey] = self._spent.get(mkey, 0) + cost
        return Admission(tenant.name, cost, day, month,
                         remaining_requests=int(levels["req"] - 1) if "req" in levels else None,
                         remaining_tokens=int(levels["tok"] - tokens) if "tok" in levels else None)

    async def settle(self, admission: Admission, cost: int) -> None:
        delta = cost - admission.reserved_pusd
        if delta:
            with self._lock:
                for key in (f"{admission.tenant}|d|{admission.day}", f"{admission.tenant}|m|{admission.month}"):
                    self._spent[key] = self._spent.get(key, 0) + delta
        admission.reserved_pusd = cost

    async def spent(self, tenant: TenantConfig) -> tuple[int, int]:
        day, month = _periods()
        with self._lock:
            return self._spent.get(f"{tenant.name}|d|{day}", 0), self._spent.get(f"{tenant.name}|m|{month}", 0)

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------------- redis
# KEYS: 1 bucket hash, 2 day spend, 3 month spend.
# ARGV: 1 rpm (0: none), 2 tpm (0: none), 3 tokens, 4 cost (integer string), 5 day cap (-1: none),
#       6 month cap (-1: none), 7 day ttl s, 8 month ttl s.
# Returns {status, wait_ms, spent, cap, remaining_requests, remaining_tokens}; status 0 ok, 1 rate, 2 day, 3 month.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local function level(field, limit)
  local l = tonumber(redis.call('HGET', KEYS[1], field .. ':l'))
  local ts = tonumber(redis.call('HGET', KEYS[1], field .. ':t'))
  if l == nil or ts == nil then return limit end
  return math.min(limit, l + math.max(0, now - ts) * limit / 60)
end
local wait = 0
local rl, tl = -1, -1
if rpm > 0 then
  rl = level('r', rpm)
  if rl < 1 then wait = math.max(wait, (1 - rl) * 60 / rpm) end
end
if tpm > 0 then
  tl = level('t', tpm)
  if tl < tokens then wait = math.max(wait, (tokens - tl) * 60 / tpm) end
end
if wait > 0 then return {1, math.ceil(wait * 1000), 0, 0, -1, -1} end
if cost > 0 then
  local draw = redis.call('GET', KEYS[2]) or '0'
  local mraw = redis.call('GET', KEYS[3]) or '0'
  local dcap = tonumber(ARGV[5])
  local mcap = tonumber(ARGV[6])
  if dcap >= 0 and tonumber(draw) + cost > dcap then return {2, 0, draw, ARGV[5], -1, -1} end
  if mcap >= 0 and tonumber(mraw) + cost > mcap then return {3, 0, mraw, ARGV[6], -1, -1} end
  redis.call('INCRBY', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
  redis.call('INCRBY', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
end
if rpm > 0 then
  rl = rl - 1
  redis.call('HSET', KEYS[1], 'r:l', tostring(rl), 'r:t', tostring(now))
end
if tpm > 0 then
  tl = tl - tokens
  redis.call('HSET', KEYS[1], 't:l', tostring(tl), 't:t', tostring(now))
end
redis.call('EXPIRE', KEYS[1], 120)
return {0, 0, 0, 0, math.floor(rl), math.floor(tl)}
"""

_DAY_TTL = 3 * 86400
_MONTH_TTL = 40 * 86400


class RedisLimits:
    """Rate limits and budgets shared by every replica through one Redis (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str = "embedopt:serve:", timeout: float = 1.0) -> None:
        from .._extras import require

        aioredis = require("redis.asyncio", extra="redis", feature="shared rate limits and budgets",
                           package="redis")
        self.prefix = prefix
        self._client: Any = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._admit = self._client.register_script(_ADMIT)

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"RedisLimits(prefix={self.prefix!r})"

    def _k(self, tenant: str, *parts: str) -> str:
        return self.prefix + ":".join((tenant, *parts))

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (OSError, asyncio.TimeoutError) as exc:
            raise LimitsUnavailable(f"the shared limits store (Redis) is unreachable: {type(exc).__name__}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise LimitsUnavailable(f"the shared limits store (Redis) failed: {type(exc).__name__}") from None
            raise

    async def admit(self, tenant: TenantConfig, *, tokens: int, cost: int) -> Admission:
        day, month = _periods()
        rpm, tpm = tenant.requests_per_minute or 0, tenant.tokens_per_minute or 0
        if tpm and tokens > tpm:
            raise _too_large(tenant, tokens)
        dcap = usd_to_pusd(tenant.daily_usd) if tenant.daily_usd is not None else -1
        mcap = usd_to_pusd(tenant.monthly_usd) if tenant.monthly_usd is not None else -1
        keys = [self._k(tenant.name, "rl"), self._k(tenant.name, "d", day), self._k(tenant.name, "m", month)]
        res = await self._call(self._admit(keys=keys, args=[rpm, tpm, tokens, str(int(cost)), str(dcap), str(mcap),
                                                            _DAY_TTL, _MONTH_TTL]))
        status = int(res[0])
        if status == 1:
            wait = int(res[1]) / 1000.0
            raise Refused(f"tenant {tenant.name!r} is over its rate limit ({tenant.requests_per_minute} requests / "
                          f"{tenant.tokens_per_minute} tokens per minute); retry in {wait:.2f} s",
                          retry_after=wait, kind="rate_limit_exceeded")
        if status in (2, 3):
            raise Refused(_budget_message(tenant, "daily" if status == 2 else "monthly", int(res[2]), cost,
                                          int(res[3])), retry_after=None, kind="insufficient_quota")
        return Admission(tenant.name, cost, day, month,
                         remaining_requests=int(res[4]) if rpm else None,
                         remaining_tokens=int(res[5]) if tpm else None)

    async def settle(self, admission: Admission, cost: int) -> None:
        delta = cost - admission.reserved_pusd
        if not delta:
            return
        pipe = self._client.pipeline(transaction=True)
        pipe.incrby(self._k(admission.tenant, "d", admission.day), delta)
        pipe.incrby(self._k(admission.tenant, "m", admission.month), delta)
        await self._call(pipe.execute())
        admission.reserved_pusd = cost

    async def spent(self, tenant: TenantConfig) -> tuple[int, int]:
        day, month = _periods()
        d, m = await self._call(self._client.mget(self._k(tenant.name, "d", day), self._k(tenant.name, "m", month)))
        return int(d or 0), int(m or 0)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing a client whose server is gone
            await self._client.aclose()


def make_limits(cfg: ServeConfig) -> Limits:
    return RedisLimits(cfg.redis_url, prefix=cfg.redis_prefix) if cfg.redis_url else MemoryLimits()


def retry_after_header(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}
