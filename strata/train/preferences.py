"""Preference layers: level N trained with TRL's DPOTrainer on {prompt, chosen, rejected} rows, written like any layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import numbered_jsonl, sha256_file
from strata.modelfolder import pick_device, resolve_base_model
from strata.settings import Settings
from strata.train import layers
from strata.train.preflight import check_base
from strata.train.trainconfig import load_train_preset
from strata.train.trainer import Job, Run, _load_model, cpu_threads, dry_run_checks, fit, training_tokenizer

PRESET = "preferences"  # presets/preferences.yaml: the LoRA shape, rate and `dpo:` block of a preference layer
KEYS = ("prompt", "chosen", "rejected")


def read_preferences(path: Path) -> list[dict[str, Any]]:
    """Rows {prompt, chosen, rejected} (strings; other keys such as topic are kept for the summary, not trained on).
    A row without them is a one-line error naming the file, line and the keys it has."""
    rows = []
    hint = "each row is a JSON object {\"prompt\", \"chosen\", \"rejected\"} (strings)"
    for number, row in numbered_jsonl(path, hint):
        where = f"{path}:{number}"
        missing = [k for k in KEYS if k not in row]
        if missing:
            raise StrataError(f"{where}: a preference row needs `prompt`, `chosen` and `rejected`; missing "
                              f"{missing}, found keys {sorted(row)}")
        bad = [k for k in KEYS if not isinstance(row[k], str) or not row[k].strip()]
        if bad:
            raise StrataError(f"{where}: {', '.join(f'`{k}`' for k in bad)} must be non-empty strings")
        if row["chosen"] == row["rejected"]:
            raise StrataError(f"{where}: `chosen` and `rejected` are the same text, so there is no preference to "
                              "learn; drop the row (a tie) or fix it")
        rows.append({"id": where, **row})
    if not rows:
        raise StrataError(f"{path} holds no preference rows; {hint}")
    return rows


def as_example(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A DPOTrainer example: plain strings for a `format: text` preset (TRL appends EOS), or one user turn and one
    assistant turn each for `format: chat`, which TRL renders with the base's chat template as the server does."""
    if fmt == "text":
        return {k: row[k] for k in KEYS}
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def train_preferences(settings: Settings, level: int, preferences: str | Path, *, peft: str = "lora",
                      quantization: str = "none", max_train_samples: int | None = None, dry_run: bool = False,
                      resume_from: str | None = None, base_model: str | None = None, preset: str | None = None,
                      progress: bool = True, overrides: dict[str, Any] | None = None) -> Path:
    """Train peft/level<N>/ with DPO on the base with levels 1..N-1 merged in (checked first); the reference model
    is that same stack (the new adapter disabled). Uses presets/preferences.yaml (or `preset`) updated by
    `overrides`; its `dpo:` block goes to trl.DPOConfig. Writes the PEFT files, adapter.gguf, loss.jsonl/png and
    training_summary.json like every layer; returns the dir (written, or that would be with `dry_run`)."""
    from strata.train.targets import describe, wrap_lora
    from strata.train.trainargs import planned_steps

    if peft not in ("lora", "dora"):
        raise StrataError(f"--peft must be lora or dora, got {peft!r}")
    path = Path(preferences)
    cfg = load_train_preset(level, preset or PRESET, **(overrides or {}))
    rows = read_preferences(path)[: max_train_samples or None]
    device, dtype = pick_device(quantization)
    base_dir = resolve_base_model(settings, base_model)
    below = layers.levels_below(settings, level, base_dir)
    check_base(settings, base_dir, {f"level {level}": cfg.format})
    tokenizer = training_tokenizer(base_dir)
    job = Job(f"level{level}", layers.level_dir(settings, level), rows, [], None)
    data = {"train": str(path), "train_sha256": sha256_file(path), "val": None, "val_sha256": None,
            "kind": "preferences (prompt, chosen, rejected)"}
    ctx = Run(settings, level, base_dir, below, cfg, peft, quantization, device, dtype, preset or PRESET,
              world_size=1, data=data)
    steps = planned_steps(len(rows), cfg)
    identity = {"total_steps": steps, "dataset_sha256": data["train_sha256"], "blocks": len(rows),
                "global_batch": cfg.batch_size * cfg.grad_accum}
    extra = {"max_length": cfg.max_seq_len, **cfg.dpo}
    with cpu_threads(settings.n_threads if device == "cpu" else None):
        import torch
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        model = _load_model(settings, base_dir, below, device, dtype, quantization, cfg)
        torch.manual_seed(cfg.seed)
        peft_model, ctx.targets = wrap_lora(model, cfg, use_dora=peft == "dora")
        trainable, total = peft_model.get_nb_trainable_parameters()
        print(f"{job.name}: DPO on {len(rows)} preference pairs from {path}; {steps} steps x {identity['global_batch']} "
              f"pairs; beta {extra.get('beta', DPOConfig.beta)}; trainable {trainable:,} of {total:,} params ({peft}, "
              f"r={cfg.r}, {describe(ctx.targets)}); on {device}; base + levels {[p.name for p in below]}; -> "
              f"{job.out}" + (" [dry run: nothing trained or written]" if dry_run else ""), flush=True)

        def dpo_trainer(args: Any, callbacks: list) -> Any:
            return DPOTrainer(model=peft_model, ref_model=None, args=args, processing_class=tokenizer,
                              train_dataset=Dataset.from_list([as_example(r, cfg.format) for r in rows]),
                              callbacks=callbacks)

        if dry_run:
            def first_batch(args: Any) -> tuple[dict[str, Any], Any]:
                trainer = dpo_trainer(args, [])
                batch = next(iter(trainer.get_train_dataloader()))
                return batch, trainer.compute_loss(trainer.model, batch)

            dry_run_checks(job, identity, resume_from, ctx, first_batch, has_eval=False, args_class=DPOConfig,
                           extra=extra)
            return job.out
        run = fit(job, dpo_trainer, identity, ctx, resume_from=resume_from, progress=progress, has_eval=False,
                  args_class=DPOConfig, extra=extra)
        if "ref" in peft_model.peft_config:  # TRL's frozen copy of the fresh adapter, the reference: not ours to ship
            peft_model.delete_adapter("ref")
        from strata.train.trainrecord import write_adapter_dir

        tokens = sum(len(tokenizer(r["prompt"] + r["chosen"])["input_ids"]) +
                     len(tokenizer(r["prompt"] + r["rejected"])["input_ids"]) for r in rows)
        write_adapter_dir(job, peft_model, ctx, run | {"tokens": tokens, "blocks": len(rows), "val_blocks": 0,
                                                       "method": "dpo"})
    return job.out
