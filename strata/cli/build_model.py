"""`strata build` model steps: train, merge, convert, all."""

from __future__ import annotations

import click

from strata.cli.build_softprompt import soft_prompt_options, train_soft_prompt_command
from strata.cli.common import friendly_errors, run_locked, teacher_of, teacher_options, workspace_option
from strata.settings import Settings

COMMANDS: list[click.Command] = []


def training_knobs(func):
    """Options shared by `train` and `all` that override the level presets for quick or custom runs."""
    for option in reversed([
        click.option("--max-train-samples", type=click.IntRange(1), default=None, help="Use at most this many training records per adapter (per topic with --per-topic)."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the preset's epochs."),
        click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop each adapter after this many optimiser steps."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the preset's learning rate."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
        click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
                     help="Devices to train on (GPUs, or CPU processes): a level trains data-parallel under torchrun "
                          "with N processes; --per-topic layers train N at a time, one per device."),
    ]):
        func = option(func)
    return func


def user_data_options(func):
    """Options shared by `train` and `all` that train on the user's own rows instead of the PDF dataset."""
    for option in reversed([
        click.option("--train-files", multiple=True, metavar="GLOB",
                     help="JSONL/JSON files to train on instead of data/processed/train.jsonl (repeatable; quote globs: "
                          "'data/*.jsonl'). Each row holds `text`, or `prompt` + `response`, or `messages`."),
        click.option("--dataset-name", default=None, metavar="NAME",
                     help="A Hugging Face dataset to train on: a dir saved with save_to_disk, a folder of data files, "
                          "or a hub id already in the local cache (nothing is downloaded)."),
        click.option("--dataset-split", default="train", show_default=True, help="Split of --dataset-name."),
        click.option("--dataset-config", default=None, help="Config (subset) name of --dataset-name."),
        click.option("--prompt-template", default=None, metavar="TEMPLATE",
                     help="How `prompt` + `response` rows become the text a `format: text` level trains on, e.g. "
                          "'### Question:\n{prompt}\n### Answer:\n{response}' (default: prompt, blank line, response). "
                          "Chat levels render them through the base's chat template."),
        click.option("--val-files", multiple=True, metavar="GLOB",
                     help="Held-out rows (same shapes) for the eval loss when training on user data."),
    ]):
        func = option(func)
    return func


def user_sources(train_files: tuple[str, ...], dataset_name: str | None, dataset_split: str,
                 dataset_config: str | None, prompt_template: str | None) -> list[dict] | None:
    """The CLI's user-data options as userdata.Source mappings (globs made absolute from the current dir)."""
    from pathlib import Path

    common = {"prompt_template": prompt_template} if prompt_template is not None else {}
    sources = [{"files": str(Path.cwd() / Path(p).expanduser())} | common for p in train_files]
    if dataset_name:
        local = Path(dataset_name).expanduser()
        sources.append({"name": str(local.resolve()) if local.exists() else dataset_name, "split": dataset_split,
                        "config": dataset_config} | common)
    return sources or None


@click.command("train")
@click.option("--level", type=click.IntRange(1), default=1, show_default=True,
              help="Level N trains on the base with levels 1..N-1 merged in, using presets/levels/levelN.yaml.")
@click.option("--per-topic", is_flag=True, help="Train one adapter per dataset topic into peft/<topic>/ instead of peft/levelN/.")
@click.option("--topics", default=None, help="Comma-separated topics to keep (default: the preset's filter, else all).")
@click.option("--peft", "peft_kind", type=click.Choice(["lora", "dora"]), default="lora", show_default=True,
              help="Adapter kind. DoRA trains but cannot be exported to GGUF: merge it instead.")
@click.option("--quantization", type=click.Choice(["none", "int8", "int4"]), default="none", show_default=True,
              help="Load the base in 8/4-bit through bitsandbytes (QLoRA). CUDA only.")
@click.option("--dry-run", is_flag=True, help="Load everything and print the plan (params, tokens, steps, output dir); train and write nothing.")
@click.option("--resume-from", default=None,
              help="A Trainer checkpoint dir (peft/<name>/checkpoints/checkpoint-N), or `auto` for the latest one.")
@click.option("--base-model", default=None, help="A local HF model dir or a Hugging Face hub id (default: BASE_MODEL).")
@click.option("--preset", default=None, help="Preset name under presets/ or a .yaml path (default: levels/levelN).")
@click.option("--save-steps", type=click.IntRange(1), default=None, help="Write a resumable checkpoint every N steps.")
@click.option("--preferences", type=click.Path(dir_okay=False, exists=True), default=None, metavar="PREFS.jsonl",
              help="Train level N as a preference layer with TRL's DPO on rows {prompt, chosen, rejected} (extra keys "
                   "such as topic are kept out), on the base with levels 1..N-1 merged in; the preset's `dpo:` block "
                   "sets beta and the loss.")
@soft_prompt_options
@user_data_options
@training_knobs
@workspace_option
@friendly_errors
@run_locked
def train(settings: Settings, level: int, per_topic: bool, topics: str | None, peft_kind: str, quantization: str,
          max_train_samples: int | None, dry_run: bool, resume_from: str | None, base_model: str | None,
          preset: str | None, epochs: float | None, max_steps: int | None, lr: float | None,
          save_steps: int | None, no_progress: bool, nproc: int, preferences: str | None, train_files: tuple[str, ...],
          dataset_name: str | None, dataset_split: str, dataset_config: str | None, prompt_template: str | None,
          val_files: tuple[str, ...], soft_prompt: str | None = None, fidelity_gguf: str | None = None) -> None:
    """Train LoRA level N (or per-topic layers) with the Hugging Face Trainer and export each adapter to GGUF for
    the server. Runs data-parallel under `torchrun --nproc_per_node N -m strata build train ...` (or with --nproc N);
    only rank 0 writes. With --soft-prompt NAME it trains a soft prompt instead (on CPU in minutes on a small base)."""
    from strata.train import distributed

    if soft_prompt:
        out = train_soft_prompt_command(
            settings, soft_prompt, preset=preset, train_files=train_files, base_model=base_model,
            topics=[t.strip() for t in topics.split(",") if t.strip()] if topics else None,
            fidelity_gguf=fidelity_gguf, max_train_samples=max_train_samples, resume_from=resume_from,
            progress=not no_progress, overrides={"epochs": epochs, "max_steps": max_steps, "lr": lr,
                                                 "save_steps": save_steps},
            refused={"--per-topic": per_topic, "--peft dora": peft_kind != "lora", "--dry-run": dry_run,
                     "--quantization": quantization != "none", "--nproc": nproc > 1,
                     "--preferences": preferences, "--dataset-name": dataset_name, "--val-files": val_files,
                     "--prompt-template": prompt_template})
        click.echo(f"wrote {out}")
        return
    if fidelity_gguf:
        raise click.UsageError("--fidelity-gguf goes with --soft-prompt NAME here.")

    overrides = {"epochs": epochs, "max_steps": max_steps, "lr": lr, "save_steps": save_steps}
    common = {"peft": peft_kind, "quantization": quantization, "max_train_samples": max_train_samples,
              "dry_run": dry_run, "resume_from": resume_from, "base_model": base_model, "preset": preset,
              "progress": not no_progress, "overrides": overrides}
    if (prompt_template or val_files) and not (train_files or dataset_name):
        raise click.UsageError("--prompt-template and --val-files apply to user data: add --train-files or "
                               "--dataset-name")
    if preferences:
        from strata.train.preferences import train_preferences

        if per_topic or train_files or dataset_name or nproc > 1:
            raise click.UsageError("--preferences trains one layer from its own file, in one process: drop "
                                   "--per-topic, --train-files, --dataset-name and --nproc")
        written = [train_preferences(settings, level, preferences, **common)]
    else:
        from strata.train.trainer import train_level

        written = train_level(
            settings, level, per_topic=per_topic, nproc=nproc,
            topics=[t.strip() for t in topics.split(",") if t.strip()] if topics else None,
            data=user_sources(train_files, dataset_name, dataset_split, dataset_config, prompt_template),
            val_data=user_sources(val_files, None, "train", None, prompt_template), **common)
    if distributed.is_main():
        verb = "would write" if dry_run else "wrote"
        for path in written:
            click.echo(f"{verb} {path}")
    distributed.finish()


COMMANDS.append(train)


def _int_list(text: str | None) -> list[int] | None:
    """`1,2,3` -> [1, 2, 3]; a clear usage error otherwise."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected level numbers like 1,2,3, got {text!r}") from None


@click.command("merge")
@click.option("--levels", default=None, help="Comma-separated levels to merge in order, e.g. 1,2,3 (default: every trained level).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output dir (default: peft/merged).")
@workspace_option
@friendly_errors
@run_locked
def merge(settings: Settings, levels: str | None, out: str | None) -> None:
    """Merge trained levels into a fresh 16/32-bit base and write peft/merged/ (weights, tokenizer, chat template)."""
    from pathlib import Path

    from strata.export.merge import merge_levels

    merge_levels(settings, _int_list(levels), Path(out) if out else None, echo=click.echo)


@click.command("convert")
@click.option("--hf", "hf_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="HF model dir to convert (default: peft/merged).")
@click.option("--quant", default="Q4_K_M", show_default=True,
              help="Any llama.cpp type: Q4_K_M, Q5_K_M, Q6_K, Q8_0, F16, ...")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Quantized GGUF path (default: MODEL_PATH).")
@click.option("--preset", default="convert", show_default=True, help="Fidelity thresholds: preset name or .yaml path.")
@click.option("--embedding", "embedding_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Instead: convert this BERT-family sentence embedder (HF or sentence-transformers folder) to an F16 "
                   "GGUF for `strata build index` / `strata serve --embedding-model` (--out default: "
                   "models/<folder>-f16.gguf; --quant and --preset do not apply).")
@workspace_option
@friendly_errors
@run_locked
def convert(settings: Settings, hf_dir: str | None, quant: str, out: str | None, preset: str,
            embedding_dir: str | None) -> None:
    """HF dir -> F16 GGUF -> quantized GGUF at MODEL_PATH, promoted only if the fidelity checks pass; with
    --embedding, a sentence embedder -> F16 GGUF that llama.cpp has embedded a sentence with."""
    from pathlib import Path

    if embedding_dir:
        from strata.export.embedder_gguf import convert_embedder

        if hf_dir:
            raise click.UsageError("--embedding converts an embedder; --hf converts the chat model: pass one of them")
        folder = Path(embedding_dir)
        convert_embedder(folder, Path(out) if out else settings.models / f"{folder.resolve().name}-f16.gguf",
                         echo=click.echo)
        return
    from strata.export.convert import convert_model

    convert_model(settings, Path(hf_dir) if hf_dir else None, quant, Path(out) if out else None, preset=preset,
                  echo=click.echo)


@click.command("all")
@click.option("--per-topic/--no-per-topic", default=True, show_default=True,
              help="Also train one layer per topic on base + every level (the model convert serves).")
@click.option("--levels", default="1,2,3", show_default=True, help="Comma-separated levels to train and merge.")
@click.option("--quant", default="Q4_K_M", show_default=True, help="Quantization type for MODEL_PATH.")
@click.option("--force", is_flag=True, help="Run every stage even when its inputs are unchanged.")
@click.option("--gate/--no-gate", default=True, show_default=True,
              help="After convert, score base vs every topic layer on the held-out pairs (presets/gate.yaml).")
@teacher_options
@click.option("--dry-run", is_flag=True,
              help="Check the presets and the base, then print every stage: skip or run, its inputs and outputs, and "
                   "each adapter's records, blocks and steps. Runs and writes nothing.")
@user_data_options
@training_knobs
@workspace_option
@friendly_errors
def all_stages(settings: Settings, per_topic: bool, levels: str, quant: str, force: bool, gate: bool,
               generator: str | None, teacher_url: str | None, teacher_model: str | None, max_steps: int | None,
               epochs: float | None, lr: float | None, max_train_samples: int | None, no_progress: bool,
               nproc: int, dry_run: bool, train_files: tuple[str, ...], dataset_name: str | None,
               dataset_split: str, dataset_config: str | None, prompt_template: str | None,
               val_files: tuple[str, ...]) -> None:
    """pretest -> dataset -> synthesize -> levels -> topics -> merge -> convert -> gate -> archive, skipping
    unchanged stages; writes runs/<id>/manifest.json. With --train-files / --dataset-name every level trains on
    those rows (never overwritten by any stage)."""
    from strata.pipeline import run_all

    record = run_all(settings, per_topic=per_topic, levels=_int_list(levels) or [], quant=quant, force=force,
                     train_overrides={"max_steps": max_steps, "epochs": epochs, "lr": lr,
                                      "max_train_samples": max_train_samples,
                                      "data": user_sources(train_files, dataset_name, dataset_split, dataset_config,
                                                           prompt_template),
                                      "val_data": user_sources(val_files, None, "train", None, prompt_template)},
                     synthesis={"generator": generator, **teacher_of(teacher_url, teacher_model)}, gate=gate,
                     progress=not no_progress, nproc=nproc, dry_run=dry_run, echo=click.echo)
    if dry_run:
        click.echo(f"dry run: {sum(s['action'] == 'run' for s in record['stages'])} of {len(record['stages'])} "
                   "stages would run; nothing was run or written")
        return
    click.echo(f"run {record['run_id']}: " + ", ".join(f"{s['name']} {s['status']}" for s in record["stages"]))
    click.echo(f"manifest: {record['manifest']}")


COMMANDS.extend([merge, convert, all_stages])
