"""Loss log (JSONL, one record per optimiser step) -> loss curve PNG, drawn headless with matplotlib's Agg."""

from __future__ import annotations

import json
from pathlib import Path

from strata.files import staged_path


def plot_loss(loss_jsonl: Path, png: Path, title: str = "training loss") -> Path:
    """Plot `loss` per `step` (and `eval_loss` points where present) from `loss_jsonl` into `png`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in Path(loss_jsonl).read_text().splitlines() if line.strip()]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if train:
        axes.plot(*zip(*train), label="train")
    if evals:
        axes.plot(*zip(*evals), "o--", label="eval")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    with staged_path(png, "tmp.png") as tmp:
        figure.savefig(tmp, format="png")
    return png
