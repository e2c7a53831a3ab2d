"""The training preset: LoRA shape, optimiser and data knobs; presets/levels/*.yaml hold only what differs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


PHRASINGS = ("{question}", "{question} Answer from the guidance on {section}.", "Question on {section}: {question}",
             "{question} Please answer in a sentence or two.", "According to the standard, {question}")


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
    max_steps: int | None = None  # optimiser steps, overriding epochs; with step_tokens, the budget's cap
    # a step budget from the data's tokens (topic layers): epochs x tokens / step_tokens optimiser steps, at least
    # min_steps; None: epochs x batches as usual
    step_tokens: int | None = None
    min_steps: int = 0
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
    # chat training on synthesized pairs: instruction phrasings ({question}, {section}), one per pair by its id,
    # and the share of general instruction pairs (presets/general/mix.yaml) mixed in against forgetting
    phrasings: list[str] = field(default_factory=lambda: list(PHRASINGS))
    general_share: float = 0.0
    # chat training on pairs also trains on its topics' chunks (each as the dataset's chat record, "Explain
    # <heading> (<topic>)." -> the chunk) and the teacher's paraphrases (plain text rows), beside the pairs: the facts
    # a held-out question asks about are then in the layer's own data
    with_chunks: bool = False
    # with_chunks also adds this many copies of each chunk with its sentences shuffled, as plain text rows: each
    # sentence is then learnt after different neighbours, so a fact is recalled from its own words rather than from
    # the sentence before it (the "permute" knowledge augmentation of Allen-Zhu & Li, Physics of LMs 3.1)
    permutations: int = 0
    # any other transformers.TrainingArguments field, passed through as is (e.g. {save_total_limit: 2, optim: adamw_8bit})
    trainer: dict[str, Any] = field(default_factory=dict)
    # user data this level trains on instead of data/processed/train.jsonl: globs (relative to the workspace) or
    # mappings of strata.userdata.Source fields ({files, name, split, config, prompt_template, topic, max_samples})
    datasets: list[str | dict[str, Any]] = field(default_factory=list)
    # preference layers (--preferences): trl.DPOConfig's own fields, e.g. {beta: 0.1, loss_type: sigmoid}
    dpo: dict[str, Any] = field(default_factory=dict)


def load_train_preset(level: int, preset: str | None = None, **overrides: Any) -> TrainPreset:
    """The preset for `level` (presets/levels/level<N>.yaml) or the named/path `preset`, with non-None overrides."""
    from strata.presets import load_preset

    return load_preset(TrainPreset, preset or f"levels/level{level}", **overrides)
