"""The one training loop: level N (or per-topic layers) as LoRA/DoRA on the base with levels 1..N-1 merged in."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from strata.build import batches, checkpoints, layers
from strata.build.basemodel import resolve_base_model
from strata.build.preflight import check_base
from strata.build.trainconfig import TrainPreset, load_train_preset
from strata.errors import StrataError
from strata.files import read_jsonl, sha256_file
from strata.settings import Settings


@dataclass
class Job:
    """One adapter to train: where it goes, its data, and what it sits on."""

    name: str
    out: Path
    records: list[dict[str, Any]]
    val_records: list[dict[str, Any]]
    topic: str | None


def train_level(settings: Settings, level: int, *, per_topic: bool = False, topics: list[str] | None = None,
                peft: str = "lora", quantization: str = "none", max_train_samples: int | None = None,
                dry_run: bool = False, resume_from: str | None = None, base_model: str | None = None,
                preset: str | None = None, progress: bool = True,
                overrides: dict[str, Any] | None = None) -> list[Path]:
    """Train level `level` into peft/level<N>/, or with `per_topic` one adapter per dataset topic into
    peft/<topic>/. Either way the adapter trains on the base with levels 1..N-1 merged in (checked first), using
    the level's preset (or `preset`) updated by `overrides` (e.g. {"epochs": 1, "max_steps": 20}).
    Returns the adapter dirs written (or that would be written with `dry_run`, which writes nothing)."""
    if peft not in ("lora", "dora"):
        raise StrataError(f"--peft must be lora or dora, got {peft!r}")
    cfg = load_train_preset(level, preset, **(overrides or {}))
    if topics:
        cfg = replace(cfg, topics=list(topics))
    device, dtype = pick_device(quantization)
    base_dir = resolve_base_model(settings, base_model)
    below = layers.levels_below(settings, level, base_dir)
    records = batches.load_records(settings.train_jsonl, cfg.topics, max_train_samples)
    # held-out text is optional: a small dataset may hold none (or none for these topics); then eval is skipped
    val = [r for r in read_jsonl(settings.val_jsonl, "rebuild it with `strata build dataset`")
           if cfg.topics is None or r.get("topic") in cfg.topics] if settings.val_jsonl.is_file() else []
    jobs = _jobs(settings, level, per_topic, records, val)
    check_base(settings, base_dir, {f"level {level}": cfg.format})
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    context = {"settings": settings, "level": level, "base_dir": base_dir, "below": below, "cfg": cfg,
               "peft": peft, "quantization": quantization, "device": device, "dtype": dtype, "preset": preset}
    with cpu_threads(settings.n_threads if device == "cpu" else None):
        model = _load_model(settings, base_dir, below, device, dtype, quantization, cfg)
        for job in jobs:
            model = _train_one(job, model, tokenizer, context, dry_run=dry_run, progress=progress,
                               resume_from=_resume_for(job, resume_from, per_topic))
    return [job.out for job in jobs]


def _resume_for(job: Job, resume_from: str | None, per_topic: bool) -> str | None:
    """With --per-topic, a checkpoint path resumes only the topic whose dir holds it; `auto` applies to each."""
    if not per_topic or resume_from in (None, "auto"):
        return resume_from
    return resume_from if Path(resume_from).resolve().is_relative_to(job.out.resolve()) else None


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run torch on `n` CPU threads (N_THREADS) for the duration, then restore; None leaves it alone.
    Oversubscribed torch threads spin: on a busy 2-core host one thread trained a tiny model 10x faster."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(quantization: str) -> tuple[str, Any]:
    """CUDA with bf16 when present, else CPU fp32; 8/4-bit loading needs CUDA and bitsandbytes."""
    import torch

    cuda = torch.cuda.is_available()
    if quantization not in ("none", "int8", "int4"):
        raise StrataError(f"--quantization must be none, int8 or int4, got {quantization!r}")
    if quantization != "none":
        if not cuda:
            raise StrataError(f"--quantization {quantization} (QLoRA through bitsandbytes) needs a CUDA GPU and this "
                              "machine has none; train with --quantization none on CPU.")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise StrataError(f"--quantization {quantization} needs bitsandbytes: pip install bitsandbytes "
                              "(the CUDA image has it).") from None
    if cuda:
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


def _jobs(settings: Settings, level: int, per_topic: bool, records: list[dict], val: list[dict]) -> list[Job]:
    if not per_topic:
        return [Job(f"level{level}", layers.level_dir(settings, level), records, val, None)]
    jobs = []
    for topic in batches.topics_of(records):
        if topic.startswith(".") or "/" in topic or topic == "merged" or topic.startswith("level"):
            raise StrataError(f"topic {topic!r} cannot name an adapter dir under {settings.peft}; rename its folder.")
        mine = [r for r in records if (r.get("topic") or "general") == topic]
        mine_val = [r for r in val if r.get("topic") == topic] or val  # no held-out text for it: judge on all
        jobs.append(Job(topic, settings.peft / topic, mine, mine_val, topic))
    return jobs


def _load_model(settings: Settings, base_dir: Path, below: list[Path], device: str, dtype: Any,
                quantization: str, cfg: TrainPreset) -> Any:
    """The base (levels below merged in) on `device`; 8/4-bit via bitsandbytes from a saved merged copy."""
    if quantization == "none":
        model = layers.load_base_with_levels(base_dir, below, dtype).to(device)
        if device == "cuda" and cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        return model
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    source = layers.merged_base_dir(settings, base_dir, below, dtype) if below else base_dir
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype) if quantization == "int4"
             else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, dtype=dtype,
                                                 device_map={"": torch.cuda.current_device()})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


def _train_one(job: Job, model: Any, tokenizer: Any, ctx: dict[str, Any], *, dry_run: bool,
               resume_from: str | None, progress: bool) -> Any:
    """Wrap `model` with a fresh adapter, train it on `job`, write the adapter dir; return the bare model again."""
    from strata.build.targets import describe, wrap_lora

    cfg: TrainPreset = ctx["cfg"]
    blocks = batches.build_blocks(job.records, tokenizer, cfg.format, cfg.max_seq_len)
    val_blocks = batches.build_blocks(job.val_records, tokenizer, cfg.format, cfg.max_seq_len)[
        : cfg.eval_batches * cfg.batch_size] if job.val_records else []
    plan = batches.step_plan(len(blocks), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.seed, cfg.max_steps)
    import torch

    torch.manual_seed(cfg.seed)
    peft_model, ctx["targets"] = wrap_lora(model, cfg, use_dora=ctx["peft"] == "dora")
    trainable, total = peft_model.get_nb_trainable_parameters()
    tokens = sum(len(b.input_ids) for b in blocks)
    print(f"{job.name}: {len(job.records)} records -> {len(blocks)} blocks, {tokens} tokens; {len(plan)} steps "
          f"x {cfg.batch_size}x{cfg.grad_accum} blocks; trainable {trainable:,} of {total:,} params "
          f"({ctx['peft']}, r={cfg.r}, {describe(ctx['targets'])}); on {ctx['device']}; "
          f"base + levels {[p.name for p in ctx['below']]}; -> {job.out}" + (" [dry run: nothing trained or written]"
                                                                             if dry_run else ""))
    if dry_run:
        return peft_model.unload()
    run = _loop(job, peft_model, blocks, val_blocks, plan, tokenizer, ctx, resume_from, progress, tokens)
    from strata.build.trainrecord import write_adapter_dir

    write_adapter_dir(job, peft_model, ctx, run)
    return peft_model.unload()


def _loop(job: Job, model: Any, blocks: list, val_blocks: list, plan: list, tokenizer: Any, ctx: dict[str, Any],
          resume_from: str | None, progress: bool, tokens: int) -> dict[str, Any]:
    """Train over `plan` (steps -> micro-batches -> block ids), checkpointing every save_steps; return the metrics."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    cfg: TrainPreset = ctx["cfg"]
    device, pad_id = ctx["device"], tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # floor, not ceil: a run shorter than 1/warmup_ratio steps gets no warmup instead of a wasted lr=0 first step
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * len(plan)), len(plan))
    identity = {"total_steps": len(plan), "dataset_sha256": sha256_file(ctx["settings"].train_jsonl),
                "blocks": len(blocks)}
    checkpoint = checkpoints.resolve_resume(job.out, resume_from)
    state: dict[str, Any] = {"log": [], "tokens_seen": 0, "train_seconds": 0.0}
    if checkpoint is not None:
        state = checkpoints.load_checkpoint(checkpoint, model, optimizer, scheduler, identity)
        print(f"{job.name}: resuming from {checkpoint} at step {state['step']} of {len(plan)}")
    else:
        shutil.rmtree(checkpoints.checkpoints_dir(job.out), ignore_errors=True)  # a fresh run owns the dir
        state["started_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        state["eval_loss_before"] = evaluate(model, val_blocks, cfg.batch_size, pad_id, device)
    start = state.get("step", 0)
    bar = tqdm(total=len(plan), initial=start, desc=f"training {job.name}", disable=not progress, unit="step")
    model.train()
    for step in range(start + 1, len(plan) + 1):
        began = time.perf_counter()
        micro = plan[step - 1]
        weights = [_targets(blocks, ids) for ids in micro]
        loss_sum, seen = 0.0, 0
        for ids, weight in zip(micro, weights):
            batch = {k: v.to(device) for k, v in batches.collate([blocks[i] for i in ids], pad_id).items()}
            loss = model(**batch).loss * (weight / max(1, sum(weights)))
            loss.backward()
            loss_sum += loss.item()
            seen += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["tokens_seen"] += seen
        state["train_seconds"] += time.perf_counter() - began
        state["log"].append({"step": step, "loss": round(loss_sum, 6), "lr": scheduler.get_last_lr()[0], "tokens": seen})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.4f}")
        if step % cfg.save_steps == 0:
            checkpoints.save_checkpoint(job.out, step, model, optimizer, scheduler, {**state, **identity})
    bar.close()
    state["eval_loss_after"] = evaluate(model, val_blocks, cfg.batch_size, pad_id, device)
    state.update(identity, resumed_from_step=start if checkpoint is not None else None, tokens=tokens,
                 blocks=len(blocks), val_blocks=len(val_blocks))
    return state


def _targets(blocks: list, ids: Any) -> int:
    """How many tokens the loss covers (the first token of a block is never predicted)."""
    return sum(1 for i in ids for label in blocks[i].labels[1:] if label != batches.IGNORE)


def evaluate(model: Any, blocks: list, batch_size: int, pad_id: int, device: str) -> float | None:
    """Token-weighted mean loss over `blocks` (None when there is no validation data)."""
    import torch

    if not blocks:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            chunk = blocks[i:i + batch_size]
            n = _targets(chunk, range(len(chunk)))
            batch = {k: v.to(device) for k, v in batches.collate(chunk, pad_id).items()}
            total += model(**batch).loss.item() * n
            count += n
    model.train()
    return total / max(1, count)
