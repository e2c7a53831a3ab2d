"""A training preset -> transformers.TrainingArguments: strata's keys mapped, a preset's `trainer:` passed through."""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.train.distributed import launched
from strata.train.trainconfig import TrainPreset

# preset key -> TrainingArguments field; the preset keeps its short names, the Trainer does the work
MAPPED = {"lr": "learning_rate", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
          "grad_accum": "gradient_accumulation_steps", "weight_decay": "weight_decay",
          "max_grad_norm": "max_grad_norm", "save_steps": "save_steps", "seed": "seed",
          "gradient_checkpointing": "gradient_checkpointing"}
# fields strata sets from the run itself (the checkpoint dir, the step count, the warmup); not for `trainer:`
OWNED = {"output_dir": "the adapter dir's checkpoints/", "max_steps": "max_steps", "warmup_steps": "warmup_ratio",
         "warmup_ratio": "warmup_ratio",
         "eval_on_start": "(set from --resume-from)", "include_num_input_tokens_seen": "(needed for tokens/s)"}


def planned_steps(n_blocks: int, cfg: TrainPreset, world_size: int = 1, tokens: int | None = None) -> int:
    """Optimiser steps the Trainer will run: `max_steps` when set (like TrainingArguments.max_steps, it overrides
    epochs), else epochs x ceil(batches per rank / grad_accum); with `step_tokens`, a budget of epochs x tokens /
    step_tokens, at least `min_steps` and at most `max_steps`."""
    if n_blocks < 1:
        raise StrataError("no training blocks: the selected records produced no tokens; check the dataset and topics")
    if cfg.max_steps and not (cfg.step_tokens and tokens is not None):
        return cfg.max_steps
    if cfg.step_tokens and tokens is not None:
        steps = math.ceil(cfg.epochs * tokens / cfg.step_tokens)
    else:
        per_rank = math.ceil(n_blocks / (cfg.batch_size * world_size))
        steps = math.ceil(cfg.epochs * math.ceil(per_rank / cfg.grad_accum))
    steps = max(steps, cfg.min_steps)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def training_arguments(cfg: TrainPreset, output_dir: Path, *, steps: int, device: str, dtype: Any,
                       evaluate_first: bool, progress: bool, args_class: Any = None,
                       extra: dict[str, Any] | None = None) -> Any:
    """The TrainingArguments of one adapter run: cosine schedule with `warmup_ratio` (floored, so a short run never
    spends its first step at lr 0), AdamW, a log row per step, checkpoints every `save_steps`, TensorBoard (tokens
    seen counts every token: flattened batches hold no padding); bf16 and gradient checkpointing on CUDA, gloo DDP
    on CPU. `cfg.trainer` adds or overrides any other field.
    `args_class` (a TrainingArguments subclass such as trl.DPOConfig) gets `extra`: its own fields only."""
    import torch
    from transformers import TrainingArguments

    args_class = args_class or TrainingArguments

    values: dict[str, Any] = {target: getattr(cfg, key) for key, target in MAPPED.items()}
    cuda = device == "cuda"
    values.update(
        output_dir=str(output_dir), max_steps=steps, warmup_steps=int(cfg.warmup_ratio * steps),
        per_device_eval_batch_size=cfg.batch_size, lr_scheduler_type="cosine", optim="adamw_torch",
        logging_steps=1, save_strategy="steps", eval_strategy="no", eval_on_start=evaluate_first,
        report_to=["tensorboard"], include_num_input_tokens_seen="all", disable_tqdm=not progress,
        remove_unused_columns=False, ddp_find_unused_parameters=False, dataloader_pin_memory=cuda,
        gradient_checkpointing=cfg.gradient_checkpointing and cuda,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda and dtype == torch.bfloat16, use_cpu=not cuda,
        ddp_backend="gloo" if launched() and not cuda else None,
    )
    passed = dict(cfg.trainer)
    fields = init_fields(TrainingArguments)
    for name in passed:
        preset_key = next((k for k, v in MAPPED.items() if v == name), None) or OWNED.get(name)
        if preset_key:
            raise StrataError(f"preset `trainer: {{{name}: ...}}` is set by strata; use the preset key {preset_key} "
                              "instead.")
        if name not in fields:
            raise StrataError(f"preset `trainer:` key {name!r} is not a transformers.TrainingArguments field"
                              f"{did_you_mean(name, fields)}; see "
                              "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments")
    own = init_fields(args_class) - fields
    for name in extra or {}:
        if name not in own:
            raise StrataError(f"preset `dpo:` key {name!r} is not a field of {args_class.__module__}."
                              f"{args_class.__name__} (beyond TrainingArguments){did_you_mean(name, own)}; put "
                              "TrainingArguments fields under `trainer:`")
    try:
        return args_class(**(values | passed | dict(extra or {})))
    except (TypeError, ValueError) as exc:
        owner = f"{args_class.__module__.split('.')[0]}.{args_class.__name__}"  # transformers.TrainingArguments
        raise StrataError(f"the preset's training settings were rejected by {owner}: {exc}") from None


def init_fields(kind: type) -> set[str]:
    """The constructor fields of a TrainingArguments-like dataclass."""
    return {f.name for f in dataclasses.fields(kind) if f.init}


def did_you_mean(name: str, known: set[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
