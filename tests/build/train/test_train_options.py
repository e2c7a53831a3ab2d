"""Training options: --dry-run, --resume-from auto, --per-topic, DoRA, QLoRA on CPU, presets, the CLI alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.build.adapter_gguf import DORA_MESSAGE
from strata.build.train import train_level
from strata.errors import StrataError


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def summary(folder: Path) -> dict:
    return json.loads((folder / "training_summary.json").read_text())


def test_dry_run_prints_the_plan_and_writes_nothing(ws, fast, capsys):
    before = tree(ws.workspace)
    out = train_level(ws, 1, overrides=fast, max_train_samples=10, dry_run=True, progress=False)
    assert out == [ws.peft / "level1"]
    assert tree(ws.workspace) == before
    printed = capsys.readouterr().out
    assert "trainable" in printed and "12 steps" in printed and "tokens" in printed
    assert str(ws.peft / "level1") in printed and "dry run" in printed


def test_resume_auto_continues_from_the_saved_step(ws, fast):
    """A run cut after step 3 and resumed with `auto` ends where an uninterrupted run ends, with the same weights."""
    from safetensors.torch import load_file

    fast.update(max_steps=6, save_steps=3)
    folder = ws.peft / "level1"
    train_level(ws, 1, overrides=fast, max_train_samples=16, progress=False)
    whole = load_file(folder / "adapter_model.safetensors")
    whole_log = (folder / "loss.jsonl").read_text()
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-3", "step-6"]
    shutil.rmtree(folder / "checkpoints" / "step-6")  # as if killed between step 3 and step 6
    for name in ("adapter_model.safetensors", "training_summary.json", "loss.jsonl"):
        (folder / name).unlink()
    train_level(ws, 1, overrides=fast, max_train_samples=16, resume_from="auto", progress=False)
    metrics = summary(folder)["metrics"]
    assert metrics["resumed_from_step"] == 3 and metrics["steps"] == 6
    assert (folder / "loss.jsonl").read_text() == whole_log
    resumed = load_file(folder / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys()
    for key, tensor in whole.items():
        assert resumed[key].allclose(tensor, atol=1e-6), key
    fast.update(max_steps=8)
    with pytest.raises(StrataError, match="belongs to a different run"):
        train_level(ws, 1, overrides=fast, max_train_samples=16,
                    resume_from=str(folder / "checkpoints" / "step-3"), progress=False)


def test_per_topic_layers_train_one_adapter_per_topic_on_the_levels_below(ws, trained, fast):
    topics = ["ASC_Leases", "ASC_Intangibles"]
    shutil.copytree(trained.peft / "level1", ws.peft / "level1")
    fast.update(max_steps=2)
    out = train_level(ws, 2, per_topic=True, topics=topics, overrides=fast, progress=False)
    assert out == [ws.peft / "ASC_Intangibles", ws.peft / "ASC_Leases"]  # dataset order
    assert not (ws.peft / "level2").exists()
    for folder in out:
        record = summary(folder)
        assert record["topic"] == folder.name and record["dataset"]["topics"] == [folder.name]
        assert [Path(e["path"]).name for e in record["levels_below"]] == ["level1"]
        assert (folder / "adapter.gguf").is_file() and record["metrics"]["steps"] == 2


def test_dora_trains_but_says_it_cannot_become_gguf(ws, fast, capsys):
    fast.update(max_steps=2)
    (folder,) = train_level(ws, 1, peft="dora", overrides=fast, max_train_samples=8, progress=False)
    assert json.loads((folder / "adapter_config.json").read_text())["use_dora"] is True
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "adapter.gguf").exists()
    assert summary(folder)["gguf"]["note"] == DORA_MESSAGE
    assert DORA_MESSAGE in capsys.readouterr().out


@pytest.mark.parametrize("bits", ["int4", "int8"])
def test_quantized_training_on_cpu_is_a_clear_error(ws, bits):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(StrataError, match=f"--quantization {bits} .*needs a CUDA GPU.*--quantization none"):
        train_level(ws, 1, quantization=bits, progress=False)


def test_missing_dataset_says_to_build_it(workspace, tiny_base):
    from strata.settings import Settings

    settings = Settings.resolve(workspace=workspace.workspace, base_model=str(tiny_base))
    with pytest.raises(StrataError, match="run `strata build dataset` first"):
        train_level(settings, 1, progress=False)


def test_cli_seed_alias_trains_level1(ws, tiny_base, monkeypatch):
    from strata.cli import main

    monkeypatch.setenv("BASE_MODEL", str(tiny_base))
    monkeypatch.setenv("N_THREADS", "1")
    result = CliRunner().invoke(main, ["build", "train_level1", "--workspace", str(ws.workspace), "--max-steps", "2",
                                       "--max-train-samples", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"wrote {ws.peft / 'level1'}" in result.output
    assert summary(ws.peft / "level1")["metrics"]["steps"] == 2
    assert (ws.peft / "level1" / "adapter.gguf").is_file()
    shutil.rmtree(ws.peft / "level1")
    failed = CliRunner().invoke(main, ["build", "train_level2", "--workspace", str(ws.workspace)])
    assert failed.exit_code == 1
    assert "Error: " in failed.output and "train level 1 first (strata build train --level 1)" in failed.output


def test_empty_validation_set_trains_without_eval(ws, fast):
    """A small dataset can hold no held-out sections: training goes on and records no eval loss."""
    ws.val_jsonl.write_text("")
    fast.update(max_steps=2)
    (folder,) = train_level(ws, 1, overrides=fast, max_train_samples=8, progress=False)
    metrics = summary(folder)["metrics"]
    assert metrics["steps"] == 2 and metrics["eval_loss_after"] is None
    assert (folder / "adapter.gguf").is_file()
