"""PNG plots of a QA run (matplotlib, Agg backend): quality, latency and perplexity per layer, F1 by topic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def write_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Write every plot that has data into folder; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    layers = [layer for layer in results["layers"] if layer["status"] == "ok"]
    names = [layer["name"] for layer in layers]
    written = []
    series = {
        "quality.png": ("Reference metrics per layer (BLEU / 100)",
                        {"exact match": "exact_match", "token F1": "f1", "ROUGE-L": "rouge_l", "BLEU/100": "bleu"}),
        "latency.png": ("Latency per layer (seconds, mean per prompt)", {"TTFT": "ttft_s", "total": "latency_s"}),
        "perplexity.png": ("Held-out perplexity per layer (lower is better)", {"perplexity": "perplexity"}),
    }
    for file, (title, keys) in series.items():
        values = {label: [_value(layer, key) for layer in layers] for label, key in keys.items()}
        if names and any(v is not None for vals in values.values() for v in vals):
            written.append(_bars(plt, folder / file, title, names, values))
    topics = results.get("topics", {}).get("f1") or {}
    if topics:
        written.append(_heatmap(plt, folder / "topics.png", topics))
    return written


def _value(layer: dict, key: str) -> float | None:
    value = layer["summary"].get(key)
    return value / 100 if key == "bleu" and value is not None else value


def _bars(plt: Any, path: Path, title: str, names: list[str], values: dict[str, list[float | None]]) -> Path:
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) * max(1, len(values)) / 2 + 2), 3.6))
    width = 0.8 / len(values)
    for i, (label, vals) in enumerate(values.items()):
        xs = [n + (i - (len(values) - 1) / 2) * width for n in range(len(names))]
        ax.bar(xs, [v or 0.0 for v in vals], width, label=label, color=COLORS[i % len(COLORS)])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_title(title)
    if len(values) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _heatmap(plt: Any, path: Path, table: dict[str, dict[str, float | None]]) -> Path:
    layers = list(table)
    topics = sorted({t for by in table.values() for t in by})
    grid = [[table[layer].get(t) or 0.0 for t in topics] for layer in layers]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(topics), 1.2 + 0.5 * len(layers)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0.0)
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", color="white", fontsize="small")
    ax.set_xticks(range(len(topics)), [t.replace("ASC_", "") for t in topics], rotation=20, ha="right")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_title("Mean token F1 by topic (which layer wins where)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
