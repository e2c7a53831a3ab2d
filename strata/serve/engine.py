"""The engine: one llama_cpp.Llama, its loaded LoRA adapters, the global active set and one lock."""

from __future__ import annotations

import ctypes
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
from starlette.concurrency import run_in_threadpool

from strata.serve import adapters as ad
from strata.serve.config import ServeConfig
from strata.serve.errors import ApiError
from strata.serve.metrics import Metrics


@dataclass(frozen=True)
class Ref:
    """One entry of an adapter request: a loaded adapter's id, or a path; and its scale."""

    scale: float
    id: int | None = None
    path: str | None = None


def too_long(exc: ValueError) -> ApiError:
    """llama-cpp-python's ValueError (e.g. a prompt longer than the context window) as a 400 with the fix."""
    return ApiError(400, f"{exc}; shorten the prompt or start the server with a larger --n_ctx.")


class Engine:
    """Owns llama.cpp state. Every public coroutine takes the lock, so generations and adapter changes never
    interleave; blocking llama.cpp calls run in the thread pool."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        import llama_cpp

        self.config = config
        self.metrics = metrics
        self.lock = anyio.Lock()
        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(config.model), n_ctx=config.n_ctx, n_threads=config.n_threads, n_batch=config.n_batch,
            n_gpu_layers=config.n_gpu_layers, chat_format=config.chat_format, logits_all=config.logits_all,
            flash_attn=config.flash_attn, seed=config.seed, verbose=config.verbose,
        )
        self.base = ad.read_base_info(Path(config.model))
        self.adapters: dict[int, ad.Adapter] = {}
        self.active: dict[int, float] = {}  # the global set (scale 0 entries are loaded but not applied)
        self._applied: tuple[tuple[int, float], ...] = ()  # what the llama context holds right now
        self._next_id = 0
        self._tmp = Path(tempfile.mkdtemp(prefix="strata-serve-"))
        try:
            self._convert = ad.peft_converter(config.base_model, self._tmp / "converted")
            self.roots = self._allowed_roots()
            start, fresh = self._resolve([Ref(scale=s, path=p) for p, s in config.loras])
            scale = 0.0 if config.lora_init_without_apply else None
            self.active = {a.id: (s if scale is None else scale) for a, s in start}
            self._apply(self._wanted(None), fresh)
            self._commit(fresh)
        except BaseException:  # a bad start --lora: free the model and the temp dir before reporting it
            self.close()
            raise

    @classmethod
    async def open(cls, config: ServeConfig, metrics: Metrics) -> "Engine":
        return await run_in_threadpool(cls, config, metrics)

    # -- adapters -------------------------------------------------------------------------------------------
    def _allowed_roots(self) -> list[Path]:
        roots = [self.config.workspace] if self.config.workspace else []
        roots += [Path(r) for r in self.config.adapter_roots]
        # the folder holding each start adapter, so siblings (other topics, other levels) can be swapped in
        roots += [Path(path).expanduser().resolve().parent for path, _ in self.config.loras]
        return [Path(r).expanduser().resolve() for r in roots]

    def _load(self, file: Path, given: str) -> ad.Adapter:
        meta, shapes = ad.read_adapter_meta(file)
        ad.check_compatible(file, meta, shapes, self.base)
        started = time.perf_counter()
        from llama_cpp._utils import suppress_stdout_stderr

        # llama.cpp reports its harmless CPU_REPACK fallback per tensor at error level; keep the log readable.
        with suppress_stdout_stderr(disable=self.config.verbose):
            handle = self._lib.llama_adapter_lora_init(self.llm.model, str(file).encode())
        if not handle:
            raise ApiError(422, f"llama.cpp could not load the LoRA {file} for this base model (see the server log); "
                                "check that it was exported from this base.")
        self.metrics.adapter_load_seconds.observe(time.perf_counter() - started)
        adapter = ad.Adapter(id=self._next_id, path=given, file=file, key=ad.cache_key(file),
                             name=ad.display_name(given), handle=handle, meta=meta)
        self._next_id += 1
        return adapter

    def _resolve(self, refs: list[Ref]) -> tuple[list[tuple[ad.Adapter, float]], list[ad.Adapter]]:
        """Refs -> (adapters with scales, the freshly loaded ones). The fresh ones are NOT in self.adapters yet:
        the caller commits them once they are applied, or discards them. On error, new loads are freed here."""
        by_key = {a.key: a for a in self.adapters.values()}
        fresh: list[ad.Adapter] = []
        out: list[tuple[ad.Adapter, float]] = []
        try:
            for ref in refs:
                if ref.id is not None:
                    if ref.id not in self.adapters:
                        raise ApiError(404, f"no loaded adapter has id {ref.id}; GET /lora-adapters lists the ids.")
                    out.append((self.adapters[ref.id], ref.scale))
                    continue
                file = ad.resolve_file(ref.path or "", self.roots, self._convert)
                key = ad.cache_key(file)
                adapter = by_key.get(key) or next((a for a in fresh if a.key == key), None)
                if adapter is None:
                    adapter = self._load(file, ref.path or str(file))
                    fresh.append(adapter)
                out.append((adapter, ref.scale))
            ids = [a.id for a, _ in out]
            if len(set(ids)) != len(ids):
                raise ApiError(400, "the same adapter is listed twice; give each adapter once with its scale.")
        except BaseException:
            self._discard(fresh)
            raise
        return out, fresh

    def _commit(self, fresh: list[ad.Adapter]) -> None:
        """Keep freshly loaded adapters. Copy-on-write: listing() iterates self.adapters on the event loop."""
        if fresh:
            self.adapters = {**self.adapters, **{a.id: a for a in fresh}}
        self.metrics.loaded_adapters.set(len(self.adapters))

    def _discard(self, fresh: list[ad.Adapter]) -> None:
        for adapter in fresh:
            self._lib.llama_adapter_lora_free(adapter.handle)
        self._next_id -= len(fresh)

    def _wanted(self, chosen: list[tuple[ad.Adapter, float]] | None) -> tuple[tuple[int, float], ...]:
        pairs = [(a.id, s) for a, s in chosen] if chosen is not None else list(self.active.items())
        return tuple((i, s) for i, s in pairs if s != 0.0)

    def _apply(self, wanted: tuple[tuple[int, float], ...], fresh: Sequence[ad.Adapter] = ()) -> None:
        """Put exactly `wanted` (ids of loaded or `fresh` adapters) on the context; when it changes, drop the KV
        cache and the cached prefix."""
        if wanted == self._applied:
            return
        pool = {**self.adapters, **{a.id: a for a in fresh}}
        n = len(wanted)
        handles = (self._lib.llama_adapter_lora_p_ctypes * n)(*[pool[i].handle for i, _ in wanted])
        scales = (ctypes.c_float * n)(*[s for _, s in wanted])
        if self._lib.llama_set_adapters_lora(self.llm.ctx, handles, n, scales) != 0:
            raise ApiError(422, "llama.cpp refused this adapter set; the previous set is still active.")
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.llm.ctx), True)
        self.llm.reset()  # n_tokens = 0: create_completion must not reuse a prefix evaluated under other adapters
        self._applied = wanted
        self.metrics.adapter_swaps.inc()
        self.metrics.active_adapters.set(n)

    def _retire_stale(self) -> None:
        """Free adapters whose file has since changed on disk and that nothing uses any more."""
        newest: dict[str, int] = {}
        for a in self.adapters.values():
            newest[a.key[0]] = max(newest.get(a.key[0], 0), a.key[1])
        in_use = set(self.active) | {i for i, _ in self._applied}
        stale = [a for a in self.adapters.values() if a.key[1] < newest[a.key[0]] and a.id not in in_use]
        if stale:
            self.adapters = {i: a for i, a in self.adapters.items() if a not in stale}
            for a in stale:
                self._lib.llama_adapter_lora_free(a.handle)
        self.metrics.loaded_adapters.set(len(self.adapters))

    def _set_global(self, refs: list[Ref]) -> list[dict[str, Any]]:
        chosen, fresh = self._resolve(refs)
        previous = self.active
        self.active = {a.id: s for a, s in chosen}
        try:
            self._apply(self._wanted(None), fresh)
        except BaseException:  # a failed POST changes nothing: old set active, new loads freed
            self.active = previous
            self._discard(fresh)
            raise
        self._commit(fresh)
        self._retire_stale()
        return self.active_listing()

    async def set_adapters(self, refs: list[Ref]) -> list[dict[str, Any]]:
        """Make `refs` the global active set (omitted adapters get scale 0); returns the new active set."""
        async with self.lock:
            return await run_in_threadpool(self._set_global, refs)

    async def preload(self, refs: list[Ref] | None) -> list[Ref] | None:
        """Load any new paths in `refs` now and return the same set by id (404/403/422 raised here)."""
        if refs is None:
            return None
        async with self.lock:
            chosen = await run_in_threadpool(self._load_refs, refs)
        return [Ref(scale=s, id=a.id) for a, s in chosen]

    def _load_refs(self, refs: list[Ref]) -> list[tuple[ad.Adapter, float]]:
        chosen, fresh = self._resolve(refs)
        self._commit(fresh)
        return chosen

    # -- listing --------------------------------------------------------------------------------------------
    def describe(self, adapter: ad.Adapter) -> dict[str, Any]:
        scale = self.active.get(adapter.id, 0.0)
        return {"id": adapter.id, "path": adapter.path, "file": str(adapter.file), "name": adapter.name,
                "scale": scale, "active": scale != 0.0, **adapter.meta}

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(a) for a in self.adapters.values()]

    def active_listing(self) -> list[dict[str, Any]]:
        return [self.describe(self.adapters[i]) for i, s in self.active.items() if s != 0.0]

    def refs_for_model(self, model: str | None) -> list[Ref] | None:
        """`"model": "<adapter name>"` selects that adapter alone at scale 1; anything else keeps the global set."""
        for adapter in self.adapters.values():
            if model and model == adapter.name:
                return [Ref(scale=1.0, id=adapter.id)]
        return None

    # -- generation -----------------------------------------------------------------------------------------
    def _call(self, kind: str) -> Callable[..., Any]:
        return self.llm.create_chat_completion if kind == "chat" else self.llm.create_completion

    def _prepare(self, refs: list[Ref] | None) -> None:
        if refs is None:
            self._apply(self._wanted(None))
            return
        chosen, fresh = self._resolve(refs)
        try:
            self._apply(self._wanted(chosen), fresh)
        except BaseException:
            self._discard(fresh)
            raise
        self._commit(fresh)

    def _run(self, kind: str, params: dict[str, Any], refs: list[Ref] | None) -> dict[str, Any]:
        self._prepare(refs)
        try:
            return self._call(kind)(**params)
        except ValueError as exc:  # e.g. prompt longer than the context window
            raise too_long(exc) from None

    async def generate(self, kind: str, params: dict[str, Any], refs: list[Ref] | None) -> dict[str, Any]:
        """One non-streaming completion ("chat" or "text") under `refs` (None: the global set)."""
        async with self.lock:
            return await run_in_threadpool(self._run, kind, {**params, "stream": False}, refs)

    async def stream(self, kind: str, params: dict[str, Any], refs: list[Ref] | None) -> AsyncIterator[dict[str, Any]]:
        """Streamed chunks; the lock is held until the stream ends or the consumer stops (client gone)."""
        async with self.lock:
            chunks = await run_in_threadpool(self._run, kind, {**params, "stream": True}, refs)
            done = object()
            try:
                while True:
                    try:  # a streamed call only checks the prompt on its first next()
                        chunk = await run_in_threadpool(next, chunks, done)
                    except ValueError as exc:
                        raise too_long(exc) from None
                    if chunk is done:
                        break
                    yield chunk
            finally:
                chunks.close()  # stops llama.cpp's generator at once; the engine is free for the next request

    def close(self) -> None:
        """Detach adapters from the context, then free the model (llama.cpp frees its adapters with it)."""
        self._lib.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        self.adapters = {}
        self.llm.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
