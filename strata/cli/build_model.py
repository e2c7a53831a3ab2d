"""`strata build` model steps: train, merge, convert, all."""

from __future__ import annotations

import click

from strata.cli.common import friendly_errors, workspace_option
from strata.settings import Settings

COMMANDS: list[click.Command] = []


@click.command("train")
@click.option("--level", type=click.IntRange(1), default=1, show_default=True,
              help="Level N trains on the base with levels 1..N-1 merged in, using presets/levels/levelN.yaml.")
@click.option("--per-topic", is_flag=True, help="Train one adapter per dataset topic into peft/<topic>/ instead of peft/levelN/.")
@click.option("--topics", default=None, help="Comma-separated topics to keep (default: the preset's filter, else all).")
@click.option("--peft", "peft_kind", type=click.Choice(["lora", "dora"]), default="lora", show_default=True,
              help="Adapter kind. DoRA trains but cannot be exported to GGUF: merge it instead.")
@click.option("--quantization", type=click.Choice(["none", "int8", "int4"]), default="none", show_default=True,
              help="Load the base in 8/4-bit through bitsandbytes (QLoRA). CUDA only.")
@click.option("--max-train-samples", type=click.IntRange(1), default=None, help="Use at most this many training records.")
@click.option("--dry-run", is_flag=True, help="Load everything and print the plan (params, tokens, steps, output dir); train and write nothing.")
@click.option("--resume-from", default=None, help="A checkpoint dir (…/checkpoints/step-N), or `auto` for the latest one.")
@click.option("--base-model", default=None, help="A local HF model dir or a Hugging Face hub id (default: BASE_MODEL).")
@click.option("--preset", default=None, help="Preset name under presets/ or a .yaml path (default: levels/levelN).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the preset's epochs.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimiser steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the preset's learning rate.")
@click.option("--save-steps", type=click.IntRange(1), default=None, help="Write a resumable checkpoint every N steps.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@workspace_option
@friendly_errors
def train(settings: Settings, level: int, per_topic: bool, topics: str | None, peft_kind: str, quantization: str,
          max_train_samples: int | None, dry_run: bool, resume_from: str | None, base_model: str | None,
          preset: str | None, epochs: float | None, max_steps: int | None, lr: float | None,
          save_steps: int | None, no_progress: bool) -> None:
    """Train LoRA level N (or per-topic layers) and export each adapter to GGUF for the server."""
    from strata.build.train import train_level

    written = train_level(
        settings, level, per_topic=per_topic, topics=[t.strip() for t in topics.split(",") if t.strip()] if topics else None,
        peft=peft_kind, quantization=quantization, max_train_samples=max_train_samples, dry_run=dry_run,
        resume_from=resume_from, base_model=base_model, preset=preset, progress=not no_progress,
        overrides={"epochs": epochs, "max_steps": max_steps, "lr": lr, "save_steps": save_steps},
    )
    verb = "would write" if dry_run else "wrote"
    for path in written:
        click.echo(f"{verb} {path}")


COMMANDS.append(train)
