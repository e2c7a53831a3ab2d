"""`strata build train --soft-prompt NAME`: the options that switch `train` from a LoRA level to a soft prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from strata.settings import Settings


def soft_prompt_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--soft-prompt, --fidelity-gguf and (unless the command has it already) --train-files."""
    names = {p.name for p in getattr(func, "__click_params__", [])}
    options = [
        click.option("--soft-prompt", "soft_prompt", default=None, metavar="NAME",
                     help="Train a soft prompt (PEFT prompt tuning: NAME's virtual-token embeddings, preset "
                          "soft_prompts/default or --preset) into WORKSPACE/soft_prompts/NAME/ instead of a LoRA "
                          "level; the server injects it per request (\"soft_prompt\": NAME)."),
        click.option("--fidelity-gguf", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="F16/F32 GGUF of the base for the soft prompt's HF-vs-llama.cpp logit check (default: "
                          "the base converted once into soft_prompts/.bases/)."),
    ]
    if "train_files" not in names:
        options.append(click.option("--train-files", multiple=True, type=click.Path(dir_okay=False, exists=True),
                                    help="JSONL files to train on instead of the dataset (repeatable). Each row "
                                         "holds `text`, or `prompt` + `response`, or `messages`."))
    for option in reversed(options):
        func = option(func)
    return func


def train_soft_prompt_command(settings: Settings, name: str, *, preset: str | None, topics: list[str] | None,
                              train_files: tuple[str, ...], base_model: str | None, fidelity_gguf: str | None,
                              max_train_samples: int | None, resume_from: str | None, progress: bool,
                              overrides: dict[str, Any], refused: dict[str, Any]) -> Path:
    """Check that no LoRA-only option was given, then train (see strata.train.softprompt.train_soft_prompt)."""
    from strata.train.softprompt import train_soft_prompt
    from strata.userdata import expand

    given = [flag for flag, value in refused.items() if value]
    if given:
        raise click.UsageError(f"{', '.join(given)} apply to LoRA levels (and their user data), not to --soft-prompt; drop them.")
    files = [f for pattern in train_files for f in expand(pattern)]  # globs, as for the levels' --train-files
    return train_soft_prompt(settings, name, preset=preset, train_files=files,
                             topics=topics, base_model=base_model, gguf=Path(fidelity_gguf) if fidelity_gguf else None,
                             max_train_samples=max_train_samples, overrides=overrides, resume_from=resume_from,
                             progress=progress)

