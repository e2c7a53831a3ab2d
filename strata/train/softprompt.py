"""Soft prompts: PEFT prompt tuning (n trained virtual-token embeddings before the input) on the levels' Trainer
path, written to soft_prompts/NAME/ with the PEFT files, loss log + plot, softprompt.gguf for the server and a
training_summary.json holding the base fingerprint and the HF-PEFT-vs-GGUF fidelity check."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from strata.modelfolder import SUMMARY, fingerprint
from strata.train import batches
from strata.train.batches import IGNORE, Block
from strata.train.trainconfig import TrainPreset
from strata.errors import StrataError
from strata.files import atomic_write_jsonl, read_jsonl, sha256_file
from strata.serve import softprompts as sp
from strata.settings import Settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PROMPT_KEYS = (("prompt", "response"), ("prompt", "completion"), ("question", "answer"), ("instruction", "output"))
# HF model types whose forward scales or transforms input embeddings (Gemma x sqrt(d), Granite's multiplier)
REFUSED_TYPES = ("gemma", "granite")


@dataclass(frozen=True)
class SoftPromptPreset:
    """A soft prompt's shape, its data and optimiser knobs, and the fidelity bounds (those of the LoRA / convert
    check); presets/soft_prompts/*.yaml hold only what differs."""

    n_virtual_tokens: int = 20
    init: Literal["text", "random"] = "text"
    init_text: str = "Answer the question about the accounting standard accurately and concisely:"
    lr: float = 3e-2  # prompt tuning wants a far larger lr than LoRA
    epochs: float = 3.0
    max_steps: int | None = None
    max_seq_len: int = 256  # real tokens per example (the virtual tokens come on top)
    batch_size: int = 4
    grad_accum: int = 1
    topics: list[str] | None = None
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_steps: int = 200
    eval_batches: int = 20
    seed: int = 42
    val_share: float = 0.1  # without held-out rows, this share of the training rows is held out
    fidelity_prompts: int = 8  # held-out prompts scored by the HF-vs-GGUF check
    fidelity_tokens: int = 48  # tokens of each (cut)
    max_relative_error: float = 1e-2
    min_top1_agreement: float = 0.9
    trainer: dict[str, Any] = field(default_factory=dict)

    def train_preset(self) -> TrainPreset:
        """The Trainer knobs as the levels' TrainPreset (the same TrainingArguments mapping)."""
        shared = {k: getattr(self, k) for k in ("lr", "epochs", "max_steps", "max_seq_len", "batch_size", "grad_accum",
                                                "topics", "warmup_ratio", "weight_decay", "max_grad_norm",
                                                "save_steps", "eval_batches", "seed", "trainer")}
        return TrainPreset(**shared, gradient_checkpointing=False)


@dataclass
class Job:
    """What the levels' Trainer run needs to know about its output: a name and a dir."""

    name: str
    out: Path


def soft_prompt_dir(settings: Settings, name: str) -> Path:
    return settings.workspace / sp.FOLDER / name


def load_soft_preset(preset: str | None, **overrides: Any) -> SoftPromptPreset:
    from strata.presets import load_preset

    return load_preset(SoftPromptPreset, preset or "soft_prompts/default", **overrides)


def train_soft_prompt(settings: Settings, name: str, *, preset: str | None = None, train_files: list[Path] = (),
                      topics: list[str] | None = None, base_model: str | None = None, gguf: Path | None = None,
                      max_train_samples: int | None = None, overrides: dict[str, Any] | None = None,
                      resume_from: str | None = None, progress: bool = True) -> Path:
    """Train soft prompt `name` on the dataset (or `train_files`; rows with text, prompt+response or messages),
    check its fidelity on `gguf` (an F16/F32 GGUF of the base; default: the base converted once) and write
    soft_prompts/NAME/. Returns that dir."""
    import torch

    from strata.modelfolder import pick_device, resolve_base_model
    from strata.train.trainer import cpu_threads

    if not NAME.match(name):
        raise StrataError(f"soft prompt name {name!r} must be letters, digits, '.', '_' or '-' (it names "
                          f"{sp.FOLDER}/NAME/ and what requests send as \"soft_prompt\").")
    cfg = load_soft_preset(preset, **(overrides or {}))
    if topics:
        cfg = replace(cfg, topics=list(topics))
    base_dir = resolve_base_model(settings, base_model)
    check_architecture(base_dir)
    records, val, sources = _records(settings, train_files, cfg, max_train_samples)
    device, dtype = pick_device("none")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    blocks = [example(r, tokenizer, cfg.max_seq_len) for r in records]
    val_blocks = [example(r, tokenizer, cfg.max_seq_len) for r in val][: cfg.eval_batches * cfg.batch_size]
    out = soft_prompt_dir(settings, name)
    threads = settings.n_threads if device == "cpu" else None
    with cpu_threads(threads):
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
        peft_model = wrap_prompt_tuning(model, cfg, base_dir)
        trainable, total = peft_model.get_nb_trainable_parameters()
        print(f"{name}: {len(records)} records, {sum(len(b.input_ids) for b in blocks)} tokens; "
              f"{cfg.n_virtual_tokens} virtual tokens ({cfg.init} init), trainable {trainable:,} of {total:,} params; "
              f"on {device} -> {out}", flush=True)
        run = _train(Job(name, out), peft_model, blocks, val_blocks, tokenizer, settings, base_dir, cfg, device,
                     dtype, sources, resume_from, progress)
        matrix = peft_model.get_prompt_embedding_to_save("default").detach().float().cpu().numpy()
        context = {"settings": settings, "name": name, "cfg": cfg, "preset": preset, "base_dir": base_dir,
                   "sources": sources, "records": len(records), "val_records": len(val), "blocks": len(blocks),
                   "tokens": sum(len(b.input_ids) for b in blocks), "device": device, "dtype": dtype}
        fidelity_gguf = gguf or base_gguf(settings, base_dir)
        fidelity = check_fidelity(peft_model, matrix, fidelity_prompts(val or records, tokenizer, cfg),
                                  fidelity_gguf, cfg, settings.n_threads)
    return write_soft_prompt_dir(out, peft_model, matrix, context, run, fidelity, fidelity_gguf)


def check_architecture(base_dir: Path) -> None:
    """One line refusing bases whose forward scales or transforms input embeddings (see softprompts.REFUSED)."""
    config = json.loads((Path(base_dir) / "config.json").read_text())
    kind = str(config.get("model_type") or (config.get("text_config") or {}).get("model_type") or "")
    scaled = kind.startswith(REFUSED_TYPES) or config.get("scale_embedding") or config.get("embedding_multiplier",
                                                                                             1.0) != 1.0
    if scaled:
        raise StrataError(sp.REFUSED.format(arch=kind) + "; train a LoRA level on this base instead.")


def wrap_prompt_tuning(model: Any, cfg: SoftPromptPreset, base_dir: Path) -> Any:
    """PEFT's PromptTuningConfig on `model`: n virtual tokens, initialised from `init_text` (repeated or cut to n
    tokens by PEFT) or at random."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    if cfg.init == "text" and not cfg.init_text.strip():
        raise StrataError("the soft prompt preset has `init: text` but an empty init_text; give one or use init: random.")
    options = ({"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": cfg.init_text,
                "tokenizer_name_or_path": str(base_dir)} if cfg.init == "text"
               else {"prompt_tuning_init": PromptTuningInit.RANDOM})
    return get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                    num_virtual_tokens=cfg.n_virtual_tokens, **options))


def _records(settings: Settings, train_files: list[Path], cfg: SoftPromptPreset,
             max_samples: int | None) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(train rows, held-out rows, where they came from): --train-files, else the synthesized pairs, else the
    dataset; a topic filter applies to rows that carry one."""
    from strata import userdata

    pairs = settings.processed / "pairs_train.jsonl"
    if train_files:  # the level's reader: paths or globs of .jsonl/.json, each bad row named by file:line
        files, val_file = [p for f in train_files for p in userdata.expand(str(f))], None
        rows = [_checked(row, where) for f in files for where, row in userdata.file_rows(f)]
    else:
        files, val_file = ([pairs], settings.processed / "pairs_val.jsonl") if pairs.is_file() else \
            ([settings.train_jsonl], settings.val_jsonl)
        rows = [r for f in files for r in read_jsonl(f, "train data: run `strata build dataset`, or pass --train-files")]
    val = read_jsonl(val_file, "") if val_file is not None and val_file.is_file() else []
    if cfg.topics is not None:
        wanted = set(cfg.topics)
        rows, val = ([r for r in group if r.get("topic") in wanted] for group in (rows, val))
        if not rows:
            raise StrataError(f"no training rows for topics {sorted(wanted)} in {', '.join(map(str, files))}; check "
                              "--topics against the rows' topic field.")
    if not rows:
        raise StrataError(f"{', '.join(map(str, files))} hold no rows; rebuild the dataset or check --train-files.")
    if not val and len(rows) >= 10:  # hold some out, so the fidelity check scores prompts it never trained on
        cut = max(1, int(len(rows) * cfg.val_share))
        rows, val = rows[:-cut], rows[-cut:]
    rows = rows[:max_samples] if max_samples else rows
    sources = {"train": [str(f) for f in files], "train_sha256": [sha256_file(f) for f in files],
               "val": str(val_file) if val else None}
    return rows, val, sources


def _checked(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A user row, refused in one line naming `where` (file:line) when it has none of the soft-prompt shapes."""
    if isinstance(row.get("messages"), list):
        return row
    try:
        split_row(row)
    except StrataError:
        shapes = ", ".join("+".join(pair) for pair in PROMPT_KEYS)
        raise StrataError(f"{where}: a soft-prompt row needs `text`, `messages` or one of {shapes}; found keys "
                          f"{sorted(row)}") from None
    return row


def split_row(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) of a row: text (all answer), prompt+response (and its synonyms), or chat messages."""
    if isinstance(row.get("text"), str) and row["text"].strip():
        return "", row["text"]
    for a, b in PROMPT_KEYS:
        if isinstance(row.get(a), str) and isinstance(row.get(b), str):
            return row[a], row[b]
    raise StrataError(f"row {row.get('id', row.get('chunk_id', '?'))} has none of text, prompt+response, "
                      "question+answer or messages; see README 'Soft prompts' for the row shapes.")


def example(row: dict[str, Any], tokenizer: Any, max_seq_len: int) -> Block:
    """One row -> one training sequence (the virtual tokens go before each): BOS + prompt + answer + EOS, the
    loss on the answer only (on everything for a text row); chat rows through the chat template."""
    if isinstance(row.get("messages"), list):
        return batches.chat_example(row["messages"], tokenizer, max_seq_len)
    prompt, answer = split_row(row)
    prompt_ids = tokenizer(prompt)["input_ids"] if prompt else tokenizer("")["input_ids"]
    answer_ids = tokenizer((" " if prompt else "") + answer, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids + [tokenizer.eos_token_id])[:max_seq_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id])[:max_seq_len]
    return Block(ids, labels)


def fidelity_prompts(rows: list[dict[str, Any]], tokenizer: Any, cfg: SoftPromptPreset) -> list[list[int]]:
    """Token ids (BOS first) of the held-out prompts the fidelity check scores: each row's prompt and answer,
    cut to fidelity_tokens."""
    out = []
    for row in rows[: cfg.fidelity_prompts]:
        if isinstance(row.get("messages"), list):
            text = "\n".join(str(m.get("content", "")) for m in row["messages"])
        else:
            prompt, answer = split_row(row)
            text = f"{prompt} {answer}".strip()
        ids = tokenizer(text)["input_ids"][: cfg.fidelity_tokens]
        if len(ids) > 1:
            out.append(ids)
    if not out:
        raise StrataError("no held-out prompt has any text to score the fidelity check on; check the data.")
    return out


def _train(job: Job, peft_model: Any, blocks: list[Block], val_blocks: list[Block], tokenizer: Any,
           settings: Settings, base_dir: Path, cfg: SoftPromptPreset, device: str, dtype: Any,
           sources: dict[str, Any], resume_from: str | None, progress: bool) -> dict[str, Any]:
    """The levels' Trainer run (strata.train.trainer.fit): checkpoints, resume, TensorBoard, the step meter. Rows are
    padded, not flattened: PEFT prepends the virtual tokens to each row of the batch."""
    from strata.train.trainer import Run, _rows, fit
    from strata.train.trainargs import planned_steps

    train_cfg = cfg.train_preset()
    steps = planned_steps(len(blocks), train_cfg, 1)
    run = Run(settings=settings, level=0, base_dir=base_dir, below=[], cfg=train_cfg, peft="prompt_tuning",
              quantization="none", device=device, dtype=dtype, preset=None, world_size=1)
    identity = {"total_steps": steps, "dataset_sha256": ",".join(sources["train_sha256"]), "blocks": len(blocks),
                "global_batch": train_cfg.batch_size * train_cfg.grad_accum}

    def prompt_trainer(args: Any, callbacks: list) -> Any:
        from transformers import DataCollatorForSeq2Seq, Trainer

        return Trainer(model=peft_model, args=args, train_dataset=_rows(blocks),
                       eval_dataset=_rows(val_blocks) or None,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"), callbacks=callbacks)

    return fit(job, prompt_trainer, identity, run, resume_from=resume_from, progress=progress,
               has_eval=bool(val_blocks))


def base_gguf(settings: Settings, base_dir: Path) -> Path:
    """An F16 GGUF of the base for the fidelity check, converted once per base fingerprint."""
    from strata.llamacpp import convert_hf

    out = settings.workspace / sp.FOLDER / ".bases" / f"{fingerprint(base_dir)}.f16.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp.gguf")
        convert_hf(base_dir, tmp, "f16")
        os.replace(tmp, out)
    return out


def check_fidelity(peft_model: Any, matrix: Any, prompts: list[list[int]], gguf: Path, cfg: SoftPromptPreset,
                   n_threads: int) -> dict[str, Any]:
    """Next-token logits of the HF PEFT model (virtual tokens prepended by PEFT) against llama.cpp on `gguf` with
    the same matrix injected, over every position of the held-out prompts: relative error and top-1 agreement
    against the preset's bounds, and how far the soft prompt moves the base (the same error without it)."""
    import torch

    from strata.export.softprompt_gguf import compare

    k = matrix.shape[0]
    peft_model.eval()
    with torch.no_grad():
        want = [peft_model(input_ids=torch.tensor([ids])).logits[0, -len(ids):].float().numpy() for ids in prompts]
        with peft_model.disable_adapter():
            plain = [peft_model(input_ids=torch.tensor([ids])).logits[0, -len(ids):].float().numpy() for ids in prompts]
    numbers = compare(gguf, matrix, prompts, want, plain, n_threads)
    passed = numbers["relative_error"] <= cfg.max_relative_error and numbers["top1_agreement"] >= cfg.min_top1_agreement
    return {**numbers, "passed": bool(passed), "max_relative_error": cfg.max_relative_error,
            "min_top1_agreement": cfg.min_top1_agreement, "prompts": len(prompts), "positions": sum(len(p) for p in prompts),
            "virtual_tokens": int(k), "gguf": str(gguf), "bos": "after the virtual tokens (PEFT's order)"}


def write_soft_prompt_dir(out: Path, peft_model: Any, matrix: Any, ctx: dict[str, Any], run: dict[str, Any],
                          fidelity: dict[str, Any], gguf: Path) -> Path:
    """Stage every output, then move each into `out`, the summary last. A failed fidelity check still records
    its summary and PEFT files but no softprompt.gguf (nothing servable), and raises."""
    from strata.train.lossplot import plot_loss
    from strata.export.softprompt_gguf import gguf_architecture, write_soft_prompt_gguf

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        peft_model.save_pretrained(stage)
        base_fp = fingerprint(ctx["base_dir"])
        plot_loss(atomic_write_jsonl(stage / "loss.jsonl", run["log"]), stage / "loss.png",
                  title=f"{ctx['name']} soft prompt loss")
        arch = gguf_architecture(gguf)
        if fidelity["passed"]:
            write_soft_prompt_gguf(matrix, stage / sp.GGUF_NAME, architecture=arch, base_fingerprint=base_fp,
                                   name=ctx["name"])
        summary = _summary(ctx, run, fidelity, base_fp, arch, matrix, stage)
        (stage / SUMMARY).write_text(json.dumps(summary, indent=2))
        (out / SUMMARY).unlink(missing_ok=True)
        (out / sp.GGUF_NAME).unlink(missing_ok=True)  # an older export would not match these weights
        for name in sorted(p.name for p in stage.iterdir() if p.name != SUMMARY) + [SUMMARY]:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not fidelity["passed"]:
        raise StrataError(f"soft prompt {ctx['name']}: llama.cpp with the injected embeddings does not match HF PEFT "
                          f"(relative error {fidelity['relative_error']:.2e}, limit {fidelity['max_relative_error']:.0e}; "
                          f"top-1 {fidelity['top1_agreement']:.3f}, minimum {fidelity['min_top1_agreement']}); "
                          f"no {sp.GGUF_NAME} was written. See {out / SUMMARY}.")
    return out


def _summary(ctx: dict[str, Any], run: dict[str, Any], fidelity: dict[str, Any], base_fp: str, arch: str,
             matrix: Any, stage: Path) -> dict[str, Any]:
    from strata.train.trainrecord import _version

    cfg: SoftPromptPreset = ctx["cfg"]
    losses = [r["loss"] for r in run["log"] if "loss" in r]
    tail = losses[-max(1, len(losses) // 10):]
    gguf = stage / sp.GGUF_NAME
    return {
        "name": ctx["name"], "kind": "soft_prompt", "peft": "prompt_tuning",
        "preset": ctx["preset"] or "soft_prompts/default", "hyperparameters": asdict(cfg),
        "n_virtual_tokens": int(matrix.shape[0]), "n_embd": int(matrix.shape[1]), "init": cfg.init,
        "dataset": {**ctx["sources"], "records": ctx["records"], "val_records": ctx["val_records"],
                    "blocks": ctx["blocks"], "tokens": ctx["tokens"]},
        "base_model": str(ctx["base_dir"]), "base_fingerprint": base_fp, "architecture": arch,
        "adapter_sha256": sha256_file(stage / "adapter_model.safetensors"),
        "metrics": {
            "steps": run["total_steps"], "resumed_from_step": run["resumed_from_step"],
            "train_loss_first": losses[0] if losses else None, "train_loss": sum(tail) / len(tail) if tail else None,
            "eval_loss_before": run.get("eval_loss_before"), "eval_loss_after": run.get("eval_loss_after"),
            "tokens_per_s": run["tokens_seen"] / run["train_seconds"] if run["train_seconds"] else None,
            "tokens_seen": run["tokens_seen"], "duration_s": run["train_seconds"],
            "seconds_per_epoch": run["train_seconds"] / cfg.epochs if run["train_seconds"] and not cfg.max_steps else None,
            "peak_memory_mb": round(run["peak_memory_mb"], 1), "peak_memory_measure": run["peak_memory_measure"],
        },
        "training_arguments": run["training_arguments"],
        "fidelity": fidelity,
        "gguf": {"path": sp.GGUF_NAME if gguf.is_file() else None, "sha256": sha256_file(gguf) if gguf.is_file() else None,
                 "metadata": {"general.type": sp.TYPE, sp.KEY_N_VIRTUAL: int(matrix.shape[0]),
                              sp.KEY_N_EMBD: int(matrix.shape[1]), "strata.base_fingerprint": base_fp},
                 "serve": f"\"soft_prompt\": \"{ctx['name']}\" on a request, or strata serve --soft-prompt "
                          f"{ctx['name']}, on a GGUF of this base"},
        "device": ctx["device"], "dtype": str(ctx["dtype"]).removeprefix("torch."),
        "versions": {n: _version(n) for n in ("torch", "transformers", "peft", "gguf", "llama-cpp-python", "strata")},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "started_at": run.get("started_at"),
    }
