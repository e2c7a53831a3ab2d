"""The install is real: llama.cpp's own converter turns the tiny base into a GGUF whose logits match HF."""

from __future__ import annotations

from strata.export.fidelity import gguf_logits, hf_reference, relative_error, top1_agreement


def test_f16_gguf_logits_match_hf(tiny_base, base_gguf):
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(tiny_base)("A lessee classifies each lease at commencement.")["input_ids"]
    want = hf_reference(tiny_base, tokens)[0]
    got = gguf_logits(base_gguf, tokens)
    assert got.shape == want.shape
    assert relative_error(got, want) < 1e-2
    assert top1_agreement(got, want) == 1.0


def test_gguf_carries_chat_template_and_tokenizer(base_gguf):
    from gguf import GGUFReader

    reader = GGUFReader(base_gguf)
    template = reader.fields["tokenizer.chat_template"]
    assert "[INST]" in bytes(template.parts[template.data[0]]).decode()
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
