"""The engine: the loaded GGUF, its adapter registry, the chat template and the decode-loop scheduler, joined up
for the HTTP handlers (which only parse, submit and stream)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool

from strata.serve import adapters as ad
from strata.serve.config import ServeConfig
from strata.serve.embeddings import Embedder
from strata.serve.errors import ApiError
from strata.serve.jobs import Done, Failed, Job
from strata.serve.metrics import Metrics
from strata.serve.model import LoadedModel
from strata.serve.registry import LoraSet, Ref, Registry
from strata.serve.sampling import SamplerChain
from strata.serve.scheduler import Scheduler
from strata.serve.schemas import CompletionRequest, EmbeddingRequest
from strata.serve.softprompts import SoftPrompt, SoftPrompts, Target
from strata.serve.text import ChatTemplate

CONTEXT_HINT = "shorten the prompt or start the server with a larger --n_ctx"


class Generation:
    """One submitted job: iterate events() for Token/Done events (a Failed event raises its ApiError); leaving
    the iteration early cancels the job, which frees its slot within one decode step."""

    def __init__(self, job: Job, queue: asyncio.Queue) -> None:
        self.job = job
        self._queue = queue

    async def events(self) -> AsyncIterator[Any]:
        try:
            while True:
                event = await self._queue.get()
                if isinstance(event, Failed):
                    raise event.error
                yield event
                if isinstance(event, Done):
                    return
        finally:
            self.job.cancelled = True  # a no-op once Done; otherwise the client has gone


class Engine:
    """Owns the model, the registry and the scheduler; see the module docstring."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._tmp = Path(tempfile.mkdtemp(prefix="strata-serve-"))
        self.model: LoadedModel | None = None
        self.scheduler: Scheduler | None = None
        self.embedder: Embedder | None = None
        # adapter loads (and PEFT conversions) wait for each other on their own thread, never holding one of
        # anyio's worker threads that every request needs for tokenizing
        self._loads = ThreadPoolExecutor(1, thread_name_prefix="strata-adapter-load")
        self._arrivals = itertools.count(1)  # POST /lora-adapters arrival order
        self._applied_arrival = 0
        try:
            self.model = LoadedModel.load(config)
            self.template = ChatTemplate(self.model, config.chat_format)
            self.scheduler = Scheduler(self.model, metrics, release=lambda lora: self.registry.release(lora),
                                       default_seed=config.seed, switch_budget=config.switch_budget,
                                       max_queue=config.max_queue)
            self.embedder = Embedder(self.model, config, self.scheduler) if config.embeddings else None
            self.registry = Registry(
                self.model, ad.read_base_info(Path(config.model)), self._allowed_roots(),
                ad.peft_converter(config.base_model, self._tmp / "converted"), metrics,
                free=lambda gone: self.scheduler.free_adapters([a.handle for a in gone]), verbose=config.verbose,
                max_loaded=config.max_loaded_adapters)
            self.soft_prompts = self._soft_prompts()
            start = self.registry.resolve([Ref(scale=s, path=p) for p, s in config.loras])
            if config.lora_init_without_apply:
                start = tuple((a, 0.0) for a, _ in start)
            self.registry.set_global(start)
        except BaseException:  # a bad start --lora: free the model and the temp dir before reporting it
            self.close()
            raise

    @classmethod
    async def open(cls, config: ServeConfig, metrics: Metrics) -> "Engine":
        return await run_in_threadpool(cls, config, metrics)

    def _allowed_roots(self) -> list[Path]:
        roots = [self.config.workspace] if self.config.workspace else []
        roots += [Path(r) for r in self.config.adapter_roots]
        # the folder holding each start adapter, so siblings (other topics, other levels) can be swapped in
        roots += [Path(path).expanduser().resolve().parent for path, _ in self.config.loras]
        return [Path(r).expanduser().resolve() for r in roots]

    def _soft_prompts(self) -> SoftPrompts:
        """The soft-prompt registry on the adapters' roots, with the start default (an error here when enabled and
        the artifact is missing or does not fit)."""
        import llama_cpp

        meta = self.model.metadata
        target = Target(architecture=meta.get("general.architecture", ""),
                        n_embd=llama_cpp.llama_model_n_embd_inp(self.model.model.model),
                        fingerprint=meta.get(ad.FINGERPRINT_KEY) or (self.config.release or {}).get("base_fingerprint"))
        soft = SoftPrompts(target, self.registry.roots, self.config.soft_prompt_home or self.config.workspace)
        enabled = self.config.soft_prompt_enabled
        soft.configure(bool(self.config.soft_prompt) if enabled is None else enabled, self.config.soft_prompt)
        return soft

    async def set_soft_prompts(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The runtime switch: {"enabled"?, "default"?} (keys left out keep their value); a 4xx leaves the previous
        state as it was."""
        soft = self.soft_prompts
        default = changes["default"] if "default" in changes else soft.default.path if soft.default else None
        await run_in_threadpool(soft.configure, changes.get("enabled", soft.enabled), default)
        return soft.listing()

    async def _soft_for(self, req: CompletionRequest) -> SoftPrompt | None:
        value = req.soft_prompt
        if isinstance(value, str) and not any(s.path == value or s.name == value for s in self.soft_prompts.loaded.values()):
            return await run_in_threadpool(self.soft_prompts.for_request, value)  # may read a file
        return self.soft_prompts.for_request(value)

    # -- adapters -------------------------------------------------------------------------------------------
    async def set_adapters(self, refs: list[Ref]) -> list[dict[str, Any]]:
        """Make `refs` the global set (omitted adapters get scale 0) for requests admitted from now on; requests
        in flight keep the set they started with. New paths load in a worker thread, never on the decode loop."""
        arrival = next(self._arrivals)  # taken before any await: the request sent last wins, however long
        chosen = await self._resolve(refs)   # each one's loads take
        if arrival > self._applied_arrival:
            self._applied_arrival = arrival
            self.registry.set_global(chosen)
        return self.registry.active_listing()

    async def _resolve(self, refs: list[Ref]) -> LoraSet:
        """Refs by id resolve in microseconds, on the event loop; a path may load a file, so it goes to a worker
        thread (a thread hop costs milliseconds when llama.cpp's threads hold every core)."""
        if all(ref.id is not None for ref in refs):
            return self.registry.resolve(refs)
        return await asyncio.wrap_future(self._loads.submit(self.registry.resolve, refs))

    def listing(self) -> list[dict[str, Any]]:
        return self.registry.listing()

    async def _lora_for(self, req: CompletionRequest | EmbeddingRequest) -> LoraSet:
        refs = req.lora if req.lora is not None else self.registry.refs_for_model(req.model)
        return self.registry.acquire(None if refs is None else await self._resolve(refs))

    # -- generation -----------------------------------------------------------------------------------------
    def _prompt(self, req: CompletionRequest) -> tuple[list[int], list[str], str]:
        """Prompt tokens, stop strings and the text to echo (and a grammar check: it needs the vocab)."""
        model = self.model
        if req.kind == "chat":
            rendered = self.template.render(req.messages)
            return rendered.tokens, req.stop + [s for s in rendered.stop if s not in req.stop], ""
        if isinstance(req.prompt, list):
            bad = [t for t in req.prompt if not model.valid_token(t)]
            if bad:
                raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary (0-{model.n_vocab - 1})")
            return list(req.prompt), req.stop, model.model.detokenize(req.prompt).decode("utf-8", "ignore")
        tokens = model.tokenize(req.prompt, add_bos=True, special=True) if req.prompt else [model.bos]
        return tokens, req.stop, req.prompt

    def _limits(self, req: CompletionRequest, prompt: list[int], virtual: int = 0) -> int:
        """Tokens the reply may have; `virtual`: a soft prompt's virtual tokens, which take context too."""
        n_ctx = self.model.n_ctx_seq
        if not prompt:
            raise ApiError(400, "the prompt is empty after tokenizing; send some text.")
        if len(prompt) + virtual >= n_ctx:
            used = f"{len(prompt)}" + (f" + {virtual} virtual" if virtual else "")
            raise ApiError(400, f"Requested tokens ({used}) exceed context window of {n_ctx}; {CONTEXT_HINT}.")
        room = n_ctx - len(prompt) - virtual
        return room if req.max_tokens is None or req.max_tokens <= 0 else min(req.max_tokens, room)

    async def submit(self, req: CompletionRequest) -> tuple[Generation, str]:
        """Check, resolve and queue `req`; returns its Generation and the prompt text to echo (text + echo).
        Every 4xx (bad adapters, too long a prompt, a template that refuses the messages) is raised here, before
        any reply byte is sent."""
        prompt, stops, echoed = await run_in_threadpool(self._prompt, req)
        soft = await self._soft_for(req)
        max_tokens = self._limits(req, prompt, soft.n_virtual if soft is not None else 0)
        bias = [(t, b) for t, b in req.logit_bias.items()]
        bad = [t for t, _ in bias if not self.model.valid_token(t)]
        if bad:
            raise ApiError(400, f"logit_bias names token id {bad[0]}, which is outside the vocabulary "
                                f"(0-{self.model.n_vocab - 1})")
        sampling = replace(req.sampling, logit_bias=tuple(bias))
        sampler = await run_in_threadpool(self._grammar_chain, sampling, req.ignore_eos)
        try:
            lora = await self._lora_for(req)
        except BaseException:
            if sampler is not None:
                sampler.close()
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = Job(prompt=prompt, sampling=sampling, lora=lora,
                  max_tokens=max_tokens, stops=stops, sink=queue.put_nowait, loop=loop,
                  logprobs=req.logprobs, prompt_logprobs=req.echo and req.logprobs is not None,
                  ignore_eos=req.ignore_eos, reuse_prefix=req.cache_prompt, sampler=sampler, soft=soft)
        try:
            self.scheduler.submit(job)
        except BaseException:
            if sampler is not None:
                sampler.close()
            self.registry.release(lora)
            raise
        return Generation(job, queue), echoed if req.echo else ""

    def _grammar_chain(self, sampling, ignore_eos: bool) -> SamplerChain | None:
        """A grammar request's sampler chain, compiled here in a worker thread rather than on the decode thread
        (a JSON schema's grammar takes milliseconds to compile); None without a grammar."""
        if sampling.grammar is None:
            return None
        try:
            return SamplerChain(sampling, self.model.vocab, self.model.n_vocab, self.config.seed,
                                eog=self.scheduler.eog if ignore_eos else ())
        except ValueError as exc:
            raise ApiError(400, f"\"grammar\": {exc} (GBNF with a `root` rule, e.g. root ::= \"yes\" | \"no\")"
                           ) from None

    async def embed(self, req: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """Pooled, L2-normalised vectors for every input (and the tokens read), under the request's adapter set."""
        if self.embedder is None:
            raise ApiError(404, "embeddings are turned off on this server (started with --embeddings false).")
        if req.tokens is not None:
            inputs = req.tokens
            bad = [t for seq in inputs for t in seq if not self.model.valid_token(t)]
            if bad:
                raise ApiError(400, f"input token id {bad[0]} is outside the vocabulary (0-{self.model.n_vocab - 1})")
        else:
            inputs = await run_in_threadpool(lambda: [self.model.tokenize(t, add_bos=True) for t in req.texts])
        self.embedder.check(inputs)
        lora = await self._lora_for(req)
        try:
            return await self.embedder.embed(inputs, lora), sum(len(t) for t in inputs)
        finally:
            self.registry.release(lora)

    def close(self) -> None:
        """Stop the decode loop (in-flight streams get an error event), then free adapters and the model."""
        stopped = self.scheduler.close() if self.scheduler is not None else True
        if stopped and self.embedder is not None:
            self.embedder.close()
        if stopped and self.model is not None:
            import llama_cpp

            llama_cpp.llama_set_adapters_lora(self.model.ctx, None, 0, None)
            registry = getattr(self, "registry", None)
            for adapter in registry.free_all() if registry is not None else []:
                llama_cpp.llama_adapter_lora_free(adapter.handle)
            self.model.close()
            self.model = None
        self._loads.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._tmp, ignore_errors=True)
