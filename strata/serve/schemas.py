"""Request validation: JSON bodies (size-limited), adapter lists and completion parameters -> 400 on bad input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from strata.serve.adapters import check_path, check_utf8
from strata.serve.config import DEFAULT_MAX_LORA_SCALE, check_scale, finite_float32
from strata.serve.errors import ApiError
from strata.serve.fields import FIELDS, NUMBER, check_known
from strata.serve.registry import Ref
from strata.serve.sampling import Sampling
from strata.serve.structured import grammar_for
from strata.serve.text import check_stops

TEXT_MAX_TOKENS = 16  # llama-cpp-python's (and OpenAI's) default for /v1/completions
CHAT_DEFAULTS = {"temperature": 0.2}  # llama-cpp-python's create_chat_completion default
PATHS = {"text": "/v1/completions", "chat": "/v1/chat/completions"}


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
        body = json.loads(b"".join(chunks) or b"null", parse_constant=_reject_constant)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc}); send a JSON object.") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply to parse; send a flatter JSON object.") from None
    check_text(body)
    return body


def check_text(body: Any) -> None:
    """400 naming the field when any key or string in a parsed body is not valid UTF-8 (see check_utf8)."""
    todo: list[tuple[str, Any]] = [("body", body)]
    while todo:  # iterative: bodies may nest about as deep as the JSON parser allows
        where, value = todo.pop()
        if isinstance(value, dict):  # keys shown with repr() unless plain names: a bad key must not break the reply
            named = [(f"{where}.{k}" if k.isidentifier() else f"{where}[{k!r}]", k, v) for k, v in value.items()]
            todo += [(f"a key of {where}", k) for _, k, _ in named] + [(w, v) for w, _, v in named]
        elif isinstance(value, list):
            todo += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, str):
            check_utf8(value, where[:200])


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid number")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that true/false never pass for numbers."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def parse_ref(entry: Any, where: str, max_scale: float = DEFAULT_MAX_LORA_SCALE) -> Ref:
    """{"id": N | "path": P, "scale": S} -> Ref; scale defaults to 1 and must be a finite float32 within
    ±max_scale; a path must be usable (no NUL, UTF-8, within PATH_MAX / NAME_MAX)."""
    if not isinstance(entry, dict):
        raise ApiError(400, f"{where} must be an object like {{\"path\": \"...\", \"scale\": 1.0}} or {{\"id\": 0, "
                            "\"scale\": 1.0}}")
    scale = entry.get("scale", 1.0)
    if not _is(scale, NUMBER):
        raise ApiError(400, f"{where}.scale must be a number, got {scale!r:.80}")
    try:
        check_scale(scale, f"{where}.scale", max_scale)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if "id" in entry and entry["id"] is not None:
        if not _is(entry["id"], (int,)):
            raise ApiError(400, f"{where}.id must be an integer, got {entry['id']!r}")
        return Ref(scale=float(scale), id=entry["id"])
    path = entry.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ApiError(400, f"{where} needs \"path\" (a non-empty string) or \"id\" (an integer)")
    return Ref(scale=float(scale), path=check_path(path, f"{where}.path"))


def parse_adapter_body(body: Any, max_scale: float = DEFAULT_MAX_LORA_SCALE) -> list[Ref]:
    """Seed form {"adapters": [...]} or llama-server form [{"id": 0, "scale": 0.5}, ...]."""
    if isinstance(body, dict) and set(body) == {"adapters"}:
        body = body["adapters"]
    elif isinstance(body, dict):
        raise ApiError(400, "body must be {\"adapters\": [{\"path\": P, \"scale\": S}, ...]} or "
                            "[{\"id\": N, \"scale\": S}, ...]")
    if not isinstance(body, list):
        raise ApiError(400, "adapters must be a list ([] clears every adapter)")
    return [parse_ref(entry, f"adapters[{i}]", max_scale) for i, entry in enumerate(body)]


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
    cache_prompt: bool = True
    logit_bias: dict[int, float] = field(default_factory=dict)
    soft_prompt: str | bool | None = None  # a name/path, False for none, None for the server's default


def _check_types(body: dict, path: str) -> None:
    """400 for an unknown or unsupported field, or a value of the wrong JSON type (NaN/inf included)."""
    check_known(body, path)
    for name, value in body.items():
        types, _ = FIELDS[path][name]
        if not _is(value, types) or (isinstance(value, float) and not math.isfinite(value)):
            raise ApiError(400, f"\"{name}\" must be {_kinds(types)}, got {value!r:.80}")


def _kinds(types: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _messages(value: Any) -> list[dict[str, Any]]:
    """Chat messages with text content; content parts of type text are joined, any other part is a 400."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, "\"messages\" must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string \"role\" and \"content\"")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise ApiError(400, f"messages[{i}] has {sorted(extra)}: only role, content and name are supported "
                                "(tool calls are not)")
        content = message.get("content")
        if isinstance(content, list):
            kinds = [p.get("type") if isinstance(p, dict) else None for p in content]
            other = [k for k in kinds if k != "text"]
            if other or not all(isinstance(p.get("text"), str) for p in content):
                raise ApiError(400, f"messages[{i}].content has a {other[0] if other else 'malformed'!r} part: only "
                                    "text parts are supported (this server serves a text-only GGUF)")
            content = "".join(p["text"] for p in content)
        elif content is not None and not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts")
        out.append({**message, "content": content or ""})
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
        if not _is(bias, NUMBER) or not finite_float32(bias):
            raise ApiError(400, f"\"logit_bias\"[{key!r}] must be a finite number, also as llama.cpp's float32 "
                                f"(-100 bans a token), got {bias!r:.40}")
        out[token] = float(bias)
    return out


# sampling knobs with a range (low, high; None: unbounded), as llama.cpp reads them: a value outside is a 400
RANGES = {"temperature": (0.0, None, "0 is greedy; higher is more random"),
          "top_p": (0.0, 1.0, "1 turns it off"),
          "min_p": (0.0, 1.0, "0 turns it off")}


def _check_ranges(body: dict[str, Any]) -> None:
    for name, (low, high, hint) in RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if not (value >= low and (high is None or value <= high)):  # NaN fails both
            span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ApiError(400, f"\"{name}\" must be {span} ({hint}), got {value!r:.40}")


def _sampling(body: dict[str, Any], kind: str, grammar: str | None) -> Sampling:
    _check_ranges(body)
    if body.get("repeat_penalty", 1.0) <= 0:
        raise ApiError(400, "\"repeat_penalty\" must be greater than 0 (1.0 turns it off)")
    if body.get("top_k", 1) < 0:
        raise ApiError(400, "\"top_k\" must be 0 (off) or more")
    knobs = {k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty",
                                  "presence_penalty", "frequency_penalty") if k in body}
    seed = body.get("seed")
    defaults = CHAT_DEFAULTS if kind == "chat" else {}
    return Sampling(**{**defaults, **knobs}, seed=None if seed is None else seed % (1 << 32), grammar=grammar)


def _top(value: Any, name: str) -> int | None:
    if value is not None and not 0 <= value <= 20:
        raise ApiError(400, f"\"{name}\" must be between 0 and 20")
    return value


def parse_lora(body: dict[str, Any], max_scale: float) -> list[Ref] | None:
    """A request's own adapter set (the "lora" field), or None for the global set."""
    lora = body.get("lora")
    return [parse_ref(e, f"lora[{i}]", max_scale) for i, e in enumerate(lora)] if lora is not None else None


def _fields(body: Any, path: str) -> dict[str, Any]:
    """`body` as a JSON object whose fields `path` accepts, with the types the field table gives (else a 400)."""
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    _check_types(body, path)
    return body


def parse_completion(body: Any, kind: str, max_scale: float = DEFAULT_MAX_LORA_SCALE) -> CompletionRequest:
    """Validate a completion body against the field table; `kind` is "chat" or "text"; "lora" scales within
    ±max_scale."""
    body = _fields(body, PATHS[kind])
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported; send several requests instead")
    extra: dict[str, Any] = {}
    if kind == "chat":
        extra["messages"] = _messages(body.get("messages"))
        top = _top(body.get("top_logprobs"), "top_logprobs")
        if body.get("logprobs"):
            extra["logprobs"] = top or 0
        elif top:
            raise ApiError(400, "\"top_logprobs\" needs \"logprobs\": true")
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(_is(t, (int,)) for t in prompt)):
            raise ApiError(400, "\"prompt\" must be a string (or a list of token ids); send one prompt per request")
        extra["prompt"] = prompt
        extra["logprobs"] = _top(body.get("logprobs"), "logprobs")
        extra["echo"] = body.get("echo", False)
    options = body.get("stream_options") or {}
    if not isinstance(options.get("include_usage", False), bool) or set(options) - {"include_usage"}:
        raise ApiError(400, "\"stream_options\" must be {\"include_usage\": true|false}")
    refs = parse_lora(body, max_scale)
    default = None if kind == "chat" else TEXT_MAX_TOKENS
    max_tokens = body["max_tokens"] if "max_tokens" in body else body.get("max_completion_tokens", default)
    return CompletionRequest(kind=kind, sampling=_sampling(body, kind, grammar_for(body)), max_tokens=max_tokens,
                             stop=check_stops(body.get("stop")), stream=body.get("stream", False),
                             model=body.get("model"), lora=refs, include_usage=bool(options.get("include_usage")),
                             ignore_eos=body.get("ignore_eos", False), logit_bias=_logit_bias(body.get("logit_bias")),
                             cache_prompt=body.get("cache_prompt", True), soft_prompt=_soft_prompt(body), **extra)


def _soft_prompt(body: dict[str, Any]) -> str | bool | None:
    value = body.get("soft_prompt")
    if value is True:
        raise ApiError(400, "\"soft_prompt\" must be a soft prompt's name or path, false (none) or null (the server's "
                            "default); true names none.")
    return check_path(value, "soft_prompt") if isinstance(value, str) else value


SOFT_PROMPT_KEYS = {"enabled": (bool,), "default": (str, type(None))}


def parse_soft_prompt_body(body: Any) -> dict[str, Any]:
    """POST /soft-prompts: {"enabled": true|false, "default": NAME|PATH|null}, either key optional."""
    if not isinstance(body, dict) or not body or set(body) - set(SOFT_PROMPT_KEYS):
        raise ApiError(400, "body must be {\"enabled\": true|false, \"default\": NAME|PATH|null} (either key may be "
                            "left out)")
    for key, value in body.items():
        if not _is(value, SOFT_PROMPT_KEYS[key]):
            raise ApiError(400, f"\"{key}\" must be {_kinds(SOFT_PROMPT_KEYS[key])}, got {value!r:.80}")
    if isinstance(body.get("default"), str):
        check_path(body["default"], "default")
    return body


@dataclass
class EmbeddingRequest:
    """A validated /v1/embeddings body."""

    texts: list[str] | None  # strings to tokenize, or
    tokens: list[list[int]] | None  # token ids given directly
    encoding: str
    model: str | None
    lora: list[Ref] | None


def parse_tokenize(body: Any) -> tuple[str, bool, bool]:
    """Validate a /tokenize body: (content, add_special, parse_special)."""
    body = _fields(body, "/tokenize")
    if "content" not in body:
        raise ApiError(400, "\"content\" is required: the text to tokenize")
    return body["content"], body.get("add_special", False), body.get("parse_special", True)


def parse_template(body: Any) -> list[dict[str, Any]]:
    """Validate an /apply-template body: its chat messages."""
    return _messages(_fields(body, "/apply-template").get("messages"))


def parse_embeddings(body: Any, max_scale: float = DEFAULT_MAX_LORA_SCALE) -> EmbeddingRequest:
    """Validate an embeddings body: `input` as a string, strings, token ids, or lists of token ids."""
    body = _fields(body, "/v1/embeddings")
    if "input" not in body:
        raise ApiError(400, "\"input\" is required: a string or a list of strings")
    value = body["input"]
    texts = tokens = None
    if isinstance(value, str):
        texts = [value]
    elif value and all(isinstance(v, str) for v in value):
        texts = list(value)
    elif value and all(_is(v, (int,)) for v in value):
        tokens = [list(value)]
    elif value and all(isinstance(v, list) and v and all(_is(t, (int,)) for t in v) for v in value):
        tokens = [list(v) for v in value]
    else:
        raise ApiError(400, "\"input\" must be a string, a non-empty list of strings, a list of token ids, or a list "
                            "of lists of token ids")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"\"encoding_format\" must be \"float\" or \"base64\", got {encoding!r}")
    return EmbeddingRequest(texts=texts, tokens=tokens, encoding=encoding, model=body.get("model"),
                            lora=parse_lora(body, max_scale))
