"""The Status page's numbers, read from the engine's own /health and /metrics (no second bookkeeping)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# shown name -> (metric sample name, label filter)
SHOWN: dict[str, tuple[str, dict[str, str]]] = {
    "slots_busy": ("strata_busy_slots", {}),
    "queue_depth": ("strata_queue_depth", {}),
    "completion_tokens": ("strata_tokens_total", {"kind": "completion"}),
    "prompt_tokens": ("strata_tokens_total", {"kind": "prompt"}),
    "adapter_swaps": ("strata_adapter_swaps_total", {}),
    "loaded_adapters": ("strata_loaded_adapters", {}),
    "active_adapters": ("strata_active_adapters", {}),
    "stream_disconnects": ("strata_stream_disconnects_total", {}),
    "cancelled": ("strata_cancelled_total", {}),
}


def from_metrics(text: str) -> dict[str, float]:
    """The SHOWN values (0 when a series has no sample yet) and the request count over every route."""
    values = {name: 0.0 for name in SHOWN}
    requests = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, (metric, labels) in SHOWN.items():
                if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                    values[name] += sample.value
            if sample.name == "strata_requests_total":
                requests += sample.value
    return values | {"requests": requests}


def summary(health: dict[str, Any], metrics_text: str | None) -> dict[str, Any]:
    """One JSON object for the page and its poller: health fields, release, and the metrics above."""
    return {"health": health, "release": health.get("release"),
            "metrics": from_metrics(metrics_text) if metrics_text is not None else None}
