"""Trainer callbacks for what a run shows and records: a one-line progress bar, step timing, peak memory."""

from __future__ import annotations

import resource
import time
from typing import Any


def meter_callback() -> Any:
    """Sums the wall time of each optimiser step and the (all-rank, non-padding) tokens it consumed; evaluation,
    logging and checkpoint writes fall outside the steps, as they did in strata's own loop."""
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.tokens = 0
            self._began: tuple[float, int] | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._began = (time.perf_counter(), state.num_input_tokens_seen)

        def on_step_end(self, args, state, control, **kwargs):
            if self._began is not None:
                began, seen = self._began
                self.seconds += time.perf_counter() - began
                self.tokens += state.num_input_tokens_seen - seen
                self._began = None

    return StepMeter()


def peak_memory_mb(device: str) -> tuple[float, str]:
    """(peak MiB, what was measured): CUDA memory allocated by torch, or the process's peak resident set on CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (ru_maxrss)"


def progress_callback(name: str) -> Any:
    """The Trainer's progress bar, named after the adapter, with the loss on the bar instead of a dict per step."""
    from transformers.trainer_callback import ProgressCallback

    class StepBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            if self.training_bar is not None:
                self.training_bar.set_description(f"training {name}")
                self.training_bar.unit = "step"

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")

    return StepBar()
