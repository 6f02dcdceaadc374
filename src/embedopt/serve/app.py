"""The ASGI app (Starlette): routes, admission (auth, limits, budgets), the embedding and rerank paths, and the
life cycle (models load in the background; ``/readyz`` says when; shutdown drains the queues)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .._extras import require
from ..errors import (
    BudgetExceededError,
    CalibrationError,
    ConfigError,
    DimensionError,
    EmbedOptError,
    InputError,
    ModelLoadError,
    ProviderError,
)
from ..providers.base import estimate_tokens
from .batching import QueueFull
from .config import ServeConfig, TenantConfig
from .limits import (
    Admission,
    Limits,
    LimitsUnavailable,
    Refused,
    authenticate,
    cost_pusd,
    make_limits,
    retry_after_header,
    unlimited,
    usd_to_pusd,
)
from .metrics import Metrics
from .models import ServedModel, ServedReranker, build_embedder, build_reranker
from .protocol import (
    ApiError,
    dumps,
    embed_response,
    error_body,
    parse_embed,
    parse_json,
    parse_rerank,
    rerank_response,
)

__all__ = ["Gateway", "create_app"]

logger = logging.getLogger("embedopt.serve")

_JSON = "application/json"
_starlette = require("starlette", extra="serve", feature="embedopt serve")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402


class _ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Gateway:
    """State of one gateway process. ``embedders``/``rerankers`` (by configured name) skip loading from specs:
    for tests and for embedding the gateway in another program."""

    def __init__(self, cfg: ServeConfig, *, embedders: Mapping[str, Any] | None = None,
                 rerankers: Mapping[str, Any] | None = None, limits: Limits | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.rerankers: dict[str, ServedReranker] = {}
        self.load_errors: dict[str, str] = {}
        self._given_embedders = dict(embedders or {})
        self._given_rerankers = dict(rerankers or {})
        self.limits: Limits = limits if limits is not None else make_limits(cfg)
        self.cache: Any = None
        self.draining = False
        self._loader: asyncio.Task[None] | None = None
        self.on_fatal: Callable[[str], None] | None = None
        """Called when a configured model cannot be loaded (``run`` stops the server)."""
        self.on_ready: Callable[[], None] | None = None
        """Called once every configured model is loaded (``run`` prints a curl line)."""
        self.loaded = asyncio.Event()

    # ------------------------------------------------------------------------------------------ life cycle
    async def startup(self) -> None:
        self._loader = asyncio.create_task(self._load_all(), name="embedopt-serve-load")

    async def _load_all(self) -> None:
        try:
            if self.cfg.cache is not None:
                from .models import open_cache

                self.cache = await asyncio.to_thread(open_cache, self.cfg.cache)
            for mcfg in self.cfg.models:
                try:
                    embedder: Any = self._given_embedders.get(mcfg.name)
                    if embedder is None:
                        embedder = await asyncio.to_thread(build_embedder, mcfg, self.cache)
                    self._add_model(mcfg, embedder)
                    logger.info("model %r loaded (%s, %d-d)", mcfg.name, embedder.provider.info.model,
                                embedder.native_dim)
                except Exception as exc:
                    self._load_failed(mcfg.name, exc)
            for rcfg in self.cfg.rerankers:
                try:
                    reranker = self._given_rerankers.get(rcfg.name)
                    if reranker is None:
                        reranker = await asyncio.to_thread(build_reranker, rcfg)
                    self.rerankers[rcfg.name] = ServedReranker(rcfg, reranker)
                    logger.info("reranker %r loaded", rcfg.name)
                except Exception as exc:
                    self._load_failed(rcfg.name, exc)
        except Exception as exc:  # the cache spec
            self._load_failed("cache", exc)
        finally:
            self.metrics.ready.set(1 if self.ready else 0)
            self.loaded.set()
        if self.ready and self.on_ready is not None:
            self.on_ready()

    def _add_model(self, mcfg: Any, embedder: Any) -> None:
        served = ServedModel(mcfg, embedder, self.cfg.batching)
        served.queue.stats.observers.append(self.metrics.observe_batch(mcfg.name))
        served.queue.start()
        self.models[mcfg.name] = served

    def _load_failed(self, name: str, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.load_errors[name] = message
        logger.error("could not load %r: %s", name, message)
        if self.on_fatal is not None:
            self.on_fatal(f"could not load {name!r}: {message}")

    @property
    def ready(self) -> bool:
        return (not self.draining and not self.load_errors and len(self.models) == len(self.cfg.models)
                and len(self.rerankers) == len(self.cfg.rerankers))

    async def shutdown(self) -> None:
        self.draining = True
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            with contextlib.suppress(BaseException):
                await self._loader
        await asyncio.gather(*(m.queue.drain(self.cfg.drain_seconds) for m in self.models.values()))
        for m in self.models.values():
            m.close()
        await self.limits.aclose()
        if self.cache is not None:
            for tier in getattr(self.cache, "tiers", [self.cache]):
                closer = getattr(tier, "aclose", None)
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer()

    # --------------------------------------------------------------------------------------------- helpers
    def _tenant(self, request: Request) -> TenantConfig:
        tenant = authenticate(request.headers.get("authorization"), self.cfg)
        if tenant is None:
            has = bool(request.headers.get("authorization"))
            raise ApiError(401, "invalid API key" if has else "missing API key: send Authorization: Bearer KEY",
                           code="invalid_api_key", kind="authentication_error",
                           headers={"WWW-Authenticate": "Bearer"})
        return tenant

    async def _body(self, request: Request) -> bytes:
        limit = self.cfg.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
            if size > limit:
                raise ApiError(413, f"the request body has {size} bytes, over the limit of {limit}; send fewer "
                               "or shorter texts per request", code="request_too_large")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes; send fewer or shorter "
                               "texts per request", code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _allowed(self, tenant: TenantConfig, name: str) -> None:
        if tenant.models is not None and name not in tenant.models:
            raise ApiError(403, f"tenant {tenant.name!r} may not use {name!r}; allowed: {list(tenant.models)}",
                           param="model", code="model_not_allowed", kind="permission_error")

    def _model(self, name: str | None, tenant: TenantConfig) -> ServedModel:
        name = name or self.cfg.models[0].name
        if self.cfg.model(name) is None:
            raise ApiError(404, f"model {name!r} is not served here; available: "
                           f"{[m.name for m in self.cfg.models]} (GET /v1/models)",
                           param="model", code="model_not_found")
        self._allowed(tenant, name)
        served = self.models.get(name)
        if served is None:
            raise self._not_ready(name)
        return served

    def _reranker(self, name: str | None, tenant: TenantConfig) -> ServedReranker:
        names = [r.name for r in self.cfg.rerankers]
        if not names:
            raise ApiError(404, "no reranker is configured on this gateway; add a [rerankers.NAME] table",
                           param="model", code="model_not_found")
        name = name or names[0]
        if name not in names:
            raise ApiError(404, f"reranker {name!r} is not served here; available: {names}", param="model",
                           code="model_not_found")
        self._allowed(tenant, name)
        served = self.rerankers.get(name)
        if served is None:
            raise self._not_ready(name)
        return served

    def _not_ready(self, name: str) -> ApiError:
        if name in self.load_errors:
            return ApiError(503, f"{name!r} failed to load: {self.load_errors[name]}", code="model_unavailable",
                            kind="server_error")
        return ApiError(503, f"{name!r} is still loading; retry shortly (GET /readyz)", code="model_loading",
                        kind="server_error", headers={"Retry-After": "2"})

    async def _admit(self, tenant: TenantConfig, tokens: int, price: float) -> Admission:
        if unlimited(tenant):
            return Admission(tenant.name, 0, "", "", tracked=False)
        try:
            return await self.limits.admit(tenant, tokens=tokens, cost=cost_pusd(tokens, price))
        except Refused as exc:
            self.metrics.refused.labels(exc.kind).inc()
            headers = retry_after_header(exc.retry_after)
            if exc.kind != "rate_limit_exceeded":
                headers["x-should-retry"] = "false"  # the openai SDK would otherwise retry a hopeless request
            raise ApiError(429, str(exc), code=exc.kind,
                           kind="insufficient_quota" if exc.kind == "insufficient_quota" else "rate_limit_error",
                           headers=headers) from None
        except LimitsUnavailable as exc:
            self.metrics.refused.labels("limits_unavailable").inc()
            raise ApiError(503, f"{exc}; requests are refused until it is back (budgets are never skipped)",
                           code="limits_unavailable", kind="server_error", headers={"Retry-After": "1"}) from None

    async def _settle(self, admission: Admission, cost: int) -> None:
        """Return the unused part of a reservation. If the store is gone the reservation stands: a tenant may be
        refused a little early, never let past a cap."""
        if not admission.tracked:
            return
        try:
            await self.limits.settle(admission, cost)
        except LimitsUnavailable as exc:
            logger.warning("could not settle tenant %r's reservation (%s); it stands until the period ends",
                           admission.tenant, exc)

    @staticmethod
    def _rate_headers(admission: Admission) -> dict[str, str]:
        headers = {}
        if admission.remaining_requests is not None:
            headers["x-ratelimit-remaining-requests"] = str(max(0, admission.remaining_requests))
        if admission.remaining_tokens is not None:
            headers["x-ratelimit-remaining-tokens"] = str(max(0, admission.remaining_tokens))
        return headers

    async def _until_done(self, request: Request, work: Awaitable[Any], deadline: float) -> Any:
        """Await ``work``; 504 past the deadline; :class:`_ClientGone` when the client disconnects first."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(_wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, watch}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            if watch in done:
                raise _ClientGone()
            raise ApiError(504, f"the answer was not ready within {self.cfg.request_timeout_seconds:g} s; the "
                           "gateway is overloaded or the model is slow: retry later or send fewer texts",
                           code="timeout", kind="server_error")
        finally:
            for t in (task, watch):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(task, watch, return_exceptions=True)

    # ------------------------------------------------------------------------------------------- handlers
    async def embeddings(self, request: Request) -> Response:
        deadline = time.monotonic() + self.cfg.request_timeout_seconds
        tenant = self._tenant(request)
        req = parse_embed(parse_json(await self._body(request)), max_inputs=self.cfg.limits.max_inputs)
        model = self._model(req.model, tenant)
        request.state.model = model.name
        if req.dim is not None and req.dim > model.dim:
            raise ApiError(400, f"dimensions={req.dim} is larger than model {model.name!r}'s {model.dim}; ask for "
                           f"at most {model.dim} (Matryoshka truncation only shortens vectors)", param="dimensions")
        counts = await model.count_tokens(req.texts)
        limit = self.cfg.limits.max_tokens_per_input
        for i, n in enumerate(counts):
            if n > limit:
                raise ApiError(400, f"input[{i}] has about {n} tokens, over this gateway's limit of {limit} per "
                               "input; split it into chunks", param="input", code="input_too_long")
        if not req.truncation and model.max_tokens is not None:
            exact = await model.exact_tokens(req.texts)
            for i, n in enumerate(exact):
                if n > model.max_tokens:
                    raise ApiError(400, f"input[{i}] has {n} tokens, over model {model.name!r}'s limit of "
                                   f"{model.max_tokens}, and truncation is false; split it or allow truncation",
                                   param="input", code="input_too_long")
        tokens = sum(counts)
        admission = await self._admit(tenant, tokens, model.price)
        charged = 0
        try:
            lookup = await model.lookup(req.texts, req.input_type)
            if lookup.futures:
                try:
                    full = await self._until_done(request, model.wait(lookup), deadline)
                finally:
                    model.queue.release(lookup.submitted, req.input_type)
            else:  # all cached: nothing to wait for
                full = await model.wait(lookup)
            vectors = await model.derive(full, req.dim, req.precision)
            if lookup.misses and model.price:
                first: dict[int, int] = {}
                for pos, row in enumerate(lookup.inverse.tolist()):
                    first.setdefault(row, pos)
                charged = cost_pusd(sum(counts[first[i]] for i in lookup.misses), model.price)
        finally:
            await self._settle(admission, charged)
        body = embed_response(req, model.name, vectors, tokens)
        m = self.metrics
        m.texts.labels("embeddings", model.name).inc(len(req.texts))
        m.tokens.labels("embeddings", model.name, tenant.name).inc(tokens)
        if charged:
            m.usd.labels("embeddings", model.name, tenant.name).inc(charged / 1e12)
        headers = self._rate_headers(admission)
        headers["x-embedopt-cache-hits"] = f"{lookup.hits}/{len(lookup.rows)}"
        return Response(body, media_type=_JSON, headers=headers)

    async def rerank(self, request: Request) -> Response:
        deadline = time.monotonic() + self.cfg.request_timeout_seconds
        tenant = self._tenant(request)
        req = parse_rerank(parse_json(await self._body(request)),
                           max_documents=self.cfg.limits.max_rerank_documents)
        served = self._reranker(req.model, tenant)
        request.state.model = served.name
        if not req.truncation:
            raise ApiError(400, "truncation=false is not supported for rerank here: the cross-encoder truncates "
                           f"each (query, document) pair to its limit ({served.max_length} tokens); send "
                           "truncation=true or shorter documents", param="truncation")
        q = estimate_tokens(req.query)
        tokens = sum(q + estimate_tokens(d) for d in req.documents)
        admission = await self._admit(tenant, tokens, served.price)
        charged = 0
        try:
            results = await self._until_done(request, served.reranker.arank(req.query, req.documents, req.top),
                                             deadline)
            charged = cost_pusd(tokens, served.price)
        finally:
            await self._settle(admission, charged)
        ranked = [(int(r.index), float(r.score)) for r in results]
        body = rerank_response(req, served.name, ranked, tokens, f"embedopt-{uuid.uuid4().hex}")
        m = self.metrics
        m.texts.labels("rerank", served.name).inc(len(req.documents))
        m.tokens.labels("rerank", served.name, tenant.name).inc(tokens)
        if charged:
            m.usd.labels("rerank", served.name, tenant.name).inc(charged / 1e12)
        return Response(body, media_type=_JSON, headers=self._rate_headers(admission))

    async def list_models(self, request: Request) -> Response:
        tenant = self._tenant(request)
        data = []
        for m in self.cfg.models:
            if tenant.models is None or m.name in tenant.models:
                served = self.models.get(m.name)
                data.append({"id": m.name, "object": "model", "created": 0, "owned_by": "embedopt",
                             "type": "embedding", "ready": served is not None,
                             "dimensions": served.dim if served else None})
        for r in self.cfg.rerankers:
            if tenant.models is None or r.name in tenant.models:
                data.append({"id": r.name, "object": "model", "created": 0, "owned_by": "embedopt",
                             "type": "rerank", "ready": r.name in self.rerankers})
        return Response(dumps({"object": "list", "data": data}), media_type=_JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        loading = [m.name for m in self.cfg.models if m.name not in self.models and m.name not in self.load_errors]
        loading += [r.name for r in self.cfg.rerankers if r.name not in self.rerankers
                    and r.name not in self.load_errors]
        body = {"ready": self.ready, "draining": self.draining, "loading": loading, "failed": self.load_errors,
                "models": {name: {"dim": m.dim, "queue": m.queue.depth} for name, m in self.models.items()}}
        return Response(dumps(body), status_code=200 if self.ready else 503, media_type=_JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        m = self.metrics
        m.ready.set(1 if self.ready else 0)
        for name, served in self.models.items():
            q = served.queue
            m.queue_depth.labels(name).set(q.depth)
            m.dropped.labels(name).set(q.stats.dropped)
            m.shared.labels(name).set(q.stats.shared)
            m.cache_lookups.labels(name).set(served.lookups)
            m.cache_hit_ratio.labels(name).set(served.hits / served.lookups if served.lookups else 0.0)
            for route, totals in served.embedder.ledger.to_dict()["routes"].items():
                m.provider_tokens.labels(name, route).set(totals["tokens"])
                m.provider_usd.labels(name, route).set(totals["usd"])
        for tenant in self.cfg.tenants.values():
            if tenant.daily_usd is None and tenant.monthly_usd is None:
                continue
            try:
                day, month = await self.limits.spent(tenant)
            except LimitsUnavailable:
                continue
            if tenant.daily_usd is not None:
                m.budget_left.labels(tenant.name, "day").set((usd_to_pusd(tenant.daily_usd) - day) / 1e12)
            if tenant.monthly_usd is not None:
                m.budget_left.labels(tenant.name, "month").set((usd_to_pusd(tenant.monthly_usd) - month) / 1e12)
        body, content_type = m.render()
        return Response(body, media_type=content_type)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _status_of(exc: BaseException) -> tuple[int, str, str, str | None, dict[str, str]]:
    """(status, message, type, code, headers) for an exception raised while answering."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.kind, exc.code, exc.headers
    if isinstance(exc, QueueFull):
        return (429, str(exc), "rate_limit_error", "queue_full", retry_after_header(exc.retry_after))
    if isinstance(exc, BudgetExceededError):
        return 429, str(exc), "insufficient_quota", "insufficient_quota", {"x-should-retry": "false"}
    if isinstance(exc, (InputError, DimensionError, CalibrationError, ConfigError)):
        return 400, str(exc), "invalid_request_error", None, {}
    if isinstance(exc, ProviderError):
        if exc.retryable:
            return 503, f"the model's provider failed, retry: {exc}", "server_error", "provider_unavailable", \
                retry_after_header(exc.retry_after or 1)
        return 502, f"the model's provider failed: {exc}", "server_error", "provider_error", {}
    if isinstance(exc, ModelLoadError):
        return 503, str(exc), "server_error", "model_unavailable", {"Retry-After": "5"}
    if isinstance(exc, EmbedOptError):
        return 500, f"{type(exc).__name__}: {exc}", "server_error", None, {}
    return 500, "internal error (logged on the server)", "server_error", None, {}


def _handler(gateway: Gateway, route: str, fn: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
    """Map every exception to a JSON error with the right status, and count and time every request."""
    metrics = gateway.metrics

    async def handle(request: Request) -> Response:
        started = time.monotonic()
        try:
            response = await fn(request)
        except _ClientGone:
            response = Response(b"", status_code=499)  # nobody reads it; counted as nginx does
        except Exception as exc:
            status, message, kind, code, headers = _status_of(exc)
            if status >= 500 and not isinstance(exc, (ApiError, QueueFull)):
                logger.error("%s failed: %s", route, message, exc_info=status == 500)
            param = exc.param if isinstance(exc, ApiError) else None
            response = Response(error_body(status, message, param=param, code=code, kind=kind),
                                 status_code=status, media_type=_JSON, headers=headers)
        model = getattr(request.state, "model", "-")
        metrics.requests.labels(route, model, str(response.status_code)).inc()
        metrics.latency.labels(route, model).observe(time.monotonic() - started)
        return response

    return handle


def create_app(cfg: ServeConfig, *, embedders: Mapping[str, Any] | None = None,
               rerankers: Mapping[str, Any] | None = None, limits: Limits | None = None) -> Starlette:
    """The gateway as an ASGI app; ``app.state.gateway`` is its :class:`Gateway`."""
    gateway = Gateway(cfg, embedders=embedders, rerankers=rerankers, limits=limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    routes = [
        Route("/v1/embeddings", _handler(gateway, "embeddings", gateway.embeddings), methods=["POST"]),
        Route("/v1/rerank", _handler(gateway, "rerank", gateway.rerank), methods=["POST"]),
        Route("/v1/models", _handler(gateway, "models", gateway.list_models), methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
