"""Prometheus metrics, one registry per app (never a module global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Requests, tokens, latency, adapter swaps, adapter load time and active adapters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("strata_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("strata_request_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("strata_tokens", "Tokens processed, by kind (prompt or completion)", ["kind"], registry=r)
        self.adapter_swaps = Counter("strata_adapter_swaps", "Changes of the adapter set on the llama.cpp context",
                                     registry=r)
        self.adapter_load_seconds = Histogram("strata_adapter_load_seconds", "Time to load one LoRA from disk",
                                              buckets=LATENCY_BUCKETS, registry=r)
        self.active_adapters = Gauge("strata_active_adapters", "Adapters applied on the context now", registry=r)
        self.loaded_adapters = Gauge("strata_loaded_adapters", "Adapters loaded in memory", registry=r)
        self.stream_disconnects = Counter("strata_stream_disconnects", "Streams stopped because the client left",
                                          registry=r)

    def count_usage(self, usage: dict | None) -> None:
        if usage:
            self.tokens.labels("prompt").inc(usage.get("prompt_tokens", 0))
            self.tokens.labels("completion").inc(usage.get("completion_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
