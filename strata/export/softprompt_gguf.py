"""A trained soft prompt as the server's artifact (softprompt.gguf, written with gguf-py: the n_virtual x n_embd
float32 matrix plus metadata), and llama.cpp's logits with that matrix injected as an embedding batch, for the
fidelity check against HF PEFT."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from strata.serve import softprompts as sp
from strata.serve.adapters import FINGERPRINT_KEY


def write_soft_prompt_gguf(matrix: np.ndarray, out: Path, *, architecture: str, base_fingerprint: str, name: str,
                           extra: dict[str, str] | None = None) -> Path:
    """Write `matrix` [n_virtual, n_embd] as a GGUF (general.type softprompt) at `out`, atomically."""
    import gguf

    rows = np.ascontiguousarray(matrix, dtype=np.float32)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), architecture)
    try:
        writer.add_type(sp.TYPE)
        writer.add_name(name)
        writer.add_string(sp.KEY_NAME, name)
        writer.add_uint32(sp.KEY_N_VIRTUAL, rows.shape[0])
        writer.add_uint32(sp.KEY_N_EMBD, rows.shape[1])
        writer.add_string(FINGERPRINT_KEY, base_fingerprint)
        for key, value in (extra or {}).items():
            writer.add_string(key, value)
        writer.add_tensor(sp.TENSOR, rows)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


def gguf_architecture(model: Path) -> str:
    """general.architecture of a GGUF model."""
    from strata.export.adapter_gguf import read_metadata

    return str(read_metadata(model, "general.architecture") or "")


def injected_logits(model: Path, matrix: np.ndarray, prompts: list[list[int]], n_threads: int = 2) -> list[np.ndarray]:
    """For each token list: llama.cpp's logits [n_tokens, vocab] with the soft prompt's rows decoded first at
    positions 0..k-1 (the serving path: strata.serve.softprompts.Prefill), then the tokens at k.."""
    import llama_cpp

    from strata.export.gguf_load import open_model

    k = matrix.shape[0]
    longest = max(len(p) for p in prompts)
    n_batch = max(64, k, longest)
    llm = open_model(model, n_ctx=k + longest + 8, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads)
    prefill = sp.Prefill(n_batch, int(llama_cpp.llama_model_n_embd_inp(llm.model)))
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
        out = []
        for tokens in prompts:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
            if prefill.decode(llm.ctx, matrix, 0, 0) != 0:
                raise RuntimeError("llama_decode of the soft prompt's embedding batch failed")
            _decode_tokens(batch, llm.ctx, tokens, k)
            out.append(np.array([np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, i), (n_vocab,))
                                 for i in range(len(tokens))], dtype=np.float32))
        return out
    finally:
        llama_cpp.llama_batch_free(batch)
        prefill.close()
        llm.close()


def compare(model: Path, matrix: np.ndarray, prompts: list[list[int]], want: list[np.ndarray],
            plain: list[np.ndarray], n_threads: int = 2) -> dict[str, float]:
    """llama.cpp's injected logits on `model` against HF PEFT's (`want`, per prompt) over every position: relative
    error and top-1 agreement; and how far the soft prompt moves HF's logits from the base's (`plain`)."""
    from strata.export.fidelity import relative_error, top1_agreement

    got, w, p = (np.concatenate(x) for x in (injected_logits(model, matrix, prompts, n_threads), want, plain))
    return {"relative_error": relative_error(got, w), "top1_agreement": top1_agreement(got, w),
            "relative_change_vs_base": relative_error(p, w)}


def _decode_tokens(batch: Any, ctx: Any, tokens: list[int], pos0: int) -> None:
    import llama_cpp

    for j, token in enumerate(tokens):
        batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, pos0 + j, 1
        batch.seq_id[j][0], batch.logits[j] = 0, True
    batch.n_tokens = len(tokens)
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode of the prompt tokens failed")
