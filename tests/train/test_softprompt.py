"""Soft prompts trained for real (PEFT prompt tuning on the tiny base): the dir they write, the fidelity gate that
decides whether softprompt.gguf is written, the architecture refusal, the preset and the CLI's option checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from strata.modelfolder import fingerprint
from strata.errors import StrataError
from strata.serve.softprompts import GGUF_NAME, read_soft_prompt
from strata.train.softprompt import check_architecture, load_soft_preset, train_soft_prompt

pytestmark = pytest.mark.slow


def test_soft_prompt_dir_holds_peft_files_gguf_and_summary(soft_prompts, tiny_base):
    from safetensors.numpy import load_file

    folder = soft_prompts["lessee"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss.jsonl", "loss.png", GGUF_NAME,
                 "training_summary.json"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["base_fingerprint"] == fingerprint(tiny_base)
    assert summary["n_virtual_tokens"] == 8 and summary["n_embd"] == 256
    fid = summary["fidelity"]
    assert fid["passed"] and fid["relative_error"] < fid["max_relative_error"] == 1e-2
    assert fid["top1_agreement"] >= 0.9 and fid["positions"] > 10
    assert fid["relative_change_vs_base"] > 0.05  # the soft prompt really moves the logits it was checked on
    assert summary["metrics"]["steps"] > 0 and summary["metrics"]["seconds_per_epoch"] > 0
    losses = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
    assert len([r for r in losses if "loss" in r]) == summary["metrics"]["steps"]
    # the served matrix is exactly the PEFT one, in PEFT's order
    meta, matrix = read_soft_prompt(folder / GGUF_NAME)
    peft = load_file(folder / "adapter_model.safetensors")["prompt_embeddings"]
    np.testing.assert_array_equal(matrix, peft.astype(np.float32))
    assert meta["base_fingerprint"] == summary["base_fingerprint"] and meta["architecture"] == "llama"


def test_fidelity_gate_failing_writes_no_gguf(tiny_base, base_gguf, tmp_path):
    from strata.settings import Settings

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"Lease number {i} conveys control of an asset."}) + "\n"
                            for i in range(4)))
    settings = Settings.resolve(workspace=str(tmp_path / "ws"), base_model=str(tiny_base), n_threads=2, env={})
    with pytest.raises(StrataError, match="does not match HF PEFT") as info:
        train_soft_prompt(settings, "strict", train_files=[rows], gguf=base_gguf, progress=False,
                          overrides={"n_virtual_tokens": 4, "max_steps": 2, "max_relative_error": 1e-12})
    folder = tmp_path / "ws" / "soft_prompts" / "strict"
    assert "no softprompt.gguf was written" in str(info.value)
    assert not (folder / GGUF_NAME).exists()
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["fidelity"]["passed"] is False and summary["gguf"]["path"] is None
    assert 0 < summary["fidelity"]["relative_error"] < 1e-2  # it would have passed the real bound


@pytest.mark.parametrize("config", [{"model_type": "gemma"}, {"model_type": "gemma3_text"},
                                    {"model_type": "granite", "embedding_multiplier": 12.0},
                                    {"model_type": "bart", "scale_embedding": True}])
def test_bases_that_scale_input_embeddings_are_refused_in_one_line(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(StrataError) as info:
        check_architecture(tmp_path)
    assert "\n" not in str(info.value) and "scales or transforms input embeddings" in str(info.value)


def test_llama_base_is_accepted(tiny_base):
    check_architecture(tiny_base)


def test_presets_load():
    assert load_soft_preset(None).n_virtual_tokens == 20
    assert load_soft_preset("soft_prompts/random").init == "random"
    with pytest.raises(StrataError, match="unknown key"):
        load_soft_preset(None, rank=4)


def test_cli_refuses_lora_only_options_and_bad_names(workspace):
    from strata.cli import main as cli

    runner = CliRunner()
    result = runner.invoke(cli, ["build", "train", "--soft-prompt", "x", "--per-topic"])
    assert result.exit_code != 0 and "--per-topic apply to LoRA levels" in result.output
    result = runner.invoke(cli, ["build", "train", "--soft-prompt", "../x"])
    assert result.exit_code == 1 and "must be letters, digits" in result.output


def test_train_files_are_read_like_a_levels_and_a_bad_row_names_its_line(workspace, tmp_path):
    """--train-files takes globs and .json lists (the level reader's), and a row of no known shape is one line naming
    file:line and the keys it found, before any model is loaded."""
    from strata.train.softprompt import _records

    good = tmp_path / "rows"
    good.mkdir()
    (good / "a.jsonl").write_text(json.dumps({"question": "q1", "answer": "a1"}) + "\n\n"
                                  + json.dumps({"prompt": "q2", "response": "a2"}) + "\n")
    (good / "b.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "q3"},
                                                           {"role": "assistant", "content": "a3"}]}]))
    rows, val, sources = _records(workspace, [good / "*"], load_soft_preset(None), None)
    assert len(rows) == 3 and val == [] and sources["train"] == [str(good / "a.jsonl"), str(good / "b.json")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n" + json.dumps({"query": "q", "reply": "a"}) + "\n")
    with pytest.raises(StrataError) as info:
        _records(workspace, [bad], load_soft_preset(None), None)
    assert str(info.value).startswith(f"{bad}:2: a soft-prompt row needs") and "['query', 'reply']" in str(info.value)
    with pytest.raises(StrataError, match="matched no .jsonl or .json file"):
        _records(workspace, [tmp_path / "nothing*.jsonl"], load_soft_preset(None), None)
