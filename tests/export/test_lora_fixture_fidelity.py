"""A GGUF LoRA applied by llama.cpp on the base GGUF gives the merged PEFT model's logits."""

from __future__ import annotations

import pytest

from strata.export.fidelity import gguf_logits, hf_reference, relative_error


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_gguf_lora_matches_merged_peft(name, lora_dirs, tiny_base, base_gguf, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                       lora_dirs[name]).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokens = AutoTokenizer.from_pretrained(tiny_base)("Revenue is recognised when control transfers.")["input_ids"]
    want = hf_reference(tmp_path / "merged", tokens)[0]
    got = gguf_logits(base_gguf, tokens, lora=[(lora_dirs[name] / "adapter.gguf", 1.0)])
    base = gguf_logits(base_gguf, tokens)
    assert relative_error(got, want) < 1e-2
    assert relative_error(base, want) > 0.05  # the adapter really changes the model
