"""SmolLM2 from its wheel: the rebuilt HF folder, the cache, and its F16 GGUF against the shipped Q4_1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.real_model

TEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
        "\"La dame de fer\", it was constructed as the centerpiece of the 1889 World's Fair, and to crown the "
        "centennial anniversary of the French Revolution. Although initially criticised by some of France's leading "
        "artists and intellectuals for its design, it has since become a global cultural icon of France and one of "
        "the most recognisable structures in the world.")


def test_real_base_writes_a_trainable_hf_folder(real_cache: Path, real_hf: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from strata.cli import main

    dest = tmp_path / "hf_base"
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the second run needs no index
    result = CliRunner().invoke(main, ["kit", "real-base", str(dest)])
    assert result.exit_code == 0, result.output
    assert "rebuilding" not in result.output and "downloading" not in result.output  # all from the cache
    config = AutoConfig.from_pretrained(dest)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == ("llama", 30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(dest)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in chat and chat.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer(TEXT)["input_ids"]) == TEXT
    record = json.loads((dest / "strata_kit.json").read_text())
    assert record["dequantized_from"] == "Q4_1" and "not the original bf16" in record["provenance"]
    assert list(dest.glob("*.safetensors")) and not list(tmp_path.glob(".hf_base-*"))


def test_rebuilt_f16_matches_shipped_q4_1(real_cache: Path, real_hf: Path, real_f16: Path, tmp_path: Path) -> None:
    """The rebuild is the shipped weights, dequantized: its F16 GGUF must be closer to the shipped Q4_1 than a fresh
    4-bit quantization of the same weights is (Q4_0 of the F16: the size of a 4-bit quantization error here)."""
    from transformers import AutoTokenizer

    from strata.export.fidelity import gguf_logits, relative_error, top1_agreement
    from strata.export.quantize import quantize_gguf
    from strata.kit.real_base import shipped_gguf

    tokens = AutoTokenizer.from_pretrained(real_hf)(TEXT)["input_ids"]
    shipped = gguf_logits(shipped_gguf(echo=lambda _: None), tokens)
    rebuilt = gguf_logits(real_f16, tokens)
    q4_0 = quantize_gguf(real_f16, tmp_path / "requant-q4_0.gguf", "Q4_0", 2, 600)
    requant = gguf_logits(q4_0, tokens)
    err, top1 = relative_error(rebuilt, shipped), top1_agreement(rebuilt, shipped)
    scale, scale_top1 = relative_error(requant, rebuilt), top1_agreement(requant, rebuilt)
    print(f"\nrebuilt F16 vs shipped Q4_1 on {len(tokens)} tokens: relative error {err:.4f}, top-1 agreement {top1:.3f}; "
          f"Q4_0 of the F16 vs the F16: relative error {scale:.4f}, top-1 {scale_top1:.3f}")
    assert np.isfinite(rebuilt).all()
    assert err < 0.5 * scale  # well inside a 4-bit quantization's error
    assert top1 >= 0.9
