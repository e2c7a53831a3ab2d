"""OpenAI-shaped bodies: completion and chat replies, their stream chunks, usage and logprobs."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from strata.serve.jobs import Done, Token


def usage(done: Done) -> dict[str, Any]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens}}


def _top(top: list[tuple[str, float]] | None, own: tuple[str, float | None]) -> dict[str, float] | None:
    """llama-cpp-python's top_logprobs entry: the alternatives, plus the chosen token itself."""
    if top is None or own[1] is None:
        return None
    return {**dict(top), own[0]: own[1]}


def _chat_logprob(token: Token) -> dict[str, Any]:
    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {**entry(token.piece, token.logprob), "top_logprobs": [entry(t, lp) for t, lp in token.top or []]}


@dataclass
class Reply:
    """Builds one reply from the decode loop's events: the whole body, or SSE chunks as tokens arrive."""

    kind: str  # "chat" or "text"
    model: str
    prompt_text: str = ""  # echoed before the completion (text completions with echo)
    logprobs: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)

    def _head(self, obj: str) -> dict[str, Any]:
        prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
        return {"id": prefix + self.id, "object": obj, "created": self.created, "model": self.model}

    def add(self, token: Token) -> None:
        self.text.append(token.text)
        if self.logprobs and token.logprob is not None:
            self.tokens.append(token)

    # -- whole replies ----------------------------------------------------------------------------------------
    def body(self, done: Done) -> dict[str, Any]:
        text = "".join(self.text)
        if self.kind == "chat":
            logprobs = {"content": [_chat_logprob(t) for t in self.tokens]} if self.logprobs else None
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                      "finish_reason": done.reason}
            return {**self._head("chat.completion"), "choices": [choice], "usage": usage(done)}
        logprobs = self._text_logprobs(done) if self.logprobs else None
        choice = {"text": self.prompt_text + text, "index": 0, "logprobs": logprobs, "finish_reason": done.reason}
        return {**self._head("text_completion"), "choices": [choice], "usage": usage(done)}

    def _text_logprobs(self, done: Done) -> dict[str, Any]:
        """tokens / text_offset / token_logprobs / top_logprobs, echoed prompt first (its first entry null, as
        OpenAI and llama-cpp-python do)."""
        rows: list[tuple[str, float | None, dict | None]] = []
        if done.prompt_logprobs is not None:
            rows += [(text, lp, _top(top, (text, lp))) for text, lp, top in done.prompt_logprobs]
            if rows:
                rows[0] = (rows[0][0], None, None)
        rows += [(t.piece, t.logprob, _top(t.top, (t.piece, t.logprob))) for t in self.tokens]
        offsets, at = [], 0 if done.prompt_logprobs is not None else len(self.prompt_text)
        for text, _, _ in rows:
            offsets.append(at)
            at += len(text)
        return {"tokens": [r[0] for r in rows], "text_offset": offsets, "token_logprobs": [r[1] for r in rows],
                "top_logprobs": [r[2] for r in rows]}

    # -- stream chunks ----------------------------------------------------------------------------------------
    def first_chunks(self) -> list[dict[str, Any]]:
        if self.kind == "chat":
            return [self._chat_chunk({"role": "assistant"}, None)]
        return [self._text_chunk(self.prompt_text, None)] if self.prompt_text else []

    def chunk(self, token: Token) -> dict[str, Any] | None:
        """The chunk for one token (None when it made no text certain and carries no logprobs)."""
        with_lp = self.logprobs and token.logprob is not None
        if not token.text and not with_lp:
            return None
        if self.kind == "chat":
            lp = {"content": [_chat_logprob(token)]} if with_lp else None
            return self._chat_chunk({"content": token.text}, None, lp)
        lp = ({"tokens": [token.piece], "text_offset": [0], "token_logprobs": [token.logprob],
               "top_logprobs": [_top(token.top, (token.piece, token.logprob))]} if with_lp else None)
        return self._text_chunk(token.text, None, lp)

    def last_chunks(self, done: Done, include_usage: bool) -> list[dict[str, Any]]:
        final = self._chat_chunk({}, done.reason) if self.kind == "chat" else self._text_chunk("", done.reason)
        chunks = [final]
        if include_usage:
            obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
            chunks.append({**self._head(obj), "choices": [], "usage": usage(done)})
        return chunks

    def _chat_chunk(self, delta: dict, reason: str | None, logprobs: dict | None = None) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}

    def _text_chunk(self, text: str, reason: str | None, logprobs: dict | None = None) -> dict[str, Any]:
        return {**self._head("text_completion"),
                "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": reason}]}
