"""A training preset -> transformers.TrainingArguments: strata's keys mapped, a preset's `trainer:` passed through."""

from __future__ import annotations

import dataclasses
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


def planned_steps(n_blocks: int, cfg: TrainPreset, world_size: int = 1) -> int:
    """Optimiser steps the Trainer will run: `max_steps`, else epochs x ceil(batches per rank / grad_accum)."""
    if n_blocks < 1:
        raise StrataError("no training blocks: the selected records produced no tokens; check the dataset and topics")
    if cfg.max_steps:
        return cfg.max_steps
    per_rank = math.ceil(n_blocks / (cfg.batch_size * world_size))
    return math.ceil(cfg.epochs * math.ceil(per_rank / cfg.grad_accum))


def training_arguments(cfg: TrainPreset, output_dir: Path, *, steps: int, device: str, dtype: Any,
                       evaluate_first: bool, progress: bool) -> Any:
    """The TrainingArguments of one adapter run: cosine schedule with `warmup_ratio` (floored, so a short run never
    spends its first step at lr 0), AdamW, a log row per step, checkpoints every `save_steps`, TensorBoard;
    bf16 and gradient checkpointing on CUDA, gloo DDP on CPU. `cfg.trainer` adds or overrides any other field."""
    import torch
    from transformers import TrainingArguments

    values: dict[str, Any] = {target: getattr(cfg, key) for key, target in MAPPED.items()}
    cuda = device == "cuda"
    values.update(
        output_dir=str(output_dir), max_steps=cfg.max_steps or -1, warmup_steps=int(cfg.warmup_ratio * steps),
        per_device_eval_batch_size=cfg.batch_size, lr_scheduler_type="cosine", optim="adamw_torch",
        logging_steps=1, save_strategy="steps", eval_strategy="no", eval_on_start=evaluate_first,
        report_to=["tensorboard"], include_num_input_tokens_seen="non_padding", disable_tqdm=not progress,
        remove_unused_columns=False, ddp_find_unused_parameters=False, dataloader_pin_memory=cuda,
        gradient_checkpointing=cfg.gradient_checkpointing and cuda,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda and dtype == torch.bfloat16, use_cpu=not cuda,
        ddp_backend="gloo" if launched() and not cuda else None,
    )
    extra = dict(cfg.trainer)
    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for name in extra:
        preset_key = next((k for k, v in MAPPED.items() if v == name), None) or OWNED.get(name)
        if preset_key:
            raise StrataError(f"preset `trainer: {{{name}: ...}}` is set by strata; use the preset key {preset_key} "
                              "instead.")
        if name not in fields:
            raise StrataError(f"preset `trainer:` key {name!r} is not a transformers.TrainingArguments field; see "
                              "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments")
    try:
        return TrainingArguments(**(values | extra))
    except (TypeError, ValueError) as exc:
        raise StrataError(f"the preset's training settings were rejected by transformers.TrainingArguments: {exc}") from None
