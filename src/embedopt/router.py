"""Route embedding requests between API and self-hosted providers of one embedding space.

A :class:`Router` is itself a provider: put it under an :class:`~embedopt.Embedder` and the cache, batching and
quantization work as with any provider. Per request it tries its routes in the order its policy gives, skipping a
route whose circuit breaker is open or that would go over the budget, retrying a route's transient errors
(429 with Retry-After, 5xx, timeouts) with backoff, and falling back to the next route. Every route must produce
vectors of the same embedding space — the same model and weights, prompts and dimension, self-hosted or behind
an API — so a fallback can never put a foreign vector into an index. A Router over routes of different spaces is
refused when it is made.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np

from ._breaker import CircuitBreaker
from .costs import Budget, BudgetStore, CostLedger, MemoryBudgetStore, Reservation
from .errors import BudgetExceededError, ConfigError, EmbedOptError, ProviderError
from .fingerprint import InputType
from .providers.base import (
    BaseProvider,
    Embedded,
    Provider,
    ProviderInfo,
    ProviderKind,
    aembed,
    count_tokens,
    estimate_tokens,
)
from .retry import RetryPolicy

__all__ = ["POLICIES", "Route", "Router"]

Policy = Literal["prefer_self_hosted", "prefer_api", "cheapest", "fastest"]
POLICIES: tuple[Policy, ...] = ("prefer_self_hosted", "prefer_api", "cheapest", "fastest")


@dataclass(frozen=True)
class Route:
    """A provider as the Router sees it. ``name``, ``kind`` and ``price_per_1m_tokens`` default to the provider's."""

    provider: Provider
    name: str | None = None
    kind: ProviderKind | None = None
    price_per_1m_tokens: float | None = None
    retry: RetryPolicy | None = None
    """Overrides the Router's retry policy for this route."""


class _Live:
    """A route with its resolved settings and its running state."""

    def __init__(self, route: Route, name: str, retry: RetryPolicy, cooldown: float, max_cooldown: float,
                 failure_threshold: int) -> None:
        info = route.provider.info
        self.provider = route.provider
        self.name = name
        self.kind: ProviderKind = route.kind or info.kind
        self.price = float(route.price_per_1m_tokens if route.price_per_1m_tokens is not None
                           else info.price_per_1m_tokens)
        self.retry = route.retry or retry
        self.breaker = CircuitBreaker(f"route {name!r}", cooldown, max_cooldown,
                                      consequence="requests go to the other routes",
                                      failure_threshold=failure_threshold)
        self.latency: float | None = None
        """Moving average of seconds per successful request."""


@dataclass
class _Request:
    """What one request learned on its way through the routes."""

    why: list[str] = field(default_factory=list)
    budget_blocked: bool = False
    attempted: bool = False
    """A call was sent (a route was tried, not only refused by the budget)."""


class Router(BaseProvider):
    """Pick a provider per request by policy, health and budget, within one embedding space.

    Args:
        routes: providers (or :class:`Route` objects) that all serve the same embedding space.
        policy: ``prefer_self_hosted`` (self-hosted while healthy, then APIs, cheapest first), ``prefer_api``,
            ``cheapest`` (by price per token) or ``fastest`` (by measured latency; untried routes first).
        budget: daily/monthly USD caps on API spend; a request that would pass a cap goes to a free route, or
            fails with :class:`~embedopt.errors.BudgetExceededError` when there is none. Each paid call reserves
            its estimated cost before it is sent and settles what it really cost after (or releases the hold when
            nothing was billed), so concurrent requests never pass a cap together.
        budget_store: where the spend against ``budget`` is held (default: a
            :class:`~embedopt.costs.MemoryBudgetStore` starting from the ledger's spend). Pass one store to several
            Routers (or a shared store, for several processes) to give them one budget.
        ledger: where spend is recorded (one is made if not given); share it with an Embedder to see cache savings.
        retry: retries per route before falling back (default: 3 attempts, at most 15 s).
        cooldown: seconds a failing route is skipped before a trial request (doubling up to ``max_cooldown``).
        failure_threshold: failed requests in a row (each after its retries) that open a route's breaker.
        normalize: the normalization the Embedder will apply (part of the space check).
    """

    def __init__(self, routes: Sequence[Route | Provider], *, policy: Policy = "prefer_self_hosted",
                 budget: Budget | None = None, ledger: CostLedger | None = None, retry: RetryPolicy | None = None,
                 cooldown: float = 5.0, max_cooldown: float = 60.0, failure_threshold: int = 3,
                 normalize: bool = True, budget_store: BudgetStore | None = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {POLICIES}, got {policy!r}")
        wrapped = [r if isinstance(r, Route) else Route(r) for r in routes]
        if not wrapped:
            raise ConfigError("a Router needs at least one route")
        for r in wrapped:
            if not isinstance(r.provider, Provider):
                raise ConfigError(f"a route needs an embedopt provider, got {type(r.provider).__name__}")
        _check_one_space(wrapped, normalize)
        retry = retry or RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=5.0, max_total=15.0)
        names: list[str] = []
        for r in wrapped:
            base = r.name or f"{r.provider.info.provider}:{r.provider.info.model}"
            name, n = base, 2
            while name in names:
                name, n = f"{base}#{n}", n + 1
            names.append(name)
        self.routes = [_Live(r, n, retry, cooldown, max_cooldown, failure_threshold)
                       for r, n in zip(wrapped, names, strict=True)]
        self.policy: Policy = policy
        self.budget = budget
        self.ledger = ledger if ledger is not None else CostLedger()
        if budget_store is not None and not isinstance(budget_store, BudgetStore):
            raise ConfigError(f"budget_store must have reserve/settle/release/spent, got {type(budget_store).__name__}")
        self.budget_store: BudgetStore = budget_store if budget_store is not None else \
            MemoryBudgetStore.from_ledger(self.ledger)
        self._lock = threading.Lock()
        first = wrapped[0].provider.info
        infos = [r.provider.info for r in wrapped]
        self._info = ProviderInfo(
            provider="router",
            model=first.model,
            revision=first.revision,
            dim=first.dim,
            kind="self_hosted" if any(r.kind == "self_hosted" for r in self.routes) else "api",
            max_batch=min(i.max_batch for i in infos),
            max_tokens=_min_or_none(i.max_tokens for i in infos),
            max_batch_tokens=_min_or_none(i.max_batch_tokens for i in infos),
            price_per_1m_tokens=max(r.price for r in self.routes),
            prompts=dict(first.prompts),
            max_concurrency=max(i.max_concurrency for i in infos),
            retries=True,
            records_costs=True,
        )

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def __repr__(self) -> str:
        return f"Router(policy={self.policy!r}, routes={[r.name for r in self.routes]})"

    # ---------------------------------------------------------------------------------------------- order
    def order(self) -> list[_Live]:
        """Routes in the order the policy tries them now (breakers and budget are checked per request)."""
        indexed = list(enumerate(self.routes))

        def key(item: tuple[int, _Live]) -> tuple[Any, ...]:
            i, r = item
            latency = r.latency if r.latency is not None else 0.0
            if self.policy == "prefer_self_hosted":
                return (r.kind != "self_hosted", r.price, i)
            if self.policy == "prefer_api":
                return (r.kind != "api", r.price, i)
            if self.policy == "cheapest":
                return (r.price, latency, i)
            return (latency, r.price, i)

        return [r for _, r in sorted(indexed, key=key)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Counted with the first API route's tokenizer (what budgets are billed in), else the first route's."""
        api = next((r for r in self.routes if r.kind == "api"), self.routes[0])
        return count_tokens(api.provider, texts)

    # ------------------------------------------------------------------------------------------ one request
    def _check(self, route: _Live, result: Embedded, n: int, billed: int) -> np.ndarray:
        arr = np.asarray(result.vectors, dtype=np.float32)
        if arr.shape != (n, self._info.dim) or not np.isfinite(arr).all():
            raise ProviderError(f"route {route.name} returned shape {arr.shape} or non-finite values for {n} texts",
                                provider=route.provider.info.provider, model=route.provider.info.model,
                                retryable=True, billed_tokens=billed)
        return arr

    def _estimate(self, route: _Live, texts: list[str], counts: Sequence[int] | None) -> int:
        """The tokens a paid route is expected to bill (the core's counts, else this route's own count)."""
        if route.price <= 0:
            return 0
        return int(sum(counts) if counts is not None else sum(count_tokens(route.provider, texts)))

    def _hold(self, route: _Live, estimate: int, request: _Request) -> Reservation | None:
        """Reserve a paid call's estimated cost against the budget before it is sent (or refuse it)."""
        if self.budget is None or route.price <= 0:
            request.attempted = True
            return None
        usd = estimate * route.price / 1e6
        hold = self.budget_store.reserve(self.budget, usd)
        if hold is None:
            raise BudgetExceededError(f"{route.name}: skipped, ${usd:.6f} more would pass the budget {self.budget}",
                                      provider=route.provider.info.provider, model=route.provider.info.model)
        request.attempted = True
        return hold

    def _settle(self, route: _Live, hold: Reservation | None, exc: BaseException | None, tokens: int) -> None:
        """After one call: settle what it cost (a refused answer an API billed costs too), or release the hold."""
        billed = tokens if exc is None else getattr(exc, "billed_tokens", None)
        if exc is not None and billed is not None:
            self.ledger.record_rejected(route.name, kind=route.kind, tokens=billed, price_per_1m_tokens=route.price)
        if hold is not None:
            if billed is None:
                self.budget_store.release(hold)
            else:
                self.budget_store.settle(hold, billed * route.price / 1e6)

    def _attempt(self, route: _Live, texts: list[str], input_type: InputType, counts: Sequence[int] | None,
                 estimate: int, request: _Request) -> tuple[Embedded, np.ndarray]:
        hold = self._hold(route, estimate, request)
        try:
            result = route.provider.embed(texts, input_type, counts)
            tokens = self._tokens(result, texts, estimate)
            arr = self._check(route, result, len(texts), tokens)
        except BaseException as exc:
            self._settle(route, hold, exc, 0)
            raise
        self._settle(route, hold, None, tokens)
        return result, arr

    async def _aattempt(self, route: _Live, texts: list[str], input_type: InputType, counts: Sequence[int] | None,
                        estimate: int, request: _Request) -> tuple[Embedded, np.ndarray]:
        hold = self._hold(route, estimate, request)
        try:
            result = await aembed(route.provider, texts, input_type, counts)
            tokens = self._tokens(result, texts, estimate)
            arr = self._check(route, result, len(texts), tokens)
        except BaseException as exc:  # cancelled too: the hold must not outlive the call
            self._settle(route, hold, exc, 0)
            raise
        self._settle(route, hold, None, tokens)
        return result, arr

    @staticmethod
    def _tokens(result: Embedded, texts: list[str], estimate: int) -> int:
        if result.tokens is not None:
            return int(result.tokens)
        return estimate or sum(estimate_tokens(t) for t in texts)

    def _succeeded(self, route: _Live, texts: list[str], result: Embedded, estimate: int, seconds: float) -> None:
        route.breaker.success()
        with self._lock:
            route.latency = seconds if route.latency is None else 0.7 * route.latency + 0.3 * seconds
        self.ledger.record(route.name, kind=route.kind, texts=len(texts), tokens=self._tokens(result, texts, estimate),
                           price_per_1m_tokens=route.price, seconds=seconds)

    def _failed(self, route: _Live, exc: Exception, request: _Request) -> None:
        if isinstance(exc, BudgetExceededError):  # the budget, not the route, said no: its breaker stays closed
            request.budget_blocked = True
            request.why.append(str(exc))
            return
        if not isinstance(exc, EmbedOptError):  # a provider's own exception
            exc = ProviderError(f"{type(exc).__name__}: {exc}")
        route.breaker.failure(exc)
        self.ledger.record_failure(route.name, kind=route.kind)
        request.why.append(f"{route.name}: {exc}")

    def _give_up(self, request: _Request) -> ProviderError:
        cls = BudgetExceededError if request.budget_blocked and not request.attempted else ProviderError
        return cls(f"no route could embed this request ({len(self.routes)} routes): " + "; ".join(request.why),
                   provider="router", model=self._info.model, retryable=False)

    def embed(self, texts: list[str], input_type: InputType,
              token_counts: Sequence[int] | None = None) -> Embedded:
        request = _Request()
        for route in self.order():
            if not route.breaker.allow():
                request.why.append(f"{route.name}: skipped, failing recently (circuit open)")
                continue
            estimate = self._estimate(route, texts, token_counts)
            started = time.monotonic()
            try:
                result, arr = route.retry.call(partial(self._attempt, route, texts, input_type, token_counts,
                                                       estimate, request))
            except Exception as exc:  # this route failed (whatever it raised): try the next
                self._failed(route, exc, request)
                continue
            self._succeeded(route, texts, result, estimate, time.monotonic() - started)
            return Embedded(arr, result.tokens)
        raise self._give_up(request)

    async def aembed(self, texts: list[str], input_type: InputType,
                     token_counts: Sequence[int] | None = None) -> Embedded:
        request = _Request()
        for route in self.order():
            if not route.breaker.allow():
                request.why.append(f"{route.name}: skipped, failing recently (circuit open)")
                continue
            if token_counts is None and route.price > 0:  # a tokenizer is CPU work: never on the event loop
                token_counts = await asyncio.to_thread(count_tokens, route.provider, texts)
            estimate = self._estimate(route, texts, token_counts)
            started = time.monotonic()
            try:
                result, arr = await route.retry.acall(partial(self._aattempt, route, texts, input_type, token_counts,
                                                              estimate, request))
            except Exception as exc:
                self._failed(route, exc, request)
                continue
            self._succeeded(route, texts, result, estimate, time.monotonic() - started)
            return Embedded(arr, result.tokens)
        raise self._give_up(request)

    # ------------------------------------------------------------------------------------------------ checks
    def verify(self, texts: Sequence[str] = ("embedopt route check", "a second, longer sentence to compare"),
               *, min_cosine: float = 0.99) -> dict[str, float]:
        """Embed ``texts`` through every route and check they agree (cosine >= ``min_cosine``) with the first.

        Fingerprints are declared; this measures. It calls every route (API routes are billed), so it is never
        run implicitly. Returns the lowest cosine per route.
        """
        ref: np.ndarray | None = None
        report: dict[str, float] = {}
        for route in self.routes:
            arr = self._check(route, route.provider.embed(list(texts), "document"), len(texts), 0)
            arr = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
            if ref is None:
                ref = arr
            report[route.name] = float((arr * ref).sum(axis=1).min())
        bad = {k: v for k, v in report.items() if v < min_cosine}
        if bad:
            raise ConfigError(f"routes disagree with {self.routes[0].name}: lowest cosine {bad}; they do not serve "
                              "the same embedding space, so falling back between them would mix spaces")
        return report

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per route: kind, price, breaker state, measured latency and ledger totals."""
        totals = self.ledger.to_dict()["routes"]
        return {r.name: {"kind": r.kind, "price_per_1m_tokens": r.price, "state": r.breaker.state,
                         "latency_s": r.latency, **totals.get(r.name, {})} for r in self.routes}


def _min_or_none(values: Any) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _check_one_space(routes: Sequence[Route], normalize: bool) -> None:
    first = routes[0].provider.info
    for r in routes[1:]:
        info = r.provider.info
        for input_type in ("query", "document"):
            a, b = first.fingerprint(input_type, normalize=normalize), info.fingerprint(input_type, normalize=normalize)
            if a.space_id == b.space_id:
                continue
            differ = [f"{f}: {getattr(a, f)!r} vs {getattr(b, f)!r}" for f in ("model", "revision", "prompt", "dim")
                      if getattr(a, f) != getattr(b, f)]
            raise ConfigError(
                f"routes {first.provider}:{first.model} and {info.provider}:{info.model} embed into different "
                f"spaces ({'; '.join(differ)}, for {input_type}s). Vectors from different spaces cannot be compared, "
                "so falling back from one to the other would put foreign vectors into your index. Make one Router "
                "per model; if a server really serves the same weights as a local model, give its provider "
                "revision=local.info.revision (and the same prompts), then check with Router.verify()."
            )
