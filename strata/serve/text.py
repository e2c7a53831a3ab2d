"""Text in and out: chat messages -> prompt tokens (llama-cpp-python's chat formats or the GGUF's own template) and
token pieces -> streamed text (incomplete UTF-8 and possible stop-string prefixes held back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from strata.serve.errors import ApiError

MAX_STOPS = 32
MAX_STOP_CHARS = 256


@dataclass(frozen=True)
class Prompt:
    """Tokens to evaluate and the stop strings the chat format adds."""

    tokens: list[int]
    stop: list[str]


class _Rendered(Exception):
    """Raised by the recorder to carry a chat handler's completion arguments out of it."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("rendered")
        self.kwargs = kwargs


class _Recorder:
    """Stands in for llama_cpp.Llama while a registered chat handler renders messages: the handler tokenizes
    through it and then calls create_completion, which records the prompt instead of generating."""

    verbose = False

    def __init__(self, tokenize: Callable[[bytes, bool, bool], list[int]]) -> None:
        self._tokenize = tokenize

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._tokenize(text, add_bos, special)

    def create_completion(self, **kwargs: Any) -> Any:
        raise _Rendered(kwargs)


class ChatTemplate:
    """The chat format a server uses: --chat_format NAME, else the GGUF's tokenizer.chat_template, else llama-2
    (the same choice llama-cpp-python's Llama makes)."""

    def __init__(self, model: Any, chat_format: str | None) -> None:
        from llama_cpp import llama_chat_format as formats

        self._model = model
        self.name, self._handler = self._choose(formats, model, chat_format)

    @staticmethod
    def _choose(formats: Any, model: Any, chat_format: str | None) -> tuple[str, Callable[..., Any]]:
        template = model.metadata.get("tokenizer.chat_template")
        if chat_format is None and template:
            guessed = formats.guess_chat_format_from_gguf_metadata(model.metadata)
            if guessed is None:
                eos, bos = model.eos, model.bos
                handler = formats.Jinja2ChatFormatter(
                    template=template, eos_token=model.token_text(eos) if eos != -1 else "",
                    bos_token=model.token_text(bos) if bos != -1 else "", stop_token_ids=[eos]).to_chat_handler()
                return "chat_template.default", handler
            chat_format = guessed
        name = chat_format or "llama-2"
        try:
            return name, formats.get_chat_completion_handler(name)
        except ValueError as exc:
            raise ValueError(f"unknown --chat_format {name!r}: {exc}") from None

    def render(self, messages: list[dict[str, Any]], **extra: Any) -> Prompt:
        """Messages -> prompt tokens and the format's stop strings; 400 when the template refuses them."""
        def tokenize(text: bytes, add_bos: bool, special: bool) -> list[int]:
            return self._model.tokenize(text.decode("utf-8", "surrogatepass"), add_bos, special)

        try:
            self._handler(llama=_Recorder(tokenize), messages=messages, stop=[], **extra)
        except _Rendered as done:
            stop = done.kwargs.get("stop") or []
            return Prompt(tokens=list(done.kwargs["prompt"]), stop=[stop] if isinstance(stop, str) else list(stop))
        except (ValueError, TypeError, KeyError) as exc:  # the template's own raise_exception, bad message parts
            raise ApiError(400, f"the chat template ({self.name}) cannot render these messages: {exc}") from None
        raise ApiError(400, f"chat format {self.name} does not render a plain prompt; start the server with another "
                            "--chat_format (e.g. chatml, mistral-instruct, llama-2) or none (the GGUF's template).")


def check_stops(stop: Any) -> list[str]:
    """The request's `stop` as a list, bounded so that the per-token check stays cheap."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"\"stop\" takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters each; "
                            "send fewer or shorter stop strings.")
    return [s for s in stops if s]


def utf8_split(data: bytes) -> int:
    """Index where a trailing incomplete UTF-8 sequence starts (len(data) when there is none)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: look further back for the lead
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
        return len(data)
    return len(data)


class TextStream:
    """Token pieces in, text deltas out; the concatenated deltas are exactly the final text, streamed or not."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._raw = b""  # bytes of an incomplete UTF-8 sequence
        self._held = ""  # decoded text that may be the start of a stop string
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now certain (empty while held back)."""
        data = self._raw + piece
        cut = utf8_split(data)
        self._raw = data[cut:]
        held = self._held + data[:cut].decode("utf-8", "ignore")
        hit = min((i for i in (held.find(s) for s in self.stops) if i >= 0), default=-1)
        if hit >= 0:
            self.stopped, self._held, self._raw = True, "", b""
            return held[:hit]
        keep = self._stop_prefix(held)
        self._held = held[len(held) - keep:] if keep else ""
        return held[:len(held) - keep]

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that some stop string starts with."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best

    def finish(self) -> str:
        """Whatever is still held when generation ends for another reason (length, end of text)."""
        rest = self._held + self._raw.decode("utf-8", "ignore")
        self._held, self._raw = "", b""
        return rest
