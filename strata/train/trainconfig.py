"""The training preset: LoRA shape, optimiser and data knobs; presets/levels/*.yaml hold only what differs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class TrainPreset:
    """Defaults sized for a 7B base on one GPU (bf16, packed 1024-token blocks, 16 sequences per step)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # roles (attention, mlp, all-linear; strata.train.targets maps them per architecture) or explicit module names
    target_modules: list[str] = field(default_factory=lambda: ["attention"])
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # caps optimiser steps (None: as many as `epochs` gives)
    max_seq_len: int = 1024
    batch_size: int = 4
    grad_accum: int = 4
    format: Literal["text", "chat"] = "text"
    topics: list[str] | None = None  # None: every topic in the dataset
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_steps: int = 200
    eval_batches: int = 20
    gradient_checkpointing: bool = True  # CUDA only; CPU runs are small
    seed: int = 42
    # any other transformers.TrainingArguments field, passed through as is (e.g. {save_total_limit: 2, optim: adamw_8bit})
    trainer: dict[str, Any] = field(default_factory=dict)


def load_train_preset(level: int, preset: str | None = None, **overrides: Any) -> TrainPreset:
    """The preset for `level` (presets/levels/level<N>.yaml) or the named/path `preset`, with non-None overrides."""
    from strata.presets import load_preset

    return load_preset(TrainPreset, preset or f"levels/level{level}", **overrides)
