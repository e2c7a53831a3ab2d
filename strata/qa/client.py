"""A small httpx client for a strata (or llama.cpp-compatible) server: adapters, streamed chat, prompt logprobs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from strata.errors import StrataError


class ServerError(StrataError):
    """The server answered with an error status; the message carries its JSON error text."""


@dataclass(frozen=True)
class Generation:
    """One streamed reply and its timings (seconds); tokens/s is completion tokens over total latency."""

    text: str
    ttft_s: float | None
    latency_s: float
    completion_tokens: int

    @property
    def tokens_per_s(self) -> float | None:
        return self.completion_tokens / self.latency_s if self.latency_s > 0 and self.completion_tokens else None


class QAClient:
    """Talks to one server over HTTP; use as a context manager so the connection pool is closed."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._tokens: dict[tuple[str, str], list[int]] = {}  # (endpoint, text) -> token ids: the same for every layer

    def __enter__(self) -> "QAClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StrataError(f"cannot reach the server at {self.base_url}{path} ({exc}); "
                              "check that it is running and --server points at it") from None
        if response.status_code >= 400:
            raise ServerError(f"{method} {path} -> {response.status_code}: {_error_text(response)}")
        return response.json()

    def adapters(self) -> list[dict]:
        """GET /lora-adapters: every loaded adapter with its current scale."""
        return _adapter_list(self._request("GET", "/lora-adapters"))

    def set_adapters(self, adapters: list[tuple[str, float]]) -> list[dict]:
        """POST /lora-adapters with exactly this active set ([] clears); returns the server's new active set."""
        body = {"adapters": [{"path": path, "scale": scale} for path, scale in adapters]}
        return _adapter_list(self._request("POST", "/lora-adapters", json=body))

    def chat(self, prompt: str, *, max_tokens: int, seed: int, lora: list[tuple[str, float]] | None = None,
             soft_prompt: str | None = None) -> Generation:
        """A greedy (temperature 0, fixed seed) streamed chat reply; TTFT is the first chunk with content.
        `lora` runs this request alone under that adapter set ([] = none), leaving the server's global set alone."""
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0,
                "seed": seed, "stream": True, "stream_options": {"include_usage": True}, **_lora_field(lora),
                **_soft(soft_prompt)}
        pieces: list[str] = []
        chunks, usage_tokens, ttft = 0, None, None
        started = time.perf_counter()
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(f"POST /v1/chat/completions -> {response.status_code}: {_error_text(response)}")
                for event in sse_events(response):
                    if event.get("usage"):
                        usage_tokens = event["usage"].get("completion_tokens", usage_tokens)
                    for choice in event.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            ttft = ttft if ttft is not None else time.perf_counter() - started
                            pieces.append(content)
                            chunks += 1
        except httpx.HTTPError as exc:
            raise StrataError(f"chat request to {self.base_url} failed ({exc}); is the server still up?") from None
        latency = time.perf_counter() - started
        return Generation("".join(pieces), ttft, latency, usage_tokens if usage_tokens is not None else chunks)

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /gen/ask unstreamed: {"answer", "citations", "adapters", "usage", ...}."""
        return self._request("POST", "/gen/ask", json=body)

    def prompt_logprobs(self, text: str, lora: list[tuple[str, float]] | None = None,
                        soft_prompt: str | None = None) -> list[float | None]:
        """Log-probabilities of the text's own tokens (echo + logprobs; the first is None), under `lora` and
        `soft_prompt` if given."""
        return self._echo_logprobs(text, lora, soft_prompt)

    def answer_logprobs(self, question: str, answer: str, lora: list[tuple[str, float]] | None = None,
                        soft_prompt: str | None = None) -> list[float | None]:
        """Log-probabilities of `answer`'s tokens as the reply to `question`: the chat format's prompt for the question
        (/apply-template), then the answer's tokens (/tokenize), scored in one /v1/completions echo."""
        prompt = self._token_ids("/apply-template", question)
        reply = self._token_ids("/tokenize", answer)
        # the echo leaves out a leading BOS, so the answer's entries are counted from the end
        return self._echo_logprobs(prompt + reply, lora, soft_prompt)[-len(reply):] if reply else []

    def _token_ids(self, path: str, text: str) -> list[int]:
        """`text` as the question's chat prompt (/apply-template) or as plain text (/tokenize), asked once per text."""
        if (path, text) not in self._tokens:
            body = ({"messages": [{"role": "user", "content": text}]} if path == "/apply-template"
                    else {"content": text, "parse_special": False})
            self._tokens[(path, text)] = self._request("POST", path, json=body)["tokens"]
        return self._tokens[(path, text)]

    def _echo_logprobs(self, prompt: str | list[int], lora: list[tuple[str, float]] | None,
                       soft_prompt: str | None) -> list[float | None]:
        body = {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0.0,
                **_lora_field(lora), **_soft(soft_prompt)}
        reply = self._request("POST", "/v1/completions", json=body)
        try:
            logprobs = reply["choices"][0]["logprobs"]
            values = list(logprobs["token_logprobs"])
        except (KeyError, IndexError, TypeError):
            raise ServerError("the server returned no prompt logprobs for /v1/completions with echo; "
                              "start it with logits_all enabled") from None
        # With echo the last usage.completion_tokens entries belong to the generated token(s): keep the text's own.
        # (Not text_offset: llama-cpp-python's offsets count SentencePiece's leading space; not prompt_tokens: the
        # echo leaves out a leading BOS, which prompt_tokens counts.)
        generated = (reply.get("usage") or {}).get("completion_tokens")
        if isinstance(generated, int) and 0 < generated < len(values):
            values = values[:-generated]
        return values


def _lora_field(lora: list[tuple[str, float]] | None) -> dict[str, Any]:
    """The per-request `lora` body field (absent: the server's global adapter set applies)."""
    return {} if lora is None else {"lora": [{"path": path, "scale": scale} for path, scale in lora]}


def _soft(soft_prompt: str | None) -> dict[str, Any]:
    """The request's soft prompt: the layer's, else none (false), so a server default never skews the base."""
    return {"soft_prompt": soft_prompt or False}


def sse_events(response: httpx.Response) -> Any:
    """The JSON objects of an SSE stream (`data: {...}` lines), stopping at `data: [DONE]`; a stream that ends
    without `[DONE]` was cut short and raises ServerError."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "error" in event:
            raise ServerError(f"stream error: {_message(event)}")
        yield event
    raise ServerError("stream ended without [DONE]; the server stopped mid-reply (see its log).")


def _adapter_list(payload: Any) -> list[dict]:
    if isinstance(payload, dict):
        payload = payload.get("adapters", payload.get("data", []))
    return [item for item in payload if isinstance(item, dict)] if isinstance(payload, list) else []


def _error_text(response: httpx.Response) -> str:
    try:
        return _message(response.json())
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase


def _message(payload: Any) -> str:
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)
    return str(error)
