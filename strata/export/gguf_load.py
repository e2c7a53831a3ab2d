"""The build stage's own llama.cpp loads: a refusal becomes one StrataError line in llama.cpp's words, log in a file."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strata.errors import StrataError


def default_log(path: Path) -> Path:
    """Where a failed load of `path` leaves llama.cpp's full log: beside the file."""
    return path.with_name(path.name + ".load.log")


@contextmanager
def llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log (every level) instead of printing it, then give logging back to llama-cpp-python.
    With verbose=False llama-cpp-python throws the log away, and with it the reason a load failed."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def refusal(what: str, lines: list[str], log: Path) -> StrataError:
    """Write the collected log to `log`; the error names llama.cpp's reason, what to do, and the log file."""
    from strata.llamacpp import explain

    text = "".join(lines)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    return StrataError(f"llama.cpp could not load {what}: {explain(text)}. Full log: {log}")


def open_model(path: Path, log: Path | None = None, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(model_path=path, verbose=False, **kwargs)`, or a StrataError saying why llama.cpp refused."""
    import llama_cpp

    with llama_log() as lines:
        try:
            return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)
        except ValueError:
            pass
    raise refusal(path.name, lines, log or default_log(path))


def check_vocab(path: Path, log: Path | None = None, what: str | None = None) -> int:
    """Load only the vocabulary of the GGUF at `path` (as the server would); returns its size."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with llama_log() as lines:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise refusal(what or f"the vocabulary in {path.name}", lines, log or default_log(path))
    try:
        return int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
    finally:
        llama_cpp.llama_model_free(model)


def apply_loras(llm: Any, lora: list[tuple[Path, float]], log: Path | None = None) -> list[Any]:
    """Load GGUF LoRAs onto `llm` and make them its active set at the given scales; returns the adapter handles."""
    import llama_cpp

    adapters = []
    for path, _ in lora:
        with llama_log() as lines:  # also hides a harmless CPU_REPACK line per tensor, logged at error level
            adapter = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode())
        if not adapter:
            raise refusal(f"the LoRA adapter {path}", lines, log or default_log(path))
        adapters.append(adapter)
    if adapters:
        array = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
        scales = (ctypes.c_float * len(adapters))(*[s for _, s in lora])
        llama_cpp.llama_set_adapters_lora(llm.ctx, array, len(adapters), scales)
    return adapters
