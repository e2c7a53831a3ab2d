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
        self.grammar = None  # kept out of the chain: sample() checks only the token the chain picks (see there)
        self._ids = self._cur = None
        if sampling.grammar is not None:  # sample()'s llama_token_data buffer, made once per request, not per token
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
            self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, sampling.grammar.encode("utf-8"), b"root")
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the grammar")
            self._one = (llama_cpp.llama_token_data * 1)()
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
        """Sample (and accept) a token from output `index` of the last llama_decode. With a grammar, as llama.cpp's
        common sampler does: the chain picks a token, only that token is checked against the grammar, and only a
        rejected pick is resampled with the grammar applied to the whole vocabulary first. None when the grammar
        allows no token at all (a dead end, or only end-of-text while ignore_eos or a logit bias bans it)."""
        lib = self._lib
        if self.grammar is None:
            return lib.llama_sampler_sample(self.chain, ctx, index)
        array = self._fill(ctx, index)
        lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        token = self._selected(array)
        if token is not None and not self._allows(token):
            array = self._fill(ctx, index)  # resample: the grammar first, then the chain
            lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
            lib.llama_sampler_apply(self.chain, ctypes.byref(array))
            token = self._selected(array)
        if token is None:
            return None
        lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def _fill(self, ctx: Any, index: int) -> Any:
        """The logits of output `index` as a llama_token_data_array over the whole vocabulary (a reused buffer)."""
        import numpy as np

        lib = self._lib
        pointer = ctypes.cast(lib.llama_get_logits_ith(ctx, index), ctypes.POINTER(ctypes.c_float))
        cur = self._cur  # apply() may have reordered it last time, so every field is refilled
        cur["id"] = self._ids
        cur["logit"] = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        cur["p"] = 0.0
        return lib.llama_token_data_array(data=cur.ctypes.data_as(lib.llama_token_data_p), size=self._n_vocab,
                                          selected=-1, sorted=False)

    @staticmethod
    def _selected(array: Any) -> int | None:
        if not 0 <= array.selected < array.size:
            return None
        picked = array.data[array.selected]
        return int(picked.id) if math.isfinite(picked.logit) else None  # -inf: every token was ruled out

    def _allows(self, token: int) -> bool:
        """Whether the grammar accepts `token` next (checks that one token only)."""
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 1.0, 0.0
        array = self._lib.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return math.isfinite(one[0].logit)

    def close(self) -> None:
        if self.chain:
            self._lib.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar:
            self._lib.llama_sampler_free(self.grammar)
            self.grammar = None


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


def prompt_logprobs(ctx: Any, first: int, n_vocab: int, tokens: list[int], top: int
                    ) -> list[tuple[float, list[tuple[int, float]]]]:
    """logprobs_at for consecutive outputs first, first+1, ... (one per token of `tokens`), as one numpy pass over
    the rows (llama.cpp stores the outputs of one batch contiguously, in batch order)."""
    import llama_cpp
    import numpy as np

    if not tokens:
        return []
    rows = len(tokens)
    start = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, first), ctypes.c_void_p).value
    end = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, first + rows - 1), ctypes.c_void_p).value
    if end - start != (rows - 1) * n_vocab * ctypes.sizeof(ctypes.c_float):  # not one block: row by row
        return [logprobs_at(ctx, first + j, n_vocab, t, top) for j, t in enumerate(tokens)]
    pointer = ctypes.cast(start, ctypes.POINTER(ctypes.c_float))
    logits = np.ctypeslib.as_array(pointer, shape=(rows, n_vocab))
    peak = logits.max(axis=1, keepdims=True)
    norm = (peak + np.log(np.exp(logits - peak, dtype=np.float64).sum(axis=1, keepdims=True))).astype(np.float64)
    picked = logits[np.arange(rows), tokens] - norm[:, 0]
    best: list[list[tuple[int, float]]] = [[] for _ in range(rows)]
    if top > 0:
        k = min(top, n_vocab)
        ids = np.argpartition(-logits, min(k, n_vocab - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(logits, ids, axis=1), axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)
        values = np.take_along_axis(logits, ids, axis=1) - norm
        best = [[(int(i), float(v)) for i, v in zip(r_ids, r_vals)] for r_ids, r_vals in zip(ids, values)]
    return [(float(lp), b) for lp, b in zip(picked, best)]
