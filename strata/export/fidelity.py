"""Logit comparisons between an HF model and a GGUF served by llama.cpp: what we serve is what we trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want|| over whole logit matrices."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def top1_agreement(got: np.ndarray, want: np.ndarray) -> float:
    """Share of positions whose arg-max token is the same."""
    return float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))


def reference_attention(config: Any) -> str | None:
    """The attention implementation an HF reference must use: soft-capped attention (Gemma 2 and kin) is exact only
    in transformers' eager path; None leaves transformers' own default (sdpa where the family supports it)."""
    return "eager" if getattr(config.get_text_config(), "attn_logit_softcapping", None) else None


def hf_reference(model_dir: Path, tokens: list[int]) -> tuple[np.ndarray, str]:
    """(logits [n_tokens, vocab], attention implementation used) of an HF causal LM, fp32 on CPU."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    attention = reference_attention(AutoConfig.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 **({"attn_implementation": attention} if attention else {}))
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy(), model.config._attn_implementation


def gguf_logits(model_path: Path, tokens: list[int], lora: list[tuple[Path, float]] = (), n_threads: int = 2) -> np.ndarray:
    """Logits [n_tokens, vocab] from llama.cpp for one token sequence, optionally with GGUF LoRAs applied.
    A file llama.cpp refuses is a StrataError in its words (strata.export.gguf_load)."""
    from strata.export.gguf_load import apply_loras, open_model

    llm = open_model(model_path, n_ctx=max(64, len(tokens) + 8), logits_all=True, n_threads=n_threads,
                     n_batch=max(64, len(tokens)))
    try:
        apply_loras(llm, list(lora))
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()
