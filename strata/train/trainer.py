"""Level N (or per-topic layers) as LoRA/DoRA on the base with levels 1..N-1 merged in, trained by the HF Trainer.

Why the plain `transformers.Trainer` and not TRL's `SFTTrainer`: strata builds its own training blocks
(`batches.py`: EOS-joined text streams cut to `max_seq_len`; chat examples packed whole with the loss on the final
assistant turn only) and the layering rule depends on exactly those blocks. What SFTTrainer adds on top of the
Trainer is that packing and completion-only loss, done differently (it needs `{% generation %}` markers in the chat
template and packs across example boundaries). The Trainer alone gives everything else: AdamW, the cosine schedule,
accumulation, clipping, bf16, gradient checkpointing, checkpoints and resume, evaluation, TensorBoard, and DDP under
torchrun / accelerate launch. `fit` runs any Trainer subclass the same way: preference layers hand it TRL's
DPOTrainer (strata/train/preferences.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from strata.errors import StrataError
from strata.files import now_iso, read_jsonl, sha256_file
from strata.modelfolder import attention_kwargs, pick_device, resolve_base_model
from strata.settings import DEFAULT_TOPIC, Settings
from strata.train import batches, distributed, layers, resume
from strata.train.preflight import check_base
from strata.train.trainconfig import TrainPreset, load_train_preset

TENSORBOARD = "tensorboard"  # event files, beside loss.jsonl / loss.png in the adapter dir


@dataclass
class Job:
    """One adapter to train: where it goes, its data, and what it sits on."""

    name: str
    out: Path
    records: list[dict[str, Any]]
    val_records: list[dict[str, Any]]
    topic: str | None


@dataclass
class Run:
    """What every adapter of one train_level call shares: the workspace, the level and the stack it trains on, the
    preset, the data, and where and how it runs. `targets` is the current adapter's wrapped modules (set as each is wrapped)."""

    settings: Settings
    level: int
    base_dir: Path
    below: list[Path]
    cfg: TrainPreset
    peft: str
    quantization: str
    device: str
    dtype: Any
    preset: str | None
    world_size: int
    data: dict[str, Any] = field(default_factory=dict)  # the files (or user sources) trained and judged on, hashed
    targets: dict[str, Any] = field(default_factory=dict)


def train_level(settings: Settings, level: int, *, per_topic: bool = False, topics: list[str] | None = None,
                peft: str = "lora", quantization: str = "none", max_train_samples: int | None = None,
                dry_run: bool = False, resume_from: str | None = None, base_model: str | None = None,
                preset: str | None = None, progress: bool = True, overrides: dict[str, Any] | None = None,
                nproc: int = 1, only_topics: list[str] | None = None, check: bool = True,
                data: list[dict[str, Any]] | None = None, val_data: list[dict[str, Any]] | None = None) -> list[Path]:
    """Train level `level` into peft/level<N>/, or with `per_topic` one adapter per dataset topic into
    peft/<topic>/. Either way the adapter trains on the base with levels 1..N-1 merged in (checked first), using
    the level's preset (or `preset`) updated by `overrides` (e.g. {"epochs": 1, "max_steps": 20}).
    `nproc` > 1 uses that many devices: a level trains data-parallel under torchrun, per-topic layers train
    `nproc` at a time (see launch.py); `only_topics` limits per-topic training to those layers (a worker's share).
    `check`: run the base pre-flight (False where it already ran: train_all's preflight, --nproc workers; under a
    launcher only rank 0 runs it).
    `data` / `val_data`: user sources (strata.userdata.Source fields, e.g. [{"files": "data/*.jsonl"}]; relative
    globs from the current dir) to train / judge on instead of the workspace dataset; the preset's `datasets:`
    (relative to the workspace) is the default for `data`.
    Returns the adapter dirs written (or that would be written with `dry_run`, which writes nothing)."""
    if peft not in ("lora", "dora"):
        raise StrataError(f"--peft must be lora or dora, got {peft!r}")
    cfg = _preset(level, preset, overrides, topics)
    device, dtype = pick_device(quantization)
    base_dir = resolve_base_model(settings, base_model)
    below = layers.levels_below(settings, level, base_dir)
    records, val, files = training_data(settings, cfg, data, val_data)
    jobs = _jobs(settings, level, per_topic, records, val, max_train_samples)
    if check and distributed.is_main():
        check_base(settings, base_dir, {f"level {level}": cfg.format})
    if only_topics is not None:
        jobs = [job for job in jobs if job.topic in only_topics]
    if nproc > 1 and not dry_run:
        from strata.train import launch

        args = {"per_topic": per_topic, "topics": topics, "peft": peft, "quantization": quantization,
                "max_train_samples": max_train_samples, "resume_from": resume_from, "base_model": base_model,
                "preset": preset, "progress": progress, "overrides": overrides, "check": False, "data": data,
                "val_data": val_data}
        launch.run(settings, level, nproc, device, [job.topic for job in jobs] if per_topic else None, args)
        return [job.out for job in jobs]
    state = distributed.state(device)  # before any model: sets up the process group under a launcher
    tokenizer = training_tokenizer(base_dir)
    context = Run(settings, level, base_dir, below, cfg, peft, quantization, device, dtype, preset,
                  world_size=nproc if dry_run and not per_topic else state.num_processes,  # a dry run plans --nproc
                  data=files)
    threads = max(1, settings.n_threads // distributed.local_world_size()) if device == "cpu" else None
    with cpu_threads(threads):
        model = _load_model(settings, base_dir, below, device, dtype, quantization, cfg)
        model.config.use_cache = False  # no KV cache in training; transformers reads packed position ids only without
        for job in jobs:
            model = _train_one(job, model, tokenizer, context, dry_run=dry_run, progress=progress,
                               resume_from=_resume_for(job, resume_from, per_topic))
    return [job.out for job in jobs]


def _preset(level: int, preset: str | None, overrides: dict[str, Any] | None, topics: list[str] | None) -> TrainPreset:
    cfg = load_train_preset(level, preset, **(overrides or {}))
    return replace(cfg, topics=list(topics)) if topics else cfg


def training_tokenizer(base_dir: Path) -> Any:
    """The base's tokenizer as training uses it: right padding (real tokens first, positions 0..n-1), a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def plan_level(settings: Settings, level: int, *, per_topic: bool = False, topics: list[str] | None = None,
               max_train_samples: int | None = None, base_model: str | None = None, preset: str | None = None,
               overrides: dict[str, Any] | None = None, nproc: int = 1, data: list[dict[str, Any]] | None = None,
               val_data: list[dict[str, Any]] | None = None, **_: Any) -> list[dict[str, Any]]:
    """What `train_level` would train, from the tokenizer alone (no model, no levels below needed): each adapter's
    dir, records, blocks, tokens and optimiser steps. `build all --dry-run` shows it for every training stage."""
    cfg = _preset(level, preset, overrides, topics)
    base_dir = resolve_base_model(settings, base_model)
    records, val, _files = training_data(settings, cfg, data, val_data)
    tokenizer = training_tokenizer(base_dir)
    plans = []
    for job in _jobs(settings, level, per_topic, records, val, max_train_samples):
        blocks, val_blocks, steps = job_blocks(job, tokenizer, cfg, 1 if per_topic else nproc)
        plans.append({"name": job.name, "out": str(job.out), "records": len(job.records), "blocks": len(blocks),
                      "tokens": sum(len(b.input_ids) for b in blocks), "val_blocks": len(val_blocks), "steps": steps})
    return plans


def job_blocks(job: Job, tokenizer: Any, cfg: TrainPreset, world_size: int) -> tuple[list, list, int]:
    """(training blocks, held-out blocks, optimiser steps) of one adapter run."""
    from strata.train.trainargs import planned_steps

    blocks = batches.build_blocks(job.records, tokenizer, cfg.format, cfg.max_seq_len)
    # eval_batches of the global batch: the same held-out blocks however many processes share them
    val_blocks = batches.build_blocks(job.val_records, tokenizer, cfg.format, cfg.max_seq_len)[
        : cfg.eval_batches * cfg.batch_size * world_size] if job.val_records else []
    return blocks, val_blocks, planned_steps(len(blocks), cfg, world_size, sum(len(b.input_ids) for b in blocks))


def training_data(settings: Settings, cfg: TrainPreset, data: list[dict[str, Any]] | None = None,
                  val_data: list[dict[str, Any]] | None = None) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(train records, held-out records, what the summary records about them): user sources (`data`, else the
    preset's `datasets:`) or the workspace dataset, kept to the preset's topics."""
    from strata import userdata

    sources = [userdata.source_from(e, "--train-files / --dataset-name") for e in data] if data else None
    root = None if data else settings.workspace
    if sources is None and cfg.datasets:
        sources = [userdata.source_from(e, "preset datasets:") for e in cfg.datasets]
    if sources is None:
        records, val = _workspace_records(settings, cfg)
        pairs = settings.pairs_train_jsonl
        return records, val, {
            "pairs_train": str(pairs) if pairs.is_file() else None,
            "pairs_train_sha256": sha256_file(pairs) if pairs.is_file() else None,
            "train": str(settings.train_jsonl), "train_sha256": sha256_file(settings.train_jsonl),
            "val": str(settings.val_jsonl),
            "val_sha256": sha256_file(settings.val_jsonl) if settings.val_jsonl.is_file() else None}
    train = userdata.load_user_data(sources, root)
    held = userdata.load_user_data([userdata.source_from(e, "--val-files") for e in val_data]) if val_data else None
    records = _keep(train.records, cfg.topics, "the training data")
    if cfg.format == "chat" and (plain := next((r for r in records if "messages" not in r), None)):
        raise StrataError(f"{plain['id']}: a `format: chat` level trains on `messages` or `prompt` + `response` rows, "
                          "and this row has only `text`; train text rows on a `format: text` level (e.g. --level 1)")
    val = _keep(held.records, cfg.topics, None) if held else []
    return records, val, {
        "train": train.sources, "train_sha256": train.sha256, "train_files": userdata.file_hashes(train.files),
        "val": held.sources if held else None, "val_sha256": held.sha256 if held else None}


def _keep(records: list[dict], topics: list[str] | None, what: str | None) -> list[dict]:
    """`records` of `topics` (None: all); none left is an error for training data, fine for held-out rows."""
    kept = records if topics is None else [r for r in records if r.get("topic") in topics]
    if what and not kept:
        raise StrataError(f"{what} has no rows for topics {sorted(topics or [])}: label rows with a `topic` key "
                          "(or a source's `topic:`), or drop the preset's topics / --topics filter.")
    return kept


def _workspace_records(settings: Settings, cfg: TrainPreset) -> tuple[list[dict], list[dict]]:
    """(train, held-out) records. With synthesized pairs: chat levels train on them (varied phrasings, a share of
    general pairs) and text levels on every chunk (+ paraphrases), both judged on the held-out pairs. Without
    pairs: the dataset's train.jsonl / val.jsonl as they are."""
    from strata.train import pairs

    if pairs.has_pairs(settings):
        if cfg.format == "chat":
            return pairs.chat_data(settings, cfg.topics, cfg.phrasings, cfg.general_share, cfg.with_chunks,
                                   cfg.permutations)
        return pairs.text_data(settings, cfg.topics)
    records = batches.load_records(settings.train_jsonl, cfg.topics)
    # held-out text is optional: a small dataset may hold none (or none for these topics); then eval is skipped
    val = [r for r in read_jsonl(settings.val_jsonl, "rebuild it with `strata build dataset`")
           if cfg.topics is None or r.get("topic") in cfg.topics] if settings.val_jsonl.is_file() else []
    return records, val


def _resume_for(job: Job, resume_from: str | None, per_topic: bool) -> str | None:
    """With --per-topic, a checkpoint path resumes only the topic whose dir holds it; `auto` applies to each."""
    if not per_topic or resume_from in (None, "auto"):
        return resume_from
    return resume_from if Path(resume_from).resolve().is_relative_to(job.out.resolve()) else None


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run torch on `n` CPU threads (N_THREADS, split between the ranks of a launched run) for the duration,
    then restore; None leaves it alone. Oversubscribed torch threads spin: on a busy 2-core host one thread
    trained a tiny model 10x faster."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _jobs(settings: Settings, level: int, per_topic: bool, records: list[dict], val: list[dict],
          max_samples: int | None = None) -> list[Job]:
    """One job per adapter; `max_samples` caps each adapter's records (each topic's, after the split by topic)."""
    cap = slice(max_samples)
    if not per_topic:
        return [Job(f"level{level}", layers.level_dir(settings, level), records[cap], val, None)]
    from strata.train.pairs import GENERAL_TOPIC

    # the general mix (pairs.general_records) is shared out: each topic gets its share of it, none is a topic
    shared = [r for r in records if r.get("topic") == GENERAL_TOPIC and str(r.get("id", "")).startswith("general-")]
    own = [r for r in records if not (r.get("topic") == GENERAL_TOPIC and str(r.get("id", "")).startswith("general-"))]
    jobs = []
    for topic in batches.topics_of(own):
        if topic.startswith(".") or "/" in topic or topic == "merged" or topic.startswith("level"):
            raise StrataError(f"topic {topic!r} cannot name an adapter dir under {settings.peft}; rename its folder.")
        mine = [r for r in own if (r.get("topic") or DEFAULT_TOPIC) == topic][cap]
        mine += shared[:round(len(shared) * len(mine) / max(1, len(own)))]
        mine_val = [r for r in val if r.get("topic") == topic] or val  # no held-out text for it: judge on all
        jobs.append(Job(topic, settings.peft / topic, mine, mine_val, topic))
    return jobs


def _load_model(settings: Settings, base_dir: Path, below: list[Path], device: str, dtype: Any,
                quantization: str, cfg: TrainPreset) -> Any:
    """The base (levels below merged in); the Trainer moves it to this rank's device. 8/4-bit via bitsandbytes
    from a merged copy saved once (by rank 0) under peft/.bases/."""
    if quantization == "none":
        return layers.load_base_with_levels(base_dir, below, dtype, **attention_kwargs(device, dtype))
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if below and distributed.is_main():
        layers.merged_base_dir(settings, base_dir, below, dtype)
    distributed.barrier()
    source = layers.merged_base_dir(settings, base_dir, below, dtype) if below else base_dir
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype) if quantization == "int4"
             else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, dtype=dtype,
                                                 device_map={"": distributed.state(device).local_process_index},
                                                 **attention_kwargs(device, dtype))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def _train_one(job: Job, model: Any, tokenizer: Any, ctx: Run, *, dry_run: bool,
               resume_from: str | None, progress: bool) -> Any:
    """Wrap `model` with a fresh adapter, train it on `job`, write the adapter dir (rank 0); return the bare model."""
    import torch

    from strata.train.targets import describe, wrap_lora

    cfg = ctx.cfg
    blocks, val_blocks, steps = job_blocks(job, tokenizer, cfg, ctx.world_size)
    tokens = sum(len(b.input_ids) for b in blocks)
    torch.manual_seed(cfg.seed)
    peft_model, ctx.targets = wrap_lora(model, cfg, use_dora=ctx.peft == "dora")
    trainable, total = peft_model.get_nb_trainable_parameters()
    global_batch = cfg.batch_size * cfg.grad_accum * ctx.world_size
    if distributed.is_main():
        print(f"{job.name}: {len(job.records)} records -> {len(blocks)} blocks, {tokens} tokens; {steps} steps "
              f"x {global_batch} blocks ({cfg.batch_size} x {cfg.grad_accum} accumulation x {ctx.world_size} "
              f"processes); trainable {trainable:,} of {total:,} params ({ctx.peft}, r={cfg.r}, "
              f"{describe(ctx.targets)}); on {ctx.device}; base + levels {[p.name for p in ctx.below]}; "
              f"-> {job.out}" + (" [dry run: nothing trained or written]" if dry_run else ""), flush=True)
    identity = {"total_steps": steps, "dataset_sha256": ctx.data["train_sha256"], "blocks": len(blocks),
                "global_batch": global_batch}
    if dry_run:
        def first_batch(args: Any) -> tuple[dict[str, Any], Any]:
            batch = collator(tokenizer)(_rows(blocks[:cfg.batch_size]))
            return batch, peft_model(**on_device(peft_model, batch, ctx)).loss

        dry_run_checks(job, identity, resume_from, ctx, first_batch, has_eval=bool(val_blocks))
        return peft_model.unload()

    def sft_trainer(args: Any, callbacks: list) -> Any:
        from transformers import Trainer

        return Trainer(model=peft_model, args=args, train_dataset=_rows(blocks),
                       eval_dataset=_rows(val_blocks) or None, data_collator=collator(tokenizer), callbacks=callbacks)

    run = fit(job, sft_trainer, identity, ctx, resume_from=resume_from, progress=progress, has_eval=bool(val_blocks))
    if distributed.is_main():
        from strata.train.trainrecord import write_adapter_dir

        write_adapter_dir(job, peft_model, ctx, run | {"tokens": tokens, "blocks": len(blocks),
                                                       "val_blocks": len(val_blocks)})
    distributed.barrier()  # the other ranks wait for rank 0's files, then go on (or exit) together
    return peft_model.unload()


def collator(tokenizer: Any) -> Any:
    """One example per row, a batch flattened into one sequence whose position ids restart at every example:
    transformers builds the attention mask from those resets, so packed examples never see each other."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening()


def _checkpoint(job: Job, identity: dict[str, Any], resume_from: str | None) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to resume from (None: a fresh run) and its saved run record, checked against `identity`."""
    checkpoint = resume.resolve_resume(job.out, resume_from)
    if checkpoint is None:
        return None, {"started_at": now_iso()}
    return checkpoint, resume.read_marker(checkpoint, identity)


def dry_run_checks(job: Job, identity: dict[str, Any], resume_from: str | None, ctx: Run,
                   first_batch: Callable[[Any], tuple[dict[str, Any], Any]], has_eval: bool,
                   args_class: Any = None, extra: dict[str, Any] | None = None) -> None:
    """What a real run hits first, without training or writing: the resume checkpoint (finished, same run), the
    TrainingArguments (the preset's `trainer:` block), then `first_batch(args)`: the data collator's first batch
    and the loss of a forward pass on it."""
    import tempfile

    import torch

    from strata.train.trainargs import training_arguments

    checkpoint, _ = _checkpoint(job, identity, resume_from)
    with tempfile.TemporaryDirectory() as scratch:  # some trainers create output_dir on construction
        args = training_arguments(ctx.cfg, Path(scratch), steps=identity["total_steps"], device=ctx.device,
                                  dtype=ctx.dtype, evaluate_first=has_eval and not checkpoint, progress=False,
                                  args_class=args_class, extra=extra)
        with torch.no_grad():
            batch, loss = first_batch(args)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in batch.items() if hasattr(v, "shape"))
    if distributed.is_main():
        print(f"{job.name}: dry run: {type(args).__name__} ok (max_steps {identity['total_steps']}, lr "
              f"{args.learning_rate}, warmup {args.warmup_steps}); first batch: {shapes}; loss {float(loss):.4f}"
              + (f"; would resume from {checkpoint} at step {resume.checkpoint_step(checkpoint)}" if checkpoint
                 else "; no checkpoint to resume: would start fresh" if resume_from else ""), flush=True)


def on_device(model: Any, batch: dict[str, Any], ctx: Run) -> dict[str, Any]:
    """Put `model` (unless bitsandbytes placed it) and the batch's tensors on the run's device."""
    import torch

    device = torch.device(ctx.device) if ctx.quantization == "none" else next(model.parameters()).device
    model.to(device)
    return {k: v.to(device) for k, v in batch.items() if hasattr(v, "to")}


def fit(job: Job, make_trainer: Callable[[Any, list], Any], identity: dict[str, Any], ctx: Run, *,
        resume_from: str | None, progress: bool, has_eval: bool, args_class: Any = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the trainer `make_trainer(args, callbacks)` builds (the HF Trainer, or TRL's DPOTrainer with
    `args_class` DPOConfig and its own fields in `extra`): checkpoints under <adapter dir>/checkpoints/, TensorBoard
    events under <adapter dir>/tensorboard/, resuming from `resume_from`; return what the adapter dir records."""
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from strata.train.trainargs import training_arguments
    from strata.train.trainmeter import meter_callback, progress_callback

    cfg = ctx.cfg
    steps = identity["total_steps"]
    checkpoint, saved = _checkpoint(job, identity, resume_from)
    if checkpoint is not None:
        if distributed.is_main():
            print(f"{job.name}: resuming from {checkpoint} at step {resume.checkpoint_step(checkpoint)} of {steps}")
    else:
        if distributed.is_main():  # a fresh run owns the checkpoints and event files
            if job.out.exists() and not job.out.is_dir():
                raise StrataError(f"{job.out} is a file, not an adapter dir; move it away and train again.")
            for folder in (resume.checkpoints_dir(job.out), job.out / TENSORBOARD):
                shutil.rmtree(folder, ignore_errors=True)
        distributed.barrier()
    args = training_arguments(cfg, resume.checkpoints_dir(job.out), steps=steps, device=ctx.device,
                              dtype=ctx.dtype, evaluate_first=has_eval and checkpoint is None,
                              progress=progress, args_class=args_class, extra=extra)
    reported, tensorboard = list(args.report_to), "tensorboard" in args.report_to
    if tensorboard:  # strata's own TensorBoard callback, so the events land beside loss.jsonl
        args.report_to = [r for r in args.report_to if r != "tensorboard"]
    meter = meter_callback()
    callbacks = [meter, resume.marker_callback(identity | {"started_at": saved["started_at"]})]
    if tensorboard:
        board = TensorBoardCallback()
        board.logging_dir = str(job.out / TENSORBOARD)
        callbacks.append(board)
    trainer = make_trainer(args, callbacks)
    trainer.remove_callback(PrinterCallback)  # without progress bars: quiet, not a dict per step
    if trainer.pop_callback(ProgressCallback):
        trainer.add_callback(progress_callback(job.name))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if has_eval:
        trainer.evaluate()
    history = trainer.state.log_history
    evals = [row for row in history if "eval_loss" in row]
    from strata.train.trainmeter import peak_memory_mb

    peak, measured = peak_memory_mb(ctx.device)
    return {"log": [_log_row(row) for row in history if "loss" in row or "eval_loss" in row],
            "total_steps": trainer.state.global_step, "started_at": saved["started_at"],
            "resumed_from_step": resume.checkpoint_step(checkpoint) if checkpoint else None,
            "eval_loss_before": evals[0]["eval_loss"] if evals and evals[0]["step"] == 0 else None,
            "eval_loss_after": evals[-1]["eval_loss"] if evals else None,
            "tokens_seen": meter.tokens, "train_seconds": meter.seconds, "dataset_sha256": identity["dataset_sha256"],
            "peak_memory_mb": peak, "peak_memory_measure": measured,
            "training_arguments": _arguments(args, cfg) | {"report_to": reported}}


def _rows(blocks: list) -> list[dict[str, list[int]]]:
    return [{"input_ids": b.input_ids, "labels": b.labels} for b in blocks]


def _log_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Trainer log entry as a loss.jsonl row: step, then loss/lr/grad_norm/tokens_seen or eval_loss."""
    names = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "num_input_tokens_seen": "tokens_seen",
             "eval_loss": "eval_loss", "rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy"}
    return {"step": row["step"], **{short: row[key] for key, short in names.items() if key in row}}


def _arguments(args: Any, cfg: TrainPreset) -> dict[str, Any]:
    """The TrainingArguments fields strata set or the preset passed, as the summary records them."""
    from strata.train.trainargs import MAPPED

    keys = [*MAPPED.values(), "max_steps", "warmup_steps", "lr_scheduler_type", "optim", "bf16",
            "per_device_eval_batch_size", "report_to", *cfg.trainer,
            *(("beta", "loss_type", "max_length", *cfg.dpo) if hasattr(args, "beta") else ())]
    return {key: getattr(args, key) for key in dict.fromkeys(keys) if isinstance(getattr(args, key), (int, float, str, bool, list, type(None)))}

