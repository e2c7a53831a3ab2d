"""Training options: --dry-run, --resume-from auto, --per-topic, DoRA, QLoRA on CPU, presets, the CLI alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.errors import StrataError
from strata.export.adapter_gguf import DORA_MESSAGE
from strata.train.trainer import train_level


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
    train_level(ws, 1, overrides=fast, max_train_samples=10, dry_run=True, progress=False, nproc=2)
    assert "12 steps x 4 blocks (2 x 1 accumulation x 2 processes)" in capsys.readouterr().out
    assert tree(ws.workspace) == before


def _losses(folder: Path) -> list[float]:
    return [row["loss"] for row in map(json.loads, (folder / "loss.jsonl").read_text().splitlines()) if "loss" in row]


def test_killed_run_resumes_from_its_last_checkpoint(ws, fast, preset_file, strata_env, tmp_path):
    """`strata build train` killed after its first checkpoint, then run again with --resume-from auto, ends as an
    uninterrupted run does: same optimiser steps, the loss curve continues, the same weights."""
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from strata.settings import Settings
    from strata.train.resume import latest_checkpoint

    fast.update(max_steps=12, save_steps=3)
    preset = preset_file(fast)
    reference = Settings.resolve(workspace=tmp_path / "reference", base_model=str(ws.base_model), n_threads=1)
    shutil.copytree(ws.processed, reference.processed)
    train_level(reference, 1, preset=str(preset), max_train_samples=16, progress=False)
    folder = ws.peft / "level1"
    command = [sys.executable, "-m", "strata", "build", "train", "--workspace", str(ws.workspace), "--preset",
               str(preset), "--max-train-samples", "16", "--no-progress"]
    proc = subprocess.Popen(command, env=strata_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while latest_checkpoint(folder) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    killed_at = int(latest_checkpoint(folder).name.split("-")[1])
    assert killed_at < 12 and not (folder / "training_summary.json").exists()  # really cut short
    done = subprocess.run(command + ["--resume-from", "auto"], env=strata_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming from {folder / 'checkpoints' / f'checkpoint-{killed_at}'} at step {killed_at} of 12" in done.stdout
    metrics = summary(folder)["metrics"]
    assert metrics["resumed_from_step"] == killed_at and metrics["steps"] == 12
    assert _losses(folder) == pytest.approx(_losses(reference.peft / "level1"), rel=1e-4)
    assert len(_losses(folder)) == 12
    resumed, whole = load_file(folder / "adapter_model.safetensors"), load_file(
        reference.peft / "level1" / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys()
    for key, tensor in whole.items():
        assert resumed[key].allclose(tensor, atol=1e-5), key
    fast.update(max_steps=8)
    with pytest.raises(StrataError, match="belongs to a different run"):
        train_level(ws, 1, overrides=fast, max_train_samples=16,
                    resume_from=str(folder / "checkpoints" / f"checkpoint-{killed_at}"), progress=False)
    with pytest.raises(StrataError, match="is not a finished checkpoint"):
        train_level(ws, 1, overrides=fast, resume_from=str(tmp_path), progress=False)


def test_preset_trainer_mapping_reaches_training_arguments(ws, fast, preset_file):
    """A preset's `trainer:` passes any other TrainingArguments field; strata's own keys and typos are refused."""
    fast.update(max_steps=4, save_steps=1, trainer={"lr_scheduler_type": "constant", "save_total_limit": 2})
    (folder,) = train_level(ws, 1, preset=str(preset_file(fast)), max_train_samples=8, progress=False)
    assert summary(folder)["training_arguments"]["save_total_limit"] == 2
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    rates = {row["lr"] for row in map(json.loads, (folder / "loss.jsonl").read_text().splitlines()) if "lr" in row}
    assert rates == {fast["lr"]}
    for trainer, message in (({"learning_rate": 1.0}, "use the preset key lr"),
                             ({"learnig_rate": 1.0}, "'learnig_rate' is not a transformers.TrainingArguments field"),
                             ({"lr_scheduler_type": "zigzag"}, "rejected by transformers.TrainingArguments")):
        with pytest.raises(StrataError, match=message):
            train_level(ws, 1, preset=str(preset_file(fast | {"trainer": trainer}, "bad.yaml")), progress=False)


def test_two_processes_train_data_parallel_like_one(ws, fast, preset_file, strata_env, tmp_path):
    """torchrun with 2 CPU processes (gloo) and half the per-device batch trains what one process does with the
    whole batch: the same files, one writer, and an eval loss within a small tolerance."""
    import subprocess
    import sys

    from strata.settings import Settings

    fast.update(max_steps=6, batch_size=4, dropout=0.0)
    single = Settings.resolve(workspace=tmp_path / "single", base_model=str(ws.base_model), n_threads=1)
    shutil.copytree(ws.processed, single.processed)
    train_level(single, 1, overrides=fast, max_train_samples=24, progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "strata", "build", "train", "--workspace", str(ws.workspace), "--max-train-samples", "24",
               "--preset", str(preset_file(fast | {"batch_size": 2})), "--no-progress"]
    done = subprocess.run(command, env=strata_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"wrote {ws.peft / 'level1'}") == 1  # rank 0 only
    one, two = single.peft / "level1", ws.peft / "level1"
    assert {p.name for p in one.iterdir()} == {p.name for p in two.iterdir()}
    a, b = summary(one), summary(two)
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["metrics"]["steps"] == b["metrics"]["steps"] == 6
    assert a["metrics"]["tokens_seen"] == b["metrics"]["tokens_seen"]  # the same global batches
    assert b["metrics"]["eval_loss_after"] == pytest.approx(a["metrics"]["eval_loss_after"], rel=2e-3)
    from safetensors.torch import load_file

    lora_b = [t for name, t in load_file(two / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and max(float(t.abs().max()) for t in lora_b) > 0  # it trained: PEFT starts every lora_B at zero
    assert (two / "adapter.gguf").is_file()


def test_nproc_inside_a_launcher_is_refused(ws, fast, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StrataError, match="--nproc starts its own processes; drop it when launching with torchrun"):
        train_level(ws, 1, overrides=fast, nproc=2, progress=False)


def test_a_failure_on_one_rank_stops_every_rank(ws, strata_env):
    """Rank 0 fails (its adapter dir is a file) while rank 1 waits for it: the launch ends with an error."""
    import subprocess
    import sys

    ws.peft.mkdir(parents=True, exist_ok=True)
    (ws.peft / "level1").write_text("not a dir")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "strata",
               "build", "train", "--workspace", str(ws.workspace), "--max-steps", "2", "--max-train-samples", "8",
               "--no-progress"]
    done = subprocess.run(command, env=strata_env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "is a file, not an adapter dir" in done.stdout + done.stderr
    assert (ws.peft / "level1").read_text() == "not a dir"


def test_max_train_samples_caps_each_topic_layer_and_drops_none(ws, fast, capsys):
    """--max-train-samples caps each adapter's records after the split by topic: with a cap below the first topic's
    record count every topic still gets its layer, each planned on `cap` records."""
    records = [json.loads(line) for line in ws.train_jsonl.read_text().splitlines()]
    topics = list(dict.fromkeys(r["topic"] for r in records))
    cap = 3
    assert len(topics) > 1 and min(sum(r["topic"] == t for r in records) for t in topics) > cap
    out = train_level(ws, 1, per_topic=True, overrides=fast, max_train_samples=cap, dry_run=True, progress=False)
    assert out == [ws.peft / topic for topic in topics]
    printed = capsys.readouterr().out
    assert all(f"{topic}: {cap} records ->" in printed for topic in topics), printed


def test_per_topic_layers_train_one_adapter_per_topic_on_the_levels_below(ws, trained, fast, tmp_path):
    """Sequentially, then with --nproc 2 (two worker processes, one topic each): the same dirs and files, and the
    same weights, since each topic trains alone either way."""
    from safetensors.torch import load_file

    from strata.settings import Settings

    topics = ["ASC_Leases", "ASC_Intangibles"]
    parallel = Settings.resolve(workspace=tmp_path / "parallel", base_model=str(ws.base_model), n_threads=1)
    shutil.copytree(ws.processed, parallel.processed)
    for settings in (ws, parallel):
        shutil.copytree(trained.peft / "level1", settings.peft / "level1")
    fast.update(max_steps=2)
    out = train_level(ws, 2, per_topic=True, topics=topics, overrides=fast, progress=False)
    assert out == [ws.peft / "ASC_Intangibles", ws.peft / "ASC_Leases"]  # dataset order
    assert not (ws.peft / "level2").exists()
    for folder in out:
        record = summary(folder)
        assert record["topic"] == folder.name and record["dataset"]["topics"] == [folder.name]
        assert [Path(e["path"]).name for e in record["levels_below"]] == ["level1"]
        assert (folder / "adapter.gguf").is_file() and record["metrics"]["steps"] == 2
    side = train_level(parallel, 2, per_topic=True, topics=topics, overrides=fast, progress=False, nproc=2)
    assert [p.name for p in side] == [p.name for p in out]
    for seq, par in zip(out, side):
        assert {p.name for p in seq.iterdir()} == {p.name for p in par.iterdir()}
        assert summary(par)["metrics"]["steps"] == 2 and summary(par)["topic"] == seq.name
        a, b = load_file(seq / "adapter_model.safetensors"), load_file(par / "adapter_model.safetensors")
        assert all(a[k].allclose(b[k], atol=1e-6) for k in a), seq.name


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


def test_empty_validation_set_trains_without_eval(ws, fast, preset_file):
    """A small dataset can hold no held-out sections: training goes on and records no eval loss. Epoch-based, the
    run takes the steps the plan (and --dry-run) counts."""
    from strata.train.trainargs import planned_steps
    from strata.train.trainconfig import TrainPreset

    ws.val_jsonl.write_text("")
    del fast["max_steps"]
    fast.update(epochs=0.25)
    (folder,) = train_level(ws, 1, preset=str(preset_file(fast)), max_train_samples=8, progress=False)
    record = summary(folder)
    metrics = record["metrics"]
    assert metrics["steps"] == planned_steps(record["dataset"]["blocks"], TrainPreset(**record["hyperparameters"])) > 1
    assert metrics["eval_loss_after"] is None and metrics["eval_loss_before"] is None
    assert (folder / "adapter.gguf").is_file()
