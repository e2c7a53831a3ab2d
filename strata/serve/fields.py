"""The request fields each endpoint accepts, as one table of data: the validator checks bodies against it and the
README's field table is rendered from it, so the two cannot drift. Anything else is a 400 that names it."""

from __future__ import annotations

from typing import Any

from strata.serve.errors import ApiError

NUMBER = (int, float)
NONE = type(None)
# field -> (accepted JSON types, what it means here). Types are checked by schemas.py; meanings go to the README.
Spec = dict[str, tuple[tuple[type, ...], str]]

SAMPLING: Spec = {
    "max_tokens": ((int, NONE), "tokens to generate; null or <= 0: as many as the context leaves (default 16 for "
                                "completions, unlimited for chat)"),
    "max_completion_tokens": ((int, NONE), "OpenAI's newer name for max_tokens"),
    "temperature": (NUMBER, "0 is greedy (default 0.8 completions, 0.2 chat)"),
    "top_p": (NUMBER, "nucleus sampling (default 0.95)"),
    "top_k": ((int,), "keep the k most likely tokens, 0 = off (default 40)"),
    "min_p": (NUMBER, "drop tokens below min_p x the top probability (default 0.05)"),
    "typical_p": (NUMBER, "locally typical sampling, 1.0 = off"),
    "repeat_penalty": (NUMBER, "> 0, 1.0 = off; over the last 64 tokens, prompt included"),
    "presence_penalty": (NUMBER, "OpenAI presence penalty"),
    "frequency_penalty": (NUMBER, "OpenAI frequency penalty"),
    "seed": ((int, NONE), "sampling seed (same seed, same reply)"),
    "stop": ((str, list, NONE), "a string or up to 32 strings (256 characters each) that end the reply"),
    "logit_bias": ((dict, NONE), "{\"token id\": bias}; ids must exist in the vocabulary"),
    "ignore_eos": ((bool,), "keep generating past end-of-text (llama-server's name)"),
    "grammar": ((str, NONE), "a GBNF grammar (root rule `root`) the reply must follow (llama-server's name)"),
    "json_schema": ((dict, NONE), "a JSON schema the reply must follow (llama-server's name)"),
    "stream": ((bool,), "server-sent events, one chunk per token"),
    "stream_options": ((dict, NONE), "{\"include_usage\": true} adds a usage chunk before [DONE]"),
    "cache_prompt": ((bool,), "reuse a slot's cached prompt prefix (default true; llama-server's name)"),
    "model": ((str, NONE), "an adapter's name picks that adapter alone; anything else is the base model"),
    "lora": ((list, NONE), "adapters for this request only: [{\"id\" | \"path\", \"scale\"}]"),
    "soft_prompt": ((str, bool, NONE), "a soft prompt (its name under WORKSPACE/soft_prompts/ or a path) whose "
                                       "virtual tokens go before the prompt; false: none; absent/null: the server's "
                                       "default while enabled (GET /soft-prompts)"),
    "n": ((int,), "number of choices: only 1"),
    "user": ((str, NONE), "OpenAI's end-user id; accepted, has no effect"),
}
FIELDS: dict[str, Spec] = {
    "/v1/completions": {
        "prompt": ((str, list), "a string, a one-string list, or a list of token ids"),
        "echo": ((bool,), "prepend the prompt to the reply (with logprobs: the prompt's logprobs too)"),
        "logprobs": ((int, NONE), "0-20: log-probability of each token plus that many alternatives"),
        **SAMPLING,
    },
    "/v1/chat/completions": {
        "messages": ((list,), "[{\"role\", \"content\"}]; content a string or text parts"),
        "logprobs": ((bool, NONE), "log-probability of each token (OpenAI shape)"),
        "top_logprobs": ((int, NONE), "0-20 alternatives per token, with logprobs"),
        "response_format": ((dict, NONE), "{\"type\": \"json_object\"}, or {\"type\": \"json_schema\", "
                                          "\"json_schema\": {\"schema\": ...}}; \"text\" is the default"),
        **SAMPLING,
    },
    "/tokenize": {  # llama-server's: what a prompt costs in tokens, and token-id prompts for /v1/completions
        "content": ((str,), "text to tokenize"),
        "add_special": ((bool,), "add BOS when the model adds one (default false)"),
        "parse_special": ((bool,), "read special-token text such as `<s>` as that token (default true)"),
    },

    "/v1/embeddings": {
        "input": ((str, list), "a string, a list of strings, or token ids (a list, or a list of lists)"),
        "encoding_format": ((str, NONE), "\"float\" (default) or \"base64\" (little-endian float32)"),
        "model": SAMPLING["model"],
        "lora": SAMPLING["lora"],
        "user": SAMPLING["user"],
    },
}
FIELDS["/apply-template"] = {  # llama-server's: the prompt the chat format makes of messages, as text and token ids
    "messages": FIELDS["/v1/chat/completions"]["messages"],
}
# Fields clients commonly send that strata does not implement: named, with what to do instead.
UNSUPPORTED = {
    "tools": "tool calling is not supported; describe the tools in the prompt and constrain the reply with "
             "response_format or grammar",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "suffix": "fill-in-the-middle is not supported",
    "best_of": "only one completion per request is generated",
    "audio": "audio output is not supported (a text-only GGUF is served)",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "store": "stored completions are not supported",
    "metadata": "stored completions are not supported",
    "service_tier": "there is one service tier",
    "reasoning_effort": "reasoning controls are not supported",
    "web_search_options": "web search is not supported",
    "dimensions": "embeddings have the model's own width; leave \"dimensions\" out",
}


def check_known(body: dict[str, Any], path: str) -> None:
    """400 for any field of `body` that `path` does not implement, naming it and what is supported."""
    spec = FIELDS[path]
    for name in body:
        if name in spec:
            continue
        supported = ", ".join(sorted(spec))
        if name in UNSUPPORTED:
            raise ApiError(400, f"\"{name}\" is not supported on {path}: {UNSUPPORTED[name]}. Supported fields: "
                                f"{supported}.")
        raise ApiError(400, f"unknown field \"{name}\" on {path}; supported fields: {supported}.")


def markdown() -> str:
    """The README's table of accepted fields, rendered from FIELDS."""
    lines = ["| field | endpoints | meaning |", "|---|---|---|"]
    rows: dict[tuple[str, str], list[str]] = {}
    for path, spec in FIELDS.items():
        for name, (_, meaning) in spec.items():
            rows.setdefault((name, meaning), []).append(path.removeprefix("/v1/"))
    for (name, meaning), paths in rows.items():
        lines.append(f"| `{name}` | {', '.join(paths)} | {meaning} |")
    lines.append("")
    lines.append("Rejected with a 400 that names them: " + ", ".join(f"`{n}`" for n in UNSUPPORTED) + ", and any "
                 "field not listed above.")
    return "\n".join(lines)
