"""Dry runs check what a real run would hit, writing nothing: TrainingArguments (a `trainer:` typo named), the data
collator and one batch, the resume checkpoint; `strata build all --dry-run` plans every stage with its steps."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.cli import main as cli
from strata.errors import StrataError
from strata.train.trainer import train_level


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def test_train_dry_run_builds_the_arguments_the_collator_and_one_batch(ws, fast, capsys):
    before = tree(ws.workspace)
    train_level(ws, 1, overrides=fast, max_train_samples=10, dry_run=True, progress=False)
    printed = capsys.readouterr().out
    assert "level1: dry run: TrainingArguments ok (max_steps 12, lr 0.005, warmup 0)" in printed
    # two blocks flattened into one row with position-id resets (DataCollatorWithFlattening): examples kept apart
    shape = re.search(r"first batch: input_ids \[1, (\d+)\], labels \[1, \1\], position_ids \[1, \1\]; loss ", printed)
    assert shape and 2 < int(shape.group(1)) <= 2 * 64, printed
    loss = float(printed.split("; loss ")[1].split()[0].rstrip(";"))
    assert 0 < loss < 20  # a real forward pass of the tiny base on the collated batch
    assert tree(ws.workspace) == before


def test_dry_run_validates_the_resume_checkpoint(ws, fast, capsys):
    from strata.train.resume import checkpoints_dir

    fast.update(max_steps=4, save_steps=2)
    train_level(ws, 1, overrides=fast, max_train_samples=8, progress=False)
    capsys.readouterr()
    before = tree(ws.workspace)
    train_level(ws, 1, overrides=fast, max_train_samples=8, dry_run=True, resume_from="auto", progress=False)
    assert (f"would resume from {checkpoints_dir(ws.peft / 'level1') / 'checkpoint-4'} at step 4"
            in capsys.readouterr().out)
    with pytest.raises(StrataError, match="belongs to a different run.*total_steps"):
        train_level(ws, 1, overrides=fast | {"max_steps": 6}, max_train_samples=8, dry_run=True,
                    resume_from=str(checkpoints_dir(ws.peft / "level1") / "checkpoint-2"), progress=False)
    with pytest.raises(StrataError, match="is not a finished checkpoint"):
        train_level(ws, 1, overrides=fast, max_train_samples=8, dry_run=True, resume_from=str(ws.peft / "level1"),
                    progress=False)
    assert tree(ws.workspace) == before


def test_a_trainer_typo_fails_the_dry_run_with_the_field_name(ws, fast, preset_file):
    preset = preset_file(fast | {"trainer": {"save_total_limt": 2}})
    result = CliRunner().invoke(cli, ["build", "train", "--workspace", str(ws.workspace), "--preset", str(preset),
                                      "--dry-run", "--no-progress"], env={"BASE_MODEL": ws.base_model, "N_THREADS": "1"})
    assert result.exit_code == 1
    assert ("preset `trainer:` key 'save_total_limt' is not a transformers.TrainingArguments field (did you mean "
            "'save_total_limit'?)") in result.output
    assert not (ws.peft / "level1").exists()


def test_preference_dry_run_builds_dpo_config_and_one_batch(ws, tmp_path, capsys, preset_file):
    from strata.train.preferences import train_preferences

    from .test_preferences import FAST_DPO, write_prefs

    prefs = write_prefs(tmp_path / "prefs.jsonl")
    before = tree(ws.workspace)
    train_preferences(ws, 1, prefs, overrides=FAST_DPO, dry_run=True, progress=False)
    printed = capsys.readouterr().out
    assert "level1: dry run: DPOConfig ok (max_steps 16, lr 0.005" in printed
    assert "first batch: input_ids [4, " in printed and "completion_mask [4, " in printed  # 2 pairs: chosen + rejected
    # the fresh adapter is zero, so the policy equals its reference and the DPO loss is -log sigmoid(0) = ln 2
    assert float(printed.split("; loss ")[1].split()[0]) == pytest.approx(0.6931, abs=1e-3)
    assert tree(ws.workspace) == before
    bad = preset_file({"format": "chat", "dpo": {"betta": 0.2}}, "bad.yaml")
    with pytest.raises(StrataError, match=r"preset `dpo:` key 'betta' is not a field of trl.*\(did you mean 'beta'\?\)"):
        train_preferences(ws, 1, prefs, preset=str(bad), overrides=FAST_DPO, dry_run=True, progress=False)


@pytest.fixture
def kit_ws(ws, sample_pdfs, tmp_path, monkeypatch):
    """The dataset workspace with two kit topics' PDFs in data/raw_pdfs, no dataset yet, and a private presets copy."""
    for topic in ("ASC_Leases", "ASC_Intangibles"):
        shutil.copytree(sample_pdfs / topic, ws.raw_pdfs / topic)
    for path in (ws.train_jsonl, ws.val_jsonl):
        path.unlink()
    presets = tmp_path / "presets"
    shutil.copytree(Path(__file__).resolve().parents[2] / "presets", presets)
    monkeypatch.setenv("STRATA_PRESETS", str(presets))
    monkeypatch.setenv("BASE_MODEL", ws.base_model)
    monkeypatch.setenv("N_THREADS", "1")
    return ws, presets


def test_build_all_dry_run_plans_every_stage_and_writes_nothing(kit_ws, tmp_path):
    from .test_user_data import user_rows, write_jsonl

    settings, presets = kit_ws
    before = tree(settings.workspace)
    args = ["build", "all", "--workspace", str(settings.workspace), "--levels", "1,2", "--max-steps", "3", "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    names = ["pretest", "dataset", "index", "synthesize", "level1", "level2", "topics", "merge", "convert", "gate", "archive"]
    for number, name in enumerate(names, 1):
        assert f"[{number}/{len(names)}] {name}: would run" in out, out
    assert "[5/11] level1: would run (after dataset, synthesize)" in out and "missing: train, val" in out
    assert "steps: not counted yet" in out and "does not exist; training data: run `strata build dataset`" in out
    assert "dry run: 11 of 11 stages would run; nothing was run or written" in out
    assert tree(settings.workspace) == before

    rows = user_rows("messages", 9)  # user rows: every training stage is counted from them
    write_jsonl(tmp_path / "user" / "rows.jsonl", [r | {"topic": "mine"} for r in rows])
    result = CliRunner().invoke(cli, args + ["--train-files", str(tmp_path / "user" / "*.jsonl")])
    assert result.exit_code == 0, result.output
    assert "adapter level1: 9 records -> " in result.output and "tokens, 3 steps ->" in result.output
    assert "adapter mine: 9 records -> " in result.output  # the topic layer of the rows' topic
    assert f"in  userdata:levels/level2: ['{tmp_path / 'user' / 'rows.jsonl'}']" in result.output
    assert tree(settings.workspace) == before

    (presets / "levels" / "level2.yaml").write_text("format: chat\ntrainer: {lr_scheduler_typ: linear}\n")
    typo = CliRunner().invoke(cli, args)
    assert typo.exit_code == 1
    assert ("level 2 (levels/level2): preset `trainer:` key 'lr_scheduler_typ' is not a transformers.TrainingArguments "
            "field (did you mean 'lr_scheduler_type'?)") in typo.output
    assert json.dumps(tree(settings.workspace)) == json.dumps(before)
