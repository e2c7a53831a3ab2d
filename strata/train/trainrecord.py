"""What a trained adapter dir holds: PEFT files, adapter.gguf, loss log + plot, and training_summary.json."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata.export.adapter_gguf import DORA_MESSAGE, FINGERPRINT_KEY, export_adapter_gguf
from strata.files import atomic_write_jsonl, now_iso, sha256_file
from strata.modelfolder import SUMMARY, fingerprint
from strata.settings import DEFAULT_TOPIC
from strata.train import batches, layers
from strata.train.lossplot import plot_loss

if TYPE_CHECKING:
    from strata.train.trainer import Run

GGUF = "adapter.gguf"


def write_adapter_dir(job: Any, peft_model: Any, ctx: Run, run: dict[str, Any]) -> Path:
    """Build every output in a staging dir, then move each into `job.out`; the summary goes last, so a dir
    whose summary matches its weights is always complete (that is what `levels_below` checks)."""
    out: Path = job.out
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        peft_model.save_pretrained(stage)
        base_fp = fingerprint(ctx.base_dir)
        plot_loss(atomic_write_jsonl(stage / "loss.jsonl", run["log"]), stage / "loss.png", title=f"{job.name} loss")
        if ctx.peft == "dora":
            gguf_note = DORA_MESSAGE
            print(f"{job.name}: {DORA_MESSAGE}.")
            (out / GGUF).unlink(missing_ok=True)  # an older LoRA export would not match these weights
        else:
            # the log goes beside the adapter dir's files: it must outlive the staging dir, removed on failure
            export_adapter_gguf(stage, ctx.base_dir, stage / GGUF, base_fp, log=out / f"{GGUF}.log")
            gguf_note = None
        summary = _summary(job, ctx, run, base_fp, stage, gguf_note)
        (stage / SUMMARY).write_text(json.dumps(summary, indent=2))
        names = sorted(p.name for p in stage.iterdir() if p.name != SUMMARY) + [SUMMARY]
        (out / SUMMARY).unlink(missing_ok=True)  # the dir is incomplete until the new summary lands
        for name in names:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _summary(job: Any, ctx: Run, run: dict[str, Any], base_fp: str, stage: Path,
             gguf_note: str | None) -> dict[str, Any]:
    level, below = ctx.level, ctx.below
    losses = [r["loss"] for r in run["log"] if "loss" in r]
    tail = losses[-max(1, len(losses) // 10):]
    stack = [str(d / GGUF) for d in below]
    return {
        "name": job.name,
        "method": run.get("method", "sft"),  # sft (the Trainer on blocks) or dpo (TRL's DPOTrainer on preference pairs)
        "level": level,
        "topic": job.topic,
        "peft": ctx.peft,
        "quantization": ctx.quantization,
        "preset": ctx.preset or f"levels/level{level}",
        "hyperparameters": asdict(ctx.cfg),
        "target_modules": ctx.targets,  # the modules actually wrapped (roles resolved) and their parameter count
        "dataset": {
            **ctx.data,  # the files (or user sources) trained and judged on, with their hashes
            "records": len(job.records), "val_records": len(job.val_records),
            "text_records": sum(map(batches.is_plain_text, job.records)),  # plain text rows among them
            "topics": sorted({r.get("topic") or DEFAULT_TOPIC for r in job.records}),
            "blocks": run["blocks"], "val_blocks": run["val_blocks"], "tokens": run["tokens"],
        },
        "base_model": str(ctx.base_dir),
        "base_fingerprint": base_fp,
        "levels_below": layers.describe_levels(below),
        "adapter_sha256": sha256_file(stage / "adapter_model.safetensors"),
        "metrics": {
            "steps": run["total_steps"],
            "resumed_from_step": run["resumed_from_step"],
            "train_loss_first": losses[0] if losses else None,
            "train_loss": sum(tail) / len(tail) if tail else None,
            "eval_loss_before": run.get("eval_loss_before"),
            "eval_loss_after": run.get("eval_loss_after"),
            "tokens_per_s": run["tokens_seen"] / run["train_seconds"] if run["train_seconds"] else None,
            "tokens_seen": run["tokens_seen"],
            "duration_s": run["train_seconds"],
            "peak_memory_mb": round(run["peak_memory_mb"], 1),
            "peak_memory_measure": run["peak_memory_measure"],
            **{f"{key}_last": rows[-1][key] for key in ("reward_margin", "reward_accuracy")
               if (rows := [r for r in run["log"] if key in r])},  # DPO: chosen-vs-rejected reward at the end
        },
        "training_arguments": run["training_arguments"],
        "gguf": {
            "path": None if gguf_note else GGUF,
            "note": gguf_note,
            "metadata": None if gguf_note else {FINGERPRINT_KEY: base_fp},
            "converted_against": str(ctx.base_dir),
            "serve": ("apply this adapter at scale 1.0 on top of the base GGUF together with the levels below it, "
                      "in order, or alone on a GGUF of the base with those levels merged "
                      "(`strata build merge --levels 1..N-1` then `strata build convert`)") if below else
                     "apply this adapter on the base GGUF (convert of the base model above)",
            "stack": stack + ([str(job.out / GGUF)] if not gguf_note else []),
        },
        "device": ctx.device,
        "world_size": ctx.world_size,
        "dtype": str(ctx.dtype).removeprefix("torch."),
        "versions": {name: _version(name) for name in ("torch", "transformers", "peft", "accelerate", "llama-cpp-python",
                                                       "strata")},
        "finished_at": now_iso(),
        "started_at": run.get("started_at"),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
