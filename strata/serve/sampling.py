"""Sampling in C: one llama.cpp sampler chain per slot built from the request's fields, and logprobs when asked."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any, Sequence

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed


@dataclass(frozen=True)
class Sampling:
    """Sampling knobs; defaults are llama-cpp-python's create_completion defaults (temperature 0 is greedy)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None  # GBNF text, root rule `root`

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


class SamplerChain:
    """A llama_sampler chain: logit bias -> penalties -> grammar -> greedy, or top-k/typical/top-p/min-p/temp/dist.
    Owned by one slot and used only on the decode thread."""

    def __init__(self, sampling: Sampling, vocab: Any, n_vocab: int, default_seed: int = DEFAULT_SEED,
                 eog: Sequence[int] = ()) -> None:
        """`eog`: end-of-generation tokens to ban (ignore_eos), as llama-server does with a -inf logit bias."""
        import llama_cpp

        self._lib = llama_cpp
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._penalties: int | None = None
        self._n_vocab = n_vocab
        self._guarded = sampling.grammar is not None  # see sample()
        self._ids = self._cur = None
        if self._guarded:  # sample()'s llama_token_data buffer, made once per request, not per token
            import numpy as np

            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._cur = np.empty(n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        add = self._add
        biases = list(sampling.logit_bias) + [(t, float("-inf")) for t in eog]
        if biases:
            bias = (llama_cpp.llama_logit_bias * len(biases))()
            for i, (token, value) in enumerate(biases):
                bias[i].token, bias[i].bias = token, value
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), bias))
        if sampling.penalized:
            self._penalties = add(llama_cpp.llama_sampler_init_penalties(
                n_vocab, sampling.penalty_last_n, sampling.repeat_penalty, sampling.frequency_penalty,
                sampling.presence_penalty))
        if sampling.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(vocab, sampling.grammar.encode("utf-8"), b"root")
            if not grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the grammar")
            add(grammar)
        seed = sampling.seed if sampling.seed is not None else default_seed
        if sampling.temperature == 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            if sampling.temperature > 0:
                add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
                add(llama_cpp.llama_sampler_init_typical(sampling.typical_p, 1))
                add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
                add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
                add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def _add(self, sampler: Any) -> int:
        self._lib.llama_sampler_chain_add(self.chain, sampler)
        return self._lib.llama_sampler_chain_n(self.chain) - 1

    def accept_prompt(self, tokens: list[int]) -> None:
        """Let the penalties see the prompt (as llama-server does); the grammar only ever sees generated tokens."""
        if self._penalties is None:
            return
        penalties = self._lib.llama_sampler_chain_get(self.chain, self._penalties)
        for token in tokens:
            self._lib.llama_sampler_accept(penalties, token)

    def sample(self, ctx: Any, index: int) -> int | None:
        """Sample (and accept) a token from output `index` of the last llama_decode. With a grammar: None when
        it allows no token at all (a dead end, or only end-of-text while ignore_eos or a logit bias bans it).
        llama_sampler_sample would accept a token the grammar rejects, and llama.cpp's C++ exception for that
        aborts the whole process, so grammar chains apply and accept here, checking in between."""
        lib = self._lib
        if not self._guarded:
            return lib.llama_sampler_sample(self.chain, ctx, index)
        import numpy as np

        pointer = ctypes.cast(lib.llama_get_logits_ith(ctx, index), ctypes.POINTER(ctypes.c_float))
        cur = self._cur  # llama_token_data; apply() may have reordered it last time, so every field is refilled
        cur["id"] = self._ids
        cur["logit"] = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        cur["p"] = 0.0
        array = lib.llama_token_data_array(data=cur.ctypes.data_as(lib.llama_token_data_p), size=self._n_vocab,
                                           selected=-1, sorted=False)
        lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        picked = array.data[array.selected]
        if not math.isfinite(picked.logit):  # the grammar (or a -inf bias) ruled every token out
            return None
        lib.llama_sampler_accept(self.chain, picked.id)
        return int(picked.id)

    def close(self) -> None:
        if self.chain:
            self._lib.llama_sampler_free(self.chain)
            self.chain = None


def check_grammar(vocab: Any, grammar: str) -> None:
    """ValueError unless llama.cpp parses `grammar` (GBNF with a `root` rule) for this vocab."""
    import llama_cpp

    from strata.serve.model import quiet_llama

    with quiet_llama(False):
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise ValueError("llama.cpp could not parse the grammar (GBNF with a `root` rule, e.g. root ::= \"yes\" | "
                         "\"no\")")
    llama_cpp.llama_sampler_free(sampler)


def logprobs_at(ctx: Any, index: int, n_vocab: int, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """log p(token) and the `top` most likely (token, log p) at output `index`, from the raw logits (copied into
    numpy only here, when a request asked for logprobs)."""
    import llama_cpp
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(ctx, index)
    logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    peak = float(logits.max())
    norm = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))
    best: list[tuple[int, float]] = []
    if top > 0:
        ids = np.argpartition(-logits, min(top, n_vocab - 1))[:top]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        best = [(int(i), float(logits[i]) - norm) for i in ids]
    return float(logits[token]) - norm, best
