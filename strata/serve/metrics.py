"""Prometheus metrics, one registry per app (never a module global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
UBATCH_BUCKETS = (1, 2, 3, 4, 8, 16)
MAX_LABEL_VALUES = 32  # distinct adapter-set labels per metric; later ones are counted under "other"


class Metrics:
    """Requests, tokens, latency, adapters, and the decode loop (queue, slots, batch sizes, prefix cache)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._labels: set[str] = set()
        r = self.registry
        self.requests = Counter("strata_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("strata_request_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("strata_tokens", "Tokens processed, by kind (prompt or completion)", ["kind"], registry=r)
        self.adapter_swaps = Counter("strata_adapter_swaps", "Changes of the adapter set on the llama.cpp context "
                                     "(between decode calls)", registry=r)
        self.adapter_load_seconds = Histogram("strata_adapter_load_seconds", "Time to load one LoRA from disk",
                                              buckets=LATENCY_BUCKETS, registry=r)
        self.active_adapters = Gauge("strata_active_adapters", "Adapters in the global set (non-zero scale)", registry=r)
        self.adapter_evictions = Counter("strata_adapter_evictions", "Idle adapters unloaded to stay within "
                                         "--max-loaded-adapters", registry=r)
        self.loaded_adapters = Gauge("strata_loaded_adapters", "Adapters loaded in memory", registry=r)
        self.stream_disconnects = Counter("strata_stream_disconnects", "Streams stopped because the client left",
                                          registry=r)

        self.queue_depth = Gauge("strata_queue_depth", "Requests waiting for a free slot", registry=r)
        self.busy_slots = Gauge("strata_busy_slots", "Slots generating or reading a prompt", registry=r)
        self.decode_tokens = Histogram("strata_decode_batch_tokens", "Tokens per llama_decode call",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.decode_calls = Counter("strata_decode_calls", "llama_decode calls by adapter set (adapter names; "
                                    f"after {MAX_LABEL_VALUES} distinct sets, 'other')", ["adapters"], registry=r)
        self.decode_ubatches = Histogram("strata_decode_ubatches", "ubatches llama.cpp splits one llama_decode into "
                                         "(each a pass over the weights; 1 is best)", buckets=UBATCH_BUCKETS,
                                         registry=r)
        self.graphs_reused = Counter("strata_graphs_reused", "ubatches whose compute graph llama.cpp reused "
                                     "(llama_perf_context n_reused)", registry=r)
        self.set_switches = Gauge("strata_set_switches", "Turns handed from one busy adapter set to another by the "
                                  "switching policy (compare with strata_decode_calls)", registry=r)
        self.slot_moves = Counter("strata_slot_moves", "Sequences moved to close a gap in a set's sequence ids",
                                  registry=r)
        self.set_requests = Counter("strata_set_requests", "Generations admitted, by adapter set", ["adapters"],
                                    registry=r)
        self.set_tokens = Counter("strata_set_completion_tokens", "Completion tokens, by adapter set", ["adapters"],
                                  registry=r)
        self.set_seconds = Counter("strata_set_decode_seconds", "Seconds inside llama_decode, by adapter set",
                                   ["adapters"], registry=r)
        self.rejected = Counter("strata_rejected", "Requests refused before they ran, by reason", ["reason"],
                                registry=r)
        self.cached_prompt_tokens = Counter("strata_cached_prompt_tokens", "Prompt tokens served from a slot's "
                                            "prefix cache instead of being evaluated again", registry=r)
        self.slot_wait_seconds = Histogram("strata_slot_wait_seconds", "Time a request waited for a free slot",
                                           buckets=WAIT_BUCKETS, registry=r)
        self.cancelled = Counter("strata_cancelled", "Generations stopped because their client went away",
                                 registry=r)

    def bounded(self, label: str) -> str:
        """`label` while fewer than MAX_LABEL_VALUES distinct labels were seen, else "other" (bounded series)."""
        if label in self._labels:
            return label
        if len(self._labels) >= MAX_LABEL_VALUES:
            return "other"
        self._labels.add(label)
        return label

    def render(self) -> bytes:
        return generate_latest(self.registry)
