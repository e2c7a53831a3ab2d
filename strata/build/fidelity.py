"""Logit comparisons between an HF model and a GGUF served by llama.cpp: what we serve is what we trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want|| over whole logit matrices."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def top1_agreement(got: np.ndarray, want: np.ndarray) -> float:
    """Share of positions whose arg-max token is the same."""
    return float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))


def hf_logits(model_dir: Path, tokens: list[int]) -> np.ndarray:
    """Logits [n_tokens, vocab] of an HF causal LM (fp32, CPU) for one token sequence."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def gguf_logits(model_path: Path, tokens: list[int], lora: list[tuple[Path, float]] = (), n_threads: int = 2) -> np.ndarray:
    """Logits [n_tokens, vocab] from llama.cpp for one token sequence, optionally with GGUF LoRAs applied."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=max(64, len(tokens) + 8), logits_all=True,
                          n_threads=n_threads, n_batch=max(64, len(tokens)), verbose=False)
    try:
        with suppress_stdout_stderr():  # llama.cpp logs a harmless CPU_REPACK fallback per tensor at error level
            adapters = [llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode()) for path, _ in lora]
        if lora:
            if not all(adapters):
                raise ValueError(f"llama.cpp could not load one of {[str(p) for p, _ in lora]}")
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
            scales = (llama_cpp.ctypes.c_float * len(adapters))(*[s for _, s in lora])
            llama_cpp.llama_set_adapters_lora(llm.ctx, array, len(adapters), scales)
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()
