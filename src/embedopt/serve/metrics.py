"""Prometheus metrics of one gateway process (a registry of its own, so several apps can live in one process).

Counters and histograms are updated as requests run; gauges that read state (queue depth, cache hit ratio,
provider spend, budget left) are filled in when ``/metrics`` is scraped.
"""

from __future__ import annotations

from typing import Any

from .._extras import require

__all__ = ["Metrics"]

_LATENCY = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_BATCH_TOKENS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", extra="serve", feature="embedopt serve metrics",
                       package="prometheus-client")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prom.Counter("embedopt_requests", "HTTP requests answered",
                                     ["route", "model", "status"], registry=r)
        self.latency = prom.Histogram("embedopt_request_seconds", "Request latency, admission to answer",
                                      ["route", "model"], buckets=_LATENCY, registry=r)
        self.texts = prom.Counter("embedopt_texts", "Texts embedded or reranked", ["route", "model"], registry=r)
        self.batch_texts = prom.Histogram("embedopt_batch_texts", "Texts per computed batch", ["model"],
                                          buckets=_BATCH_TEXTS, registry=r)
        self.batch_tokens = prom.Histogram("embedopt_batch_padded_tokens", "Padded tokens per computed batch",
                                           ["model"], buckets=_BATCH_TOKENS, registry=r)
        self.batch_seconds = prom.Histogram("embedopt_batch_seconds", "Seconds to compute one batch", ["model"],
                                            buckets=_LATENCY, registry=r)
        self.queue_depth = prom.Gauge("embedopt_queue_depth", "Texts waiting in a model's batch queue", ["model"],
                                      registry=r)
        self.cache_lookups = prom.Gauge("embedopt_cache_lookups", "Unique texts looked up in the cache",
                                        ["model"], registry=r)
        self.cache_hit_ratio = prom.Gauge("embedopt_cache_hit_ratio", "Cache hits / lookups since start",
                                          ["model"], registry=r)
        self.dropped = prom.Gauge("embedopt_queue_dropped_texts", "Queued texts dropped before compute: every "
                                  "request waiting for them left", ["model"], registry=r)
        self.shared = prom.Gauge("embedopt_queue_shared_texts", "Texts found already queued or computing for "
                                 "another request (computed once)", ["model"], registry=r)
        self.tokens = prom.Counter("embedopt_tokens", "Tokens in answered requests (usage)",
                                   ["route", "model", "tenant"], registry=r)
        self.usd = prom.Counter("embedopt_charged_usd", "USD charged to tenants (computed texts only)",
                                ["route", "model", "tenant"], registry=r)
        self.provider_tokens = prom.Gauge("embedopt_provider_tokens", "Tokens sent to a provider route",
                                          ["model", "route"], registry=r)
        self.provider_usd = prom.Gauge("embedopt_provider_usd", "USD billed by a provider route (its price)",
                                       ["model", "route"], registry=r)
        self.budget_left = prom.Gauge("embedopt_budget_left_usd", "A tenant's budget left in the current period",
                                      ["tenant", "period"], registry=r)
        self.refused = prom.Counter("embedopt_refused", "Requests refused before compute", ["reason"], registry=r)
        self.ready = prom.Gauge("embedopt_ready", "1 when every configured model is loaded", registry=r)

    def observe_batch(self, model: str) -> Any:
        texts, tokens, secs = (self.batch_texts.labels(model), self.batch_tokens.labels(model),
                               self.batch_seconds.labels(model))

        def observe(n: int, padded: int, seconds: float) -> None:
            texts.observe(n)
            tokens.observe(padded)
            secs.observe(seconds)

        return observe

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
