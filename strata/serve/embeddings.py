"""/v1/embeddings: a second llama.cpp context on the served model (embeddings pooled per sequence), made on first
use. Each input is one piece of side work on the decode thread, run between two decode steps: generation slots wait
at most one input's decode, and the two contexts never fight over the CPU cores."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from strata.serve.config import ServeConfig
from strata.serve.errors import ApiError
from strata.serve.jobs import SideWork
from strata.serve.model import LoadedModel, quiet_llama, set_adapters
from strata.serve.registry import LoraSet
from strata.serve.scheduler import Scheduler

MAX_INPUTS = 256


def pooling_for(metadata: dict[str, str]) -> int:
    """The model's own pooling type when its GGUF declares one, else mean pooling (a causal LM declares none)."""
    import llama_cpp

    arch = metadata.get("general.architecture", "")
    declared = metadata.get(f"{arch}.pooling_type")
    if declared is not None and declared.strip() not in ("", "0"):
        return llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # llama.cpp then uses the model's own
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """Owns the embeddings context; every llama.cpp call on it runs on the decode thread as side work."""

    def __init__(self, model: LoadedModel, config: ServeConfig, scheduler: Scheduler) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._model = model
        self._config = config
        self._scheduler = scheduler
        self._context: Any = None
        self._batch: Any = None
        self.n_embd = llama_cpp.llama_model_n_embd(model.model.model)
        self.n_ctx = config.n_ctx

    def _ensure_context(self) -> Any:
        if self._context is None:
            from llama_cpp import _internals

            params = self._lib.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = self.n_ctx  # a pooled sequence is one ubatch
            params.n_seq_max = 1
            params.n_threads = params.n_threads_batch = self._config.n_threads
            params.embeddings = True
            params.pooling_type = pooling_for(self._model.metadata)
            params.no_perf = True
            with quiet_llama(self._config.verbose), self._model.adapters_lock:  # creating it reserves a graph
                try:
                    self._context = _internals.LlamaContext(model=self._model.model, params=params,
                                                            verbose=self._config.verbose)
                except ValueError:
                    raise ApiError(503, "llama.cpp could not create the embeddings context (out of memory?); start "
                                        "with a smaller --n_ctx, or --embeddings false to turn embeddings off.") from None
            self._batch = self._lib.llama_batch_init(self.n_ctx, 0, 1)
        return self._context

    def _vector(self, tokens: list[int], lora: LoraSet) -> list[float]:
        """One L2-normalised pooled vector (decode thread only)."""
        lib, ctx = self._lib, self._ensure_context().ctx
        if not set_adapters(ctx, lora):
            raise ApiError(422, "llama.cpp refused this adapter set")
        try:
            batch = self._batch
            for j, token in enumerate(tokens):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, j, 1
                batch.seq_id[j][0], batch.logits[j] = 0, True
            batch.n_tokens = len(tokens)
            lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
            with self._model.adapters_lock:  # an adapter change re-reserves the graph, which reads the adapter list
                rc = lib.llama_decode(ctx, batch)
            if rc != 0:
                raise ApiError(500, f"llama_decode failed (code {rc}) while embedding; retry the request.")
            pointer = lib.llama_get_embeddings_seq(ctx, 0)
            if not pointer:
                raise ApiError(500, "llama.cpp returned no pooled embedding for this model.")
            vector = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).astype(np.float64)
        finally:
            if lora:
                set_adapters(ctx, ())  # never keep a pointer to an adapter that may be freed later
        norm = float(np.linalg.norm(vector)) or 1.0
        return (vector / norm).tolist()

    def check(self, inputs: list[list[int]]) -> None:
        if not inputs:
            raise ApiError(400, "\"input\" is empty; send a string or a non-empty list of strings.")
        if len(inputs) > MAX_INPUTS:
            raise ApiError(400, f"\"input\" has {len(inputs)} items; send at most {MAX_INPUTS} per request.")
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise ApiError(400, f"input {i} is empty after tokenizing; send some text.")
            if len(tokens) > self.n_ctx:
                raise ApiError(400, f"input {i} is {len(tokens)} tokens; the limit is --n_ctx {self.n_ctx}. Split it "
                                    "or start the server with a larger --n_ctx.")

    async def embed(self, inputs: list[list[int]], lora: LoraSet) -> list[list[float]]:
        """Vectors for inputs that passed check(): one side-work item per input, in order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in inputs]

        def settle(future: asyncio.Future, value: Any, error: bool) -> None:
            if not future.done():
                (future.set_exception if error else future.set_result)(value)

        def work(tokens: list[int], future: asyncio.Future) -> SideWork:
            def run() -> None:
                if not future.done():  # the client may have gone: skip its remaining inputs
                    loop.call_soon_threadsafe(settle, future, self._vector(tokens, lora), False)

            return SideWork(run=run, fail=lambda exc: loop.call_soon_threadsafe(settle, future, exc, True))

        try:
            for tokens, future in zip(inputs, futures):
                self._scheduler.side(work(tokens, future))
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Free the context (once the decode thread has stopped, before the model)."""
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
        if self._context is not None:
            self._context.close()


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's encodings: a float list, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
