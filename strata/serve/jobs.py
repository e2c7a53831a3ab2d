"""What the HTTP side and the decode loop hand each other: a Job, the events it streams back, and side work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from strata.serve.errors import ApiError
from strata.serve.registry import LoraSet
from strata.serve.sampling import Sampling

TopList = list[tuple[str, float]]


@dataclass
class Job:
    """One generation request as the decode loop sees it. `sink` receives Token, Done or Failed events, called on
    `loop` (the decode loop hands over each step's events in one wake-up) or, without a loop, on the decode thread;
    `cancelled` is set by the HTTP side when the client goes away."""

    prompt: list[int]
    sampling: Sampling
    lora: LoraSet
    max_tokens: int
    stops: list[str]
    sink: Callable[[Any], None]
    logprobs: int | None = None  # alternatives to report per generated token (None: no logprobs at all)
    prompt_logprobs: bool = False  # echo: also the log-probability of every prompt token
    loop: Any = None  # an asyncio event loop
    ignore_eos: bool = False
    reuse_prefix: bool = True  # cache_prompt: start from a slot's cached tokens when they match
    soft: Any = None  # a softprompts.SoftPrompt whose virtual tokens go before the prompt (None: none)
    sampler: Any = None  # a SamplerChain built off the decode thread (a grammar compiles there); None: built in it
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Token:
    """One generated token: the text it made certain (may be empty) and, when asked, its logprobs."""

    text: str
    id: int
    logprob: float | None = None
    top: TopList | None = None
    piece: str = ""  # the token's own text (only with logprobs)


@dataclass(frozen=True)
class Done:
    """The end of a generation and its usage."""

    reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    prompt_logprobs: list[tuple[str, float | None, TopList | None]] | None = None  # per prompt token, BOS left out


@dataclass(frozen=True)
class Failed:
    error: ApiError


@dataclass
class SideWork:
    """Compute that is not a generation (one embedding input): run on the decode thread between two decode steps,
    one item per step, so it neither runs beside the decode (no CPU oversubscription) nor stalls it for long."""

    run: Callable[[], None]
    fail: Callable[[ApiError], None]
