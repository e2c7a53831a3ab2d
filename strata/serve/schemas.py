"""Request validation: JSON bodies (size-limited), adapter lists and completion parameters -> 400 on bad input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from strata.serve.errors import ApiError
from strata.serve.registry import Ref
from strata.serve.sampling import Sampling
from strata.serve.text import check_stops

NUMBER = (int, float)
TEXT_MAX_TOKENS = 16  # llama-cpp-python's (and OpenAI's) default for /v1/completions
CHAT_DEFAULTS = {"temperature": 0.2}  # llama-cpp-python's create_chat_completion default
# field -> (accepted types, description) for the scalar fields of both endpoints.
COMMON: dict[str, tuple[tuple[type, ...], str]] = {
    "max_tokens": ((int, type(None)), "an integer"),
    "temperature": (NUMBER, "a number"),
    "top_p": (NUMBER, "a number"),
    "top_k": ((int,), "an integer"),
    "min_p": (NUMBER, "a number"),
    "typical_p": (NUMBER, "a number"),
    "repeat_penalty": (NUMBER, "a number"),
    "presence_penalty": (NUMBER, "a number"),
    "frequency_penalty": (NUMBER, "a number"),
    "seed": ((int, type(None)), "an integer"),
    "stop": ((str, list, type(None)), "a string or a list of strings"),
    "ignore_eos": ((bool,), "true or false"),
    "grammar": ((str, type(None)), "a GBNF grammar string"),
}
TEXT = {"echo": ((bool,), "true or false"), "logprobs": ((int, type(None)), "an integer (0-20) or null")}
CHAT = {"logprobs": ((bool, type(None)), "true or false"), "top_logprobs": ((int, type(None)), "an integer")}


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 past `limit` bytes (checked while reading), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit} (--max-body-bytes).")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the {limit}-byte limit (--max-body-bytes).")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null", parse_constant=_reject_constant)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc}); send a JSON object.") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid number")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that true/false never pass for numbers."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def parse_ref(entry: Any, where: str) -> Ref:
    """{"id": N | "path": P, "scale": S} -> Ref; scale defaults to 1 and must be finite."""
    if not isinstance(entry, dict):
        raise ApiError(400, f"{where} must be an object like {{\"path\": \"...\", \"scale\": 1.0}} or {{\"id\": 0, "
                            "\"scale\": 1.0}}")
    scale = entry.get("scale", 1.0)
    if not _is(scale, NUMBER) or not math.isfinite(scale):
        raise ApiError(400, f"{where}.scale must be a finite number, got {scale!r}")
    if "id" in entry and entry["id"] is not None:
        if not _is(entry["id"], (int,)):
            raise ApiError(400, f"{where}.id must be an integer, got {entry['id']!r}")
        return Ref(scale=float(scale), id=entry["id"])
    path = entry.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ApiError(400, f"{where} needs \"path\" (a non-empty string) or \"id\" (an integer)")
    return Ref(scale=float(scale), path=path)


def parse_adapter_body(body: Any) -> list[Ref]:
    """Seed form {"adapters": [...]} or llama-server form [{"id": 0, "scale": 0.5}, ...]."""
    if isinstance(body, dict) and set(body) == {"adapters"}:
        body = body["adapters"]
    elif isinstance(body, dict):
        raise ApiError(400, "body must be {\"adapters\": [{\"path\": P, \"scale\": S}, ...]} or "
                            "[{\"id\": N, \"scale\": S}, ...]")
    if not isinstance(body, list):
        raise ApiError(400, "adapters must be a list ([] clears every adapter)")
    return [parse_ref(entry, f"adapters[{i}]") for i, entry in enumerate(body)]


@dataclass
class CompletionRequest:
    """A validated /v1/completions or /v1/chat/completions body."""

    kind: str  # "chat" or "text"
    sampling: Sampling
    max_tokens: int | None  # None or <= 0: as many as the context leaves
    stop: list[str]
    stream: bool
    model: str | None
    lora: list[Ref] | None
    prompt: str | list[int] = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    echo: bool = False
    logprobs: int | None = None  # alternatives per token to report; None: no logprobs
    include_usage: bool = False  # stream_options.include_usage
    ignore_eos: bool = False
    logit_bias: dict[int, float] = field(default_factory=dict)


def _check_fields(body: dict, spec: dict[str, tuple[tuple[type, ...], str]]) -> dict[str, Any]:
    out = {}
    for name, (types, what) in spec.items():
        if name in body:
            value = body[name]
            if not _is(value, types) or (isinstance(value, float) and not math.isfinite(value)):
                raise ApiError(400, f"\"{name}\" must be {what}, got {value!r}")
            if name == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
                raise ApiError(400, "\"stop\" must be a string or a list of strings")
            out[name] = value
    return out


def _logit_bias(value: Any) -> dict[int, float]:
    """{"token id": bias} (OpenAI sends the ids as strings) -> {int: float}; the engine checks the ids exist."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "\"logit_bias\" must be an object mapping token ids to numbers, e.g. {\"15\": -100}")
    out = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ApiError(400, f"\"logit_bias\" keys must be token ids (integers), got {key!r}") from None
        if not _is(bias, NUMBER) or not math.isfinite(bias):
            raise ApiError(400, f"\"logit_bias\"[{key!r}] must be a finite number, got {bias!r}")
        out[token] = float(bias)
    return out


def _sampling(params: dict[str, Any], kind: str) -> Sampling:
    if params.get("repeat_penalty", 1.0) <= 0:
        raise ApiError(400, "\"repeat_penalty\" must be greater than 0 (1.0 turns it off)")
    if params.get("top_k", 1) < 0:
        raise ApiError(400, "\"top_k\" must be 0 (off) or more")
    knobs = {k: params[k] for k in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty",
                                    "presence_penalty", "frequency_penalty") if k in params}
    seed = params.get("seed")
    defaults = CHAT_DEFAULTS if kind == "chat" else {}
    return Sampling(**{**defaults, **knobs}, seed=None if seed is None else seed % (1 << 32),
                    grammar=params.get("grammar") or None)


def parse_completion(body: Any, kind: str) -> CompletionRequest:
    """Validate a completion body; `kind` is "chat" or "text"."""
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    params = _check_fields(body, {**COMMON, **(CHAT if kind == "chat" else TEXT)})
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported; send several requests instead")
    extra: dict[str, Any] = {}
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ApiError(400, "\"messages\" must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
        extra["messages"] = messages
        if params.get("logprobs"):
            top = params.get("top_logprobs") or 0
            if not 0 <= top <= 20:
                raise ApiError(400, "\"top_logprobs\" must be between 0 and 20")
            extra["logprobs"] = top
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(_is(t, (int,)) for t in prompt)):
            raise ApiError(400, "\"prompt\" must be a string (or a list of token ids)")
        extra["prompt"] = prompt
        if params.get("logprobs") is not None:
            if not 0 <= params["logprobs"] <= 20:
                raise ApiError(400, "\"logprobs\" must be between 0 and 20")
            extra["logprobs"] = params["logprobs"]
        extra["echo"] = params.get("echo", False)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"\"stream\" must be true or false, got {stream!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "\"stream_options\" must be an object like {\"include_usage\": true}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "\"model\" must be a string")
    lora = body.get("lora")
    if lora is not None and not isinstance(lora, list):
        raise ApiError(400, "\"lora\" must be a list of {\"id\"|\"path\", \"scale\"} objects")
    refs = [parse_ref(e, f"lora[{i}]") for i, e in enumerate(lora)] if lora is not None else None
    max_tokens = params.get("max_tokens", None if kind == "chat" else TEXT_MAX_TOKENS)
    return CompletionRequest(kind=kind, sampling=_sampling(params, kind), max_tokens=max_tokens,
                             stop=check_stops(params.get("stop")), stream=stream, model=model, lora=refs,
                             include_usage=bool(options.get("include_usage")),
                             ignore_eos=params.get("ignore_eos", False), logit_bias=_logit_bias(body.get("logit_bias")),
                             **extra)
