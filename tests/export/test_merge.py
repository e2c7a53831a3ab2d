"""`strata build merge`: levels merged in order into a fresh fp32 base, every file written, atomically."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from strata.cli import main as cli
from strata.errors import StrataError
from strata.export.merge import merge_levels

TEXT = "Revenue is recognised when control transfers to the customer."


def _logits(model, tokenizer):
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokenizer(TEXT)["input_ids"]])).logits[0].numpy()


def test_merge_writes_every_file_and_equals_base_plus_both_deltas(two_levels, tiny_base, lora_dirs):
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge_levels(two_levels, echo=lambda _: None)
    assert out == two_levels.merged
    for name in ("model.safetensors", "config.json", "tokenizer.model", "tokenizer_config.json", "merge_record.json"):
        assert (out / name).is_file(), name
    assert (out / "tokenizer.model").read_bytes() == (tiny_base / "tokenizer.model").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "[INST]" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    record = json.loads((out / "merge_record.json").read_text())
    assert [entry["level"] for entry in record["levels"]] == [1, 2]
    assert all(len(entry["adapter_sha256"]) == 64 for entry in record["levels"])
    assert record["dtype"] == "float32" and record["base_fingerprint"]

    # Independent reference: PEFT applying both adapters at once (LoRA deltas add up).
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                           lora_dirs["alpha"], adapter_name="alpha")
    peft_model.load_adapter(lora_dirs["beta"], adapter_name="beta")
    peft_model.base_model.set_adapter(["alpha", "beta"])
    want = _logits(peft_model, tokenizer)
    got = _logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), tokenizer)
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), tokenizer)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    assert np.abs(base - want).max() > 0.1 * np.abs(want).max()  # the merge really changed the weights


def test_merge_one_chosen_level_via_seed_alias(two_levels, lora_dirs, tiny_base):
    result = CliRunner().invoke(cli, ["build", "merge_level", "--levels", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((two_levels.merged / "merge_record.json").read_text())
    assert [entry["level"] for entry in record["levels"]] == [1]
    assert "wrote" in result.output


def test_no_levels_says_train_first(on_tiny_base):
    with pytest.raises(StrataError, match="train a level first"):
        merge_levels(on_tiny_base)
    result = CliRunner().invoke(cli, ["build", "merge", "--levels", "2"])
    assert result.exit_code == 1 and "train a level first" in result.output


def test_failed_merge_keeps_previous_merged_dir(two_levels):
    merge_levels(two_levels, [1], echo=lambda _: None)
    before = (two_levels.merged / "model.safetensors").read_bytes()
    (two_levels.peft / "level2" / "adapter_model.safetensors").write_bytes(b"broken")
    with pytest.raises(StrataError, match="level2"):
        merge_levels(two_levels, [1, 2], echo=lambda _: None)
    assert (two_levels.merged / "model.safetensors").read_bytes() == before
    assert [p.name for p in two_levels.peft.iterdir() if p.name.startswith(".merged")] == []


def test_qlora_level_is_merged_into_a_full_precision_base(two_levels, tiny_base):
    from strata.modelfolder import fingerprint

    summary = {"level": 1, "peft": "lora", "quantization": "int4", "base_fingerprint": fingerprint(tiny_base),
               "levels_below": []}
    (two_levels.peft / "level1" / "training_summary.json").write_text(json.dumps(summary))
    lines: list[str] = []
    merge_levels(two_levels, [1], echo=lines.append)
    assert any("QLoRA (int4)" in line and "16/32-bit" in line for line in lines)
    assert json.loads((two_levels.merged / "config.json").read_text()).get("quantization_config") is None


def test_level_trained_on_other_levels_is_refused(two_levels, tiny_base):
    from strata.modelfolder import fingerprint

    summary = {"level": 2, "base_fingerprint": fingerprint(tiny_base), "levels_below": [{"adapter_sha256": "x" * 64}]}
    (two_levels.peft / "level2" / "training_summary.json").write_text(json.dumps(summary))
    with pytest.raises(StrataError, match="merge the levels it was trained on"):
        merge_levels(two_levels, [2])


def test_dora_level_merges(on_tiny_base, tiny_base):
    import numpy as np
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True,
                                      init_lora_weights=False))
    model.save_pretrained(on_tiny_base.peft / "level1")
    out = merge_levels(on_tiny_base, echo=lambda _: None)
    tokenizer = AutoTokenizer.from_pretrained(out)
    want = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                             on_tiny_base.peft / "level1"), tokenizer)
    got = _logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), tokenizer)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
