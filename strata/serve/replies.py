"""What a slot's evaluated tokens become: prompt logprobs, the next sampled token, stream events and the end of a
job. The decode loop (scheduler.py) owns the context and batching; this side turns each decode's output into replies."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from strata.serve.errors import ApiError
from strata.serve.jobs import Done, Failed, Job, Token, TopList
from strata.serve.registry import set_label, set_names
from strata.serve.sampling import SamplerChain, logprobs_at, prompt_logprobs
from strata.serve.text import TextStream


@dataclass
class Slot:
    """One sequence of the context: the tokens its KV holds (for prefix reuse), and the job it runs, if any."""

    seq: int
    cached: list[int] = field(default_factory=list)
    key: tuple = ()
    label: str = ""  # the adapter set of the cached tokens, for GET /slots
    last_used: float = 0.0
    job: Job | None = None
    todo: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    sampler: SamplerChain | None = None
    text: TextStream | None = None
    generated: int = 0
    next_token: int | None = None  # sampled, not evaluated yet
    reused: int = 0
    prompt_lp: list = field(default_factory=list)


def deliver(items: list[tuple[Job, Any]]) -> None:
    for job, event in items:
        job.sink(event)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Replies:
    """The reply half of the Scheduler (a mixin): it reads the loop's `_model`, `_metrics`, `_release` and
    `_outbox`, and only ever runs on the decode thread."""

    def _after(self, slot: Slot, first: int, count: int) -> None:
        """Book the tokens a decode evaluated for `slot`, then sample its next token when its prompt is done."""
        job = slot.job
        if slot.next_token is not None:
            slot.cached.append(slot.next_token)
            slot.next_token = None
        else:
            chunk, slot.todo = slot.todo[:count], slot.todo[count:]
            if job.prompt_logprobs:  # output i predicts the prompt token after it
                base = len(slot.cached) - (job.soft.n_virtual if job.soft is not None else 0)
                following = job.prompt[base + 1:base + 1 + count]
                for token, (lp, top) in zip(following, prompt_logprobs(self._model.ctx, first, self._model.n_vocab,
                                                                        following, job.logprobs or 0)):
                    self._check_finite(lp, job)
                    slot.prompt_lp.append((self._text(token), lp, self._named(top)))
            slot.cached.extend(chunk)
            if slot.todo:
                return
        index = first + count - 1
        token = slot.sampler.sample(self._model.ctx, index)
        if token is None or (self._model.is_eog(token) and not job.ignore_eos):  # None: the grammar allows nothing
            self._finish(slot, "stop")
            return
        slot.generated += 1
        self._metrics.tokens.labels("completion").inc()
        self._metrics.set_tokens.labels(self._metrics.bounded(set_names(job.lora))).inc()
        lp = top = None
        piece = self._model.piece(token)
        if job.logprobs is not None:
            lp, best = logprobs_at(self._model.ctx, index, self._model.n_vocab, token, job.logprobs)
            self._check_finite(lp, job)
            top = self._named(best)
        text = slot.text.feed(piece)
        reason = "stop" if slot.text.stopped else "length" if slot.generated >= job.max_tokens else None
        if reason == "length":
            text += slot.text.finish()
        self._emit(job, Token(text=text, id=token, logprob=lp, top=top,
                              piece=piece.decode("utf-8", "ignore") if lp is not None else ""))
        if reason:
            self._finish(slot, reason)
        else:
            slot.next_token = token

    @staticmethod
    def _check_finite(logprob: float, job: Job) -> None:
        if not math.isfinite(logprob):
            raise ApiError(500, f"the model gave non-finite log-probabilities under adapters {set_label(job.lora)}; "
                                "that adapter (or its scale) breaks the model. Lower the scale or retrain it.")

    def _text(self, token: int) -> str:
        return self._model.piece(token).decode("utf-8", "ignore")

    def _named(self, best: list[tuple[int, float]]) -> TopList:
        return [(self._text(t), lp) for t, lp in best]

    def _finish(self, slot: Slot, reason: str | None) -> None:
        """End the slot's job: a Done event (none for a cancelled job), sampler freed, adapters released."""
        job = slot.job
        if reason is not None:
            rest = slot.text.finish() if reason == "stop" and not slot.text.stopped else ""
            if rest:
                self._emit(job, Token(text=rest, id=-1))
            self._emit(job, Done(reason=reason, prompt_tokens=len(job.prompt), completion_tokens=slot.generated,
                                 cached_tokens=slot.reused, prompt_logprobs=slot.prompt_lp or None))
        self._clear(slot)

    def _fail(self, slot: Slot, error: ApiError) -> None:
        self._emit(slot.job, Failed(error))
        self._clear(slot)

    def _clear(self, slot: Slot) -> None:
        job = slot.job
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.text, slot.todo, slot.next_token = None, None, None, [], None
        slot.last_used = time.perf_counter()
        self._release(job.lora)
        self._metrics.busy_slots.set(self.busy())

    def _drop(self, job: Job) -> None:
        """Forget a job that never got a slot: its prebuilt sampler freed, its adapters released."""
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None
        self._release(job.lora)

    def _emit(self, job: Job, event: Any) -> None:
        self._outbox.append((job, event))

    def _flush(self) -> None:
        """Hand this step's events over: one call_soon_threadsafe per event loop, not one per token, so with several
        streams the loop wakes once per step instead of contending for the GIL all through the step's work."""
        out, self._outbox = self._outbox, []
        by_loop: dict[Any, list[tuple[Job, Any]]] = {}
        for job, event in out:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, items in by_loop.items():
            if loop is None:
                deliver(items)
                continue
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
                for job, _ in items:
                    job.cancelled = True
