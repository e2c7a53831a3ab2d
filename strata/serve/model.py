"""The served GGUF: one llama.cpp model and one context holding `parallel` sequences, plus vocab helpers."""

from __future__ import annotations

import ctypes
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from strata.serve.config import ServeConfig


@contextmanager
def quiet_llama(verbose: bool) -> Iterator[None]:
    """Silence llama-cpp-python's log relay for a moment (llama.cpp reports its harmless CPU_REPACK fallback per
    tensor at error level while an adapter loads). Unlike fd redirection this is safe beside other threads."""
    logger = logging.getLogger("llama-cpp-python")
    before = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(before)


def set_adapters(ctx: Any, lora: Any) -> bool:
    """Put an adapter set ((adapter, scale) pairs; empty: none) on a llama.cpp context; False if llama.cpp refused."""
    import llama_cpp

    n = len(lora)
    if not n:
        return llama_cpp.llama_set_adapters_lora(ctx, None, 0, None) == 0
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*[a.handle for a, _ in lora])
    scales = (ctypes.c_float * n)(*[s for _, s in lora])
    return llama_cpp.llama_set_adapters_lora(ctx, handles, n, scales) == 0


@dataclass
class LoadedModel:
    """llama.cpp handles and what the scheduler needs to know about them. Close it once, from one thread."""

    model: Any  # llama_cpp._internals.LlamaModel
    context: Any  # llama_cpp._internals.LlamaContext
    n_vocab: int
    n_ctx_seq: int  # tokens one request may use (prompt + completion)
    n_batch: int
    parallel: int
    metadata: dict[str, str]
    kv_unified: bool = False  # one KV stream for all sequences (else one stream per sequence)
    # llama.cpp keeps the model's adapters in a set that loading/freeing an adapter changes and that a context
    # reads when it re-reserves its graph (the first decode after an adapter-set change): hold this for those.
    adapters_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, config: ServeConfig) -> "LoadedModel":
        """Load config.model with a context of `parallel` sequences of `n_ctx` tokens each (KV split per sequence)."""
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        from strata.serve.errors import ApiError

        set_verbose(config.verbose)  # llama.cpp's INFO/DEBUG lines only with --verbose
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = config.n_gpu_layers
        try:
            with quiet_llama(config.verbose):
                model = _internals.LlamaModel(path_model=str(config.model), params=model_params,
                                              verbose=config.verbose)
        except ValueError as exc:
            raise ApiError(422, f"llama.cpp could not load {config.model} ({exc}); check that it is a GGUF model "
                                "file (strata build convert writes one) and start with --verbose true for "
                                "llama.cpp's reason.") from None
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx * config.parallel
        params.n_batch = params.n_ubatch = config.n_batch
        params.n_seq_max = config.parallel
        params.n_threads = params.n_threads_batch = config.n_threads
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        # False (default): each sequence owns n_ctx cells and attends only over its own stream; the scheduler
        # orders each batch by sequence id so that llama.cpp keeps the slots of one set in one ubatch
        params.kv_unified = config.kv_unified
        params.no_perf = True  # llama_perf_context still counts reused graphs (n_reused), which /metrics reports
        try:
            context = _internals.LlamaContext(model=model, params=params, verbose=config.verbose)
        except ValueError:
            model.close()
            raise ApiError(422, f"llama.cpp could not create a context of {config.parallel} x {config.n_ctx} "
                                "tokens; lower --parallel or --n_ctx.") from None
        return cls(model=model, context=context, n_vocab=llama_cpp.llama_vocab_n_tokens(model.vocab),
                   n_ctx_seq=min(config.n_ctx, llama_cpp.llama_n_ctx_seq(context.ctx)), n_batch=config.n_batch, parallel=config.parallel,
                   metadata=model.metadata(), kv_unified=config.kv_unified)

    @property
    def ctx(self) -> Any:
        return self.context.ctx

    @property
    def vocab(self) -> Any:
        return self.model.vocab

    @property
    def memory(self) -> Any:
        return self.context.memory

    @property
    def bos(self) -> int:
        return self.model.token_bos()

    @property
    def eos(self) -> int:
        return self.model.token_eos()

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Text -> token ids (BOS added when the vocab asks for it and `add_bos`)."""
        data = text.encode("utf-8", "surrogatepass")
        return self.model.tokenize(data, add_bos and self.model.add_bos_token(), special)

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes one token stands for (a SentencePiece word piece keeps its leading space)."""
        import llama_cpp

        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.model.token_get_text(token)

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def valid_token(self, token: int) -> bool:
        return 0 <= token < self.n_vocab

    def close(self) -> None:
        """Free the context, then the model (llama.cpp frees any adapters still attached with it)."""
        self.context.close()
        self.model.close()
