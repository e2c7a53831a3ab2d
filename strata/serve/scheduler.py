"""The decode loop: `parallel` sequence slots in one llama.cpp context with continuous batching, an adapter set per
sequence, prefix reuse per slot, cancellation and shutdown. Only the loop's own thread touches the context."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import nullcontext
from typing import Any, Callable

from strata.serve.batching import runs, ubatches
from strata.serve.errors import ApiError
from strata.serve.jobs import Failed, Job, SideWork
from strata.serve.metrics import Metrics
from strata.serve.model import LoadedModel, set_adapters
from strata.serve.registry import LoraSet, set_key, set_label, set_names
from strata.serve.replies import Replies, Slot, common_prefix
from strata.serve.sampling import DEFAULT_SEED, SamplerChain
from strata.serve.softprompts import Prefill, prefill_markers, sequence
from strata.serve.text import TextStream
from strata.serve.turns import Turns

log = logging.getLogger("strata.serve")
SWITCH_BUDGET = 32  # decode steps a set keeps the context while another set waits (see turns.py for the bound)
MAX_QUEUE = 64  # requests waiting for a slot (and embedding inputs waiting for the decode thread) before a 429
RETRY_AFTER_S = 1


class Scheduler(Replies):
    """Owns the llama.cpp context. submit() queues a Job; the loop admits jobs into free slots, prefills prompts in
    chunks of n_batch, and decodes one token for every active slot of one adapter set per llama_decode."""

    def __init__(self, model: LoadedModel, metrics: Metrics, release: Callable[[LoraSet], None],
                 default_seed: int = DEFAULT_SEED, switch_budget: int = SWITCH_BUDGET,
                 max_queue: int = MAX_QUEUE) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._model = model
        self._metrics = metrics
        self._release = release
        self._seed = default_seed
        self.slots = [Slot(seq=i) for i in range(model.parallel)]
        self._waiting: deque[Job] = deque()
        self._calls: list[Callable[[], None]] = []
        self._side: deque[SideWork] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._max_queue = max_queue
        self._applied: tuple = ()
        self._applied_handles: list[Any] = []
        self._turns = Turns(budget=switch_budget)
        # llama.cpp re-reserves its graph on the first decode after the adapter set or the model's adapter list
        # changed, reading that list: such a decode holds adapters_lock (True: the first decode of all)
        self._reserve = True
        self._streams = 1 if model.kv_unified else model.parallel  # KV streams: how llama.cpp splits a batch
        self._reused = llama_cpp.llama_perf_context(model.ctx).n_reused
        self._outbox: list[tuple[Job, Any]] = []  # events of this step, handed over by _flush
        self._batch = llama_cpp.llama_batch_init(model.n_batch, 0, 1)
        self._prefill: Prefill | None = None  # the soft prompts' embedding batch, made on first use
        self.eog = [t for t in range(model.n_vocab) if model.is_eog(t)]
        self._thread = threading.Thread(target=self._run, name="strata-decode", daemon=True)
        self._thread.start()

    # -- the HTTP side ---------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job; it waits only for a free slot. 429 (with Retry-After) when the queue is full."""
        with self._cv:
            if self._stopping:
                raise ApiError(503, "the server is shutting down; retry on another replica or after the restart.")
            if len(self._waiting) >= self._max_queue:
                self._metrics.rejected.labels("queue_full").inc()
                raise ApiError(429, f"{len(self._waiting)} requests are already waiting for one of the "
                                    f"{len(self.slots)} slots; retry after {RETRY_AFTER_S} s, or start the server "
                                    "with a larger --max-queue or --parallel.",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
            self._waiting.append(job)
            self._metrics.queue_depth.set(len(self._waiting))
            self._cv.notify()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the decode thread between two decodes (e.g. freeing an adapter's llama.cpp memory)."""
        with self._cv:
            self._calls.append(fn)
            self._cv.notify()

    def side(self, work: SideWork) -> None:
        """Queue side work (see SideWork); 503 once the loop is stopping."""
        with self._cv:
            if self._stopping:
                raise ApiError(503, "the server is shutting down; retry after the restart.")
            if len(self._side) >= self._max_queue:
                self._metrics.rejected.labels("queue_full").inc()
                raise ApiError(429, f"{len(self._side)} embedding inputs are already waiting for the decode thread; "
                                    f"retry after {RETRY_AFTER_S} s, or start the server with a larger --max-queue.",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
            self._side.append(work)
            self._cv.notify()

    def free_adapters(self, handles: list[Any]) -> None:
        """Free adapters' llama.cpp memory on the decode thread, between two decodes."""
        def free() -> None:
            if any(h in handles for h in self._applied_handles):
                self._lib.llama_set_adapters_lora(self._model.ctx, None, 0, None)
                self._applied, self._applied_handles = (), []
            with self._model.adapters_lock:
                for handle in handles:
                    self._lib.llama_adapter_lora_free(handle)
            self._reserve = True  # the model's adapter list changed: the next decode re-reserves under the lock

        self.call_soon(free)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def busy(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def describe_slots(self) -> list[dict[str, Any]]:
        """GET /slots: each slot's state, adapter set (of the running job, else of its cached tokens) and cached
        tokens. A slot's cached prefix is reused only by a request under the same set (the set is part of the key).
        Read from the event loop without a lock: a snapshot that may be one step old."""
        out = []
        for slot in self.slots:
            job = slot.job
            state = "idle" if job is None else "prompt" if slot.todo else "generating"
            out.append({"id": slot.seq, "state": state, "adapters": set_label(job.lora) if job else slot.label,
                        "cache_key": [list(k) for k in slot.key], "cached_tokens": len(slot.cached),
                        "generated": slot.generated if job else 0})
        return out

    def stop(self) -> None:
        """Ask the loop to end (non-blocking, safe from a signal handler): in-flight and queued jobs get a 503
        Failed event, so their streams end with an error event at once; new submits get 503."""
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> bool:
        """stop(), then wait for the thread. True when it has ended (only then may the model be freed)."""
        self.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the decode thread did not stop within %.0fs; leaving the model allocated", timeout)
            return False
        self._lib.llama_batch_free(self._batch)
        if self._prefill is not None:
            self._prefill.close()
        return True

    # -- the loop --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: self._stopping or self._waiting or self._calls or self._side
                                      or self.busy())
                    if self._stopping:
                        break
                    calls, self._calls = self._calls, []
                    jobs = self._take_waiting()
                    work = self._side.popleft() if self._side else None
                for fn in calls:
                    fn()
                for job in jobs:
                    self._start(job)
                self._reap()
                group = self._pick()
                if group:
                    self._step(group)
                self._flush()  # before any side work, so tokens never wait behind an embedding
                if work is not None:
                    self._run_side(work)
                    self._flush()
        except Exception:  # noqa: BLE001 - a bug here must not leave clients hanging
            log.exception("the decode loop failed")
        finally:
            self._shutdown()

    def _run_side(self, work: SideWork) -> None:
        try:
            work.run()
        except ApiError as exc:
            work.fail(exc)
        except Exception as exc:  # noqa: BLE001 - report it to the request, keep the loop alive
            log.exception("side work failed")
            work.fail(ApiError(500, f"internal error: {exc}"))

    def _take_waiting(self) -> list[Job]:
        free = sum(1 for s in self.slots if s.job is None)
        jobs: list[Job] = []
        while self._waiting and len(jobs) < free:
            job = self._waiting.popleft()
            if job.cancelled:
                self._drop(job)
                continue
            jobs.append(job)
        self._metrics.queue_depth.set(len(self._waiting))
        return jobs

    def _start(self, job: Job) -> None:
        """Put a job on the free slot whose cached tokens (same adapter set) share the longest prefix."""
        key = set_key(job.lora)
        free = [s for s in self.slots if s.job is None]
        seq = sequence(job.soft, job.prompt)  # a soft prompt's virtual tokens (as markers) come first

        def reuse(slot: Slot) -> int:
            if job.prompt_logprobs or not job.reuse_prefix or slot.key != key:
                return 0
            return common_prefix(slot.cached, seq)

        slot = max(free, key=lambda s: (reuse(s), -s.last_used))
        keep = min(reuse(slot), len(seq) - 1)
        if keep < len(slot.cached):
            if not self._lib.llama_memory_seq_rm(self._model.memory, slot.seq, keep, -1):
                self._lib.llama_memory_seq_rm(self._model.memory, slot.seq, -1, -1)
                keep = 0
            slot.cached = slot.cached[:keep]
        sampler, job.sampler = job.sampler, None  # a grammar's chain is compiled on the HTTP side, off this thread
        if sampler is None:
            try:
                sampler = SamplerChain(job.sampling, self._model.vocab, self._model.n_vocab, self._seed,
                                       eog=self.eog if job.ignore_eos else ())
            except ValueError as exc:
                self._emit(job, Failed(ApiError(400, f"{exc}; check the grammar or json schema.")))
                self._release(job.lora)
                return
        sampler.accept_prompt(job.prompt[-job.sampling.penalty_last_n:] if job.sampling.penalty_last_n > 0 else [])
        slot.job, slot.key, slot.todo, slot.sampler = job, key, seq[keep:], sampler
        slot.label = set_label(job.lora)
        slot.text, slot.generated, slot.next_token, slot.reused = TextStream(job.stops), 0, None, keep
        first = job.prompt[0] if job.prompt_logprobs and job.prompt[0] != self._model.bos else None
        slot.prompt_lp = [(self._text(first), None, None)] if first is not None else []
        self._metrics.slot_wait_seconds.observe(time.perf_counter() - job.submitted)
        self._metrics.tokens.labels("prompt").inc(len(job.prompt))
        self._metrics.set_requests.labels(self._metrics.bounded(set_names(job.lora))).inc()
        self._metrics.cached_prompt_tokens.inc(keep)
        self._metrics.busy_slots.set(self.busy())

    def _reap(self) -> None:
        """Free the slots of clients that went away (within one decode step)."""
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self._metrics.cancelled.inc()
                self._finish(slot, None)

    def _pick(self) -> list[Slot]:
        """The busy slots of the adapter set whose turn it is (see turns.py), in sequence-id order."""
        groups: dict[tuple, list[Slot]] = {}
        for slot in self.slots:
            if slot.job is not None:
                groups.setdefault(slot.key, []).append(slot)
        key = self._turns.pick(sorted(groups, key=lambda k: min(s.job.submitted for s in groups[k])))
        self._metrics.set_switches.set(self._turns.switches)
        return self._compact(groups[key]) if key is not None else []

    def _compact(self, group: list[Slot]) -> list[Slot]:
        """Close gaps in a set's sequence ids (busy {0,2,3} makes llama.cpp split the batch in two: two passes over
        the weights) by moving the highest sequence into a free slot inside the gap (llama.cpp copies that KV
        stream). A gap held by another set's busy slot stays (that set decodes in its own steps anyway)."""
        while runs([s.seq for s in group]) > 1:
            hole = next((s for s in self.slots[group[0].seq + 1:group[-1].seq] if s.job is None), None)
            if hole is None:
                break
            self._move(group[-1], hole)
            group = sorted(group[:-1] + [hole], key=lambda s: s.seq)
        return group

    def _move(self, src: Slot, dst: Slot) -> None:
        """Move a running job and its KV from sequence src.seq to the free sequence dst.seq (a soft prompt's
        virtual tokens too: their KV is copied like any other, and their markers move in `cached`)."""
        memory, lib = self._model.memory, self._lib
        lib.llama_memory_seq_rm(memory, dst.seq, -1, -1)
        lib.llama_memory_seq_cp(memory, src.seq, dst.seq, -1, -1)
        lib.llama_memory_seq_rm(memory, src.seq, -1, -1)
        for name in ("cached", "key", "label", "last_used", "job", "todo", "sampler", "text", "generated",
                     "next_token", "reused", "prompt_lp"):
            setattr(dst, name, getattr(src, name))
        src.cached, src.key, src.label, src.job, src.sampler, src.text, src.todo = [], (), "", None, None, None, []
        src.next_token, src.generated, src.prompt_lp = None, 0, []
        self._metrics.slot_moves.inc()

    def _apply(self, lora: LoraSet) -> bool:
        """Put `lora` on the context; True when that changed the set (the next decode re-reserves)."""
        key = set_key(lora)
        if key == self._applied:
            return False
        if not set_adapters(self._model.ctx, lora):
            raise ApiError(422, "llama.cpp refused this adapter set")
        self._applied, self._applied_handles = key, [a.handle for a, _ in lora]
        self._metrics.adapter_swaps.inc()
        self._reserve = True
        return True

    def _step(self, group: list[Slot]) -> None:
        """One llama_decode for `group` (one adapter set, sorted by sequence id): a token for each generating slot,
        then prompt chunks in the room left; tokens go into the batch in sequence order (one ubatch when the ids
        are consecutive)."""
        batch, lib = self._batch, self._lib
        lora = group[0].job.lora
        try:
            self._apply(lora)
        except ApiError as exc:
            for slot in group:
                self._fail(slot, exc)
            return
        # a soft prompt's virtual tokens lead its to-do list: decode them as an embedding batch first
        group = [s for s in group if not (s.next_token is None and s.todo and s.todo[0] < 0)
                 or self._soft_prefill(s)]
        counts = self._plan(group)
        plan: list[tuple[Slot, int, int]] = []  # slot, first batch index, tokens added
        n = 0
        for slot in group:
            count = counts.get(slot.seq, 0)
            if not count:
                continue
            plan.append((slot, n, count))
            if slot.next_token is not None:
                tokens, logits = [slot.next_token], [True]
            else:
                tokens, last = slot.todo[:count], count == len(slot.todo)
                logits = [slot.job.prompt_logprobs or (last and j == count - 1) for j in range(count)]
            for j, (token, want) in enumerate(zip(tokens, logits)):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, len(slot.cached) + j, 1
                batch.seq_id[n][0], batch.logits[n] = slot.seq, want
                n += 1
        if not plan:
            return
        batch.n_tokens = n
        started = time.perf_counter()
        # a decode that re-reserves the graph reads the model's adapter list, which loads and frees change
        with self._model.adapters_lock if self._reserve else nullcontext():
            rc = lib.llama_decode(self._model.ctx, batch)
        self._reserve = False
        self._book(lora, plan, n, time.perf_counter() - started)
        if rc != 0:
            error = ApiError(500 if rc < 0 else 503, f"llama_decode failed (code {rc}); the request was dropped, the "
                                                     "server carries on. Retry, or lower --parallel/--n_ctx.")
            for slot, _, _ in plan:
                self._drop_cache(slot)
                self._fail(slot, error)
            return
        for slot, first, count in plan:
            try:
                self._after(slot, first, count)
            except ApiError as exc:
                self._drop_cache(slot)
                self._fail(slot, exc)
            except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the loop for all
                log.exception("a generation failed")
                self._drop_cache(slot)
                self._fail(slot, ApiError(500, f"internal error: {exc}"))

    def _plan(self, group: list[Slot]) -> dict[int, int]:
        """Tokens each slot adds this step (by sequence id): 1 for a generating slot, then prompt chunks of the
        others, in sequence order, in the room n_batch leaves."""
        counts = {s.seq: 1 for s in group if s.next_token is not None}
        room = self._model.n_batch - len(counts)
        for slot in group:
            if slot.next_token is None and slot.todo and room > 0:
                counts[slot.seq] = min(room, len(slot.todo))
                room -= counts[slot.seq]
        return counts

    def _book(self, lora: LoraSet, plan: list[tuple[Slot, int, int]], n: int, took: float) -> None:
        """Metrics of one decode: tokens, ubatches (passes over the weights), graphs reused, time per set."""
        metrics = self._metrics
        seqs = [slot.seq for slot, _, count in plan for _ in range(count)]
        metrics.decode_tokens.observe(n)
        metrics.decode_ubatches.observe(ubatches(seqs, self._model.n_batch, self._streams))
        reused = self._lib.llama_perf_context(self._model.ctx).n_reused
        metrics.graphs_reused.inc(max(0, reused - self._reused))
        self._reused = reused
        label = metrics.bounded(set_names(lora))
        metrics.decode_calls.labels(label).inc()
        metrics.set_seconds.labels(label).inc(took)

    def _soft_prefill(self, slot: Slot) -> bool:
        """Decode the soft prompt's virtual tokens still to evaluate (the markers leading slot.todo) as an embedding
        batch into the slot's sequence, under the adapter set already applied; False when the slot failed."""
        rows, count = prefill_markers(slot.job.soft, slot.todo)
        if self._prefill is None:
            self._prefill = Prefill(self._model.n_batch, rows.shape[1])
        with self._model.adapters_lock if self._reserve else nullcontext():  # see _step
            rc = self._prefill.decode(self._model.ctx, rows, slot.seq, len(slot.cached))
        if rc != 0:
            self._drop_cache(slot)
            self._fail(slot, ApiError(500 if rc < 0 else 503, f"llama_decode of the soft prompt failed (code {rc}); "
                                                              "the request was dropped, the server carries on."))
            return False
        slot.cached.extend(slot.todo[:count])  # the markers: a later request with the same soft prompt reuses them
        slot.todo = slot.todo[count:]
        return True

    def _drop_cache(self, slot: Slot) -> None:
        """Forget a sequence's KV (after a failure nothing it holds may be reused)."""
        self._lib.llama_memory_seq_rm(self._model.memory, slot.seq, -1, -1)
        slot.cached, slot.key = [], ()

    def _shutdown(self) -> None:
        error = ApiError(503, "the server is shutting down; this generation was stopped. Retry after the restart.")
        for slot in self.slots:
            if slot.job is not None:
                self._fail(slot, error)
        with self._cv:
            self._stopping = True
            waiting, self._waiting = list(self._waiting), deque()
            calls, self._calls = self._calls, []
            side, self._side = list(self._side), deque()
        for job in waiting:
            self._emit(job, Failed(error))
            self._drop(job)
        for work in side:
            work.fail(error)
        for fn in calls:
            fn()
        self._flush()
