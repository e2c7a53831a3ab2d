"""Levels 1 and 2 on the tiny base: loss goes down, level 2 sits on level 1, and each adapter.gguf serves what trained."""

from __future__ import annotations

import json
import shutil

import pytest

from strata.errors import StrataError
from strata.export.adapter_gguf import FINGERPRINT_KEY, read_metadata
from strata.export.fidelity import gguf_logits, hf_reference, relative_error
from strata.files import sha256_file
from strata.modelfolder import fingerprint
from strata.settings import Settings
from strata.train import layers

PROMPT = "A lessee classifies each lease at commencement as either a finance lease or an operating lease."


def summary(folder):
    return json.loads((folder / "training_summary.json").read_text())


def test_training_lowers_eval_loss_and_writes_every_record(trained, trained_steps, fast):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for level in (1, 2):
        folder = trained.peft / f"level{level}"
        names = {p.name for p in folder.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "training_summary.json", "loss.jsonl",
                "loss.png", "adapter.gguf", "tensorboard", "checkpoints"} <= names
        record = summary(folder)
        metrics = record["metrics"]
        assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
        assert metrics["steps"] == trained_steps and metrics["tokens_per_s"] > 0
        # 2 examples a step, one row each (flattened, no padding): the tokens seen are the steps' share of the
        # dataset's rows, at most 64 tokens each
        drawn = trained_steps * 2 * record["dataset"]["tokens"] / record["dataset"]["blocks"]
        assert 0.85 * drawn < metrics["tokens_seen"] <= min(1.15 * drawn, trained_steps * 2 * 64)
        assert metrics["peak_memory_mb"] > 50 and metrics["peak_memory_measure"]
        assert record["world_size"] == 1 and record["device"] == "cpu" and record["dtype"] == "float32"
        args = record["training_arguments"]
        assert args["learning_rate"] == fast["lr"] and args["lr_scheduler_type"] == "cosine"
        assert args["max_steps"] == trained_steps and args["per_device_train_batch_size"] == 2
        assert args["report_to"] == ["tensorboard"] and args["warmup_steps"] == int(0.03 * trained_steps)
        assert record["dataset"]["train_sha256"] == sha256_file(trained.train_jsonl)
        assert record["base_fingerprint"] == fingerprint(trained.base_model)
        assert {"torch", "transformers", "peft", "accelerate"} <= set(record["versions"])
        steps = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps if "loss" in s] == list(range(1, trained_steps + 1))
        assert [s["step"] for s in steps if "eval_loss" in s] == [0, trained_steps]
        events = EventAccumulator(str(folder / "tensorboard")).Reload()
        board = events.Scalars("train/loss")
        assert [e.step for e in board] == list(range(1, trained_steps + 1))
        assert [e.value for e in board] == pytest.approx([s["loss"] for s in steps if "loss" in s], rel=1e-6)
        assert [e.value for e in events.Scalars("eval/loss")][-1] == pytest.approx(metrics["eval_loss_after"])
        assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"
        assert read_metadata(folder / "adapter.gguf", FINGERPRINT_KEY) == record["base_fingerprint"]
    assert summary(trained.peft / "level1")["hyperparameters"]["format"] == "text"
    assert summary(trained.peft / "level2")["hyperparameters"]["format"] == "chat"


def test_level2_trained_on_level1_merged_weights(trained, tiny_base, tmp_path):
    """Level 2's pre-training eval loss is exactly the loss of base + level 1 merged, not of the bare base."""
    import torch
    from transformers import AutoTokenizer, DataCollatorWithFlattening, Trainer, TrainingArguments

    from strata.train.batches import build_blocks, load_records
    from strata.train.trainconfig import TrainPreset

    record = summary(trained.peft / "level2")
    level1 = summary(trained.peft / "level1")
    assert [e["adapter_sha256"] for e in record["levels_below"]] == [level1["adapter_sha256"]]
    cfg = TrainPreset(**record["hyperparameters"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    blocks = build_blocks(load_records(trained.val_jsonl), tokenizer, cfg.format, cfg.max_seq_len)[
        : cfg.eval_batches * cfg.batch_size]
    rows = [{"input_ids": b.input_ids, "labels": b.labels} for b in blocks]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=cfg.batch_size, report_to=[],
                             use_cpu=True, remove_unused_columns=False)
    losses = {}
    for name, below in (("base", []), ("base+level1", [trained.peft / "level1"])):
        model = layers.load_base_with_levels(tiny_base, below, torch.float32)
        trainer = Trainer(model=model, args=args, eval_dataset=rows,
                          data_collator=DataCollatorWithFlattening())
        losses[name] = trainer.evaluate()["eval_loss"]
    assert losses["base+level1"] == pytest.approx(record["metrics"]["eval_loss_before"], rel=1e-5)
    assert abs(losses["base"] - losses["base+level1"]) > 1e-3


def test_adapter_ggufs_give_the_merged_models_logits(trained, tiny_base, base_gguf, tmp_path):
    """Level 2's adapter.gguf on a GGUF of base+level1 (and the level1+level2 stack on the base GGUF) gives
    the logits of HF base+level1+level2 merged."""
    import torch
    from transformers import AutoTokenizer

    from strata.llamacpp import convert_hf

    level1, level2 = trained.peft / "level1", trained.peft / "level2"
    tokens = AutoTokenizer.from_pretrained(tiny_base)(PROMPT)["input_ids"]
    dirs = {}
    for name, below in (("m1", [level1]), ("m12", [level1, level2])):
        dirs[name] = tmp_path / name
        layers.load_base_with_levels(tiny_base, below, torch.float32).save_pretrained(dirs[name])
        for extra in tiny_base.iterdir():
            if extra.is_file() and not (dirs[name] / extra.name).exists():
                shutil.copy(extra, dirs[name])
    want = hf_reference(dirs["m12"], tokens)[0]
    m1_gguf = convert_hf(dirs["m1"], tmp_path / "m1.gguf", "f16")
    on_merged = gguf_logits(m1_gguf, tokens, lora=[(level2 / "adapter.gguf", 1.0)])
    stacked = gguf_logits(base_gguf, tokens, lora=[(level1 / "adapter.gguf", 1.0), (level2 / "adapter.gguf", 1.0)])
    without = gguf_logits(m1_gguf, tokens)
    error = relative_error(on_merged, want)
    assert error < 1e-2
    assert relative_error(stacked, want) < 1e-2
    assert relative_error(without, want) > 3 * error  # level 2 really changes the model beyond the tolerance
    level1_only = gguf_logits(base_gguf, tokens, lora=[(level1 / "adapter.gguf", 1.0)])
    assert relative_error(level1_only, hf_reference(dirs["m1"], tokens)[0]) < 1e-2


def test_level2_without_level1_says_train_level1_first(ws):
    from strata.train.trainer import train_level

    with pytest.raises(StrataError, match=r"train level 1 first \(strata build train --level 1\)"):
        train_level(ws, 2, progress=False)


def test_level_on_another_base_is_refused(trained, ws, tiny_base, tmp_path):
    """Level 1 trained on the tiny base does not count once BASE_MODEL points at a different model."""
    import torch
    from transformers import AutoModelForCausalLM

    from strata.train.trainer import train_level

    other = tmp_path / "other_base"
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.01)
    model.save_pretrained(other)
    assert fingerprint(other) != fingerprint(tiny_base)
    shutil.copytree(trained.peft / "level1", ws.peft / "level1")
    assert layers.levels_below(ws, 2) == [ws.peft / "level1"]
    moved = Settings.resolve(workspace=ws.workspace, base_model=str(other))
    with pytest.raises(StrataError, match="trained on another base model.*train level 1 first"):
        train_level(moved, 2, progress=False)
    with pytest.raises(StrataError, match="train level 2 first"):
        layers.levels_below(ws, 3)


def test_stale_level_below_is_refused(trained, ws):
    """Level 2 trained on an older level 1 no longer stacks once level 1 changes."""
    for level in (1, 2):
        shutil.copytree(trained.peft / f"level{level}", ws.peft / f"level{level}")
    assert layers.levels_below(ws, 3) == [ws.peft / "level1", ws.peft / "level2"]
    record = summary(ws.peft / "level1")
    weights = ws.peft / "level1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(StrataError, match="does not match its training summary: train level 1 first"):
        layers.levels_below(ws, 3)
    record["adapter_sha256"] = sha256_file(weights)
    (ws.peft / "level1" / "training_summary.json").write_text(json.dumps(record))
    with pytest.raises(StrataError, match="older versions of the levels below it: train level 2 first"):
        layers.levels_below(ws, 3)
