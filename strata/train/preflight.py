"""Checks on the base before any work: the tokenizer fits the embedding, chat levels have a template, and llama.cpp's
own converter turns the base's vocabulary into a GGUF that llama.cpp loads (so an unsupported base fails in seconds)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Callable

from strata.errors import StrataError
from strata.files import atomic_write_json, read_json_or_none
from strata.modelfolder import CHAT_TEMPLATE_PLACES, extra_files, has_chat_template, require_chat_template
from strata.settings import Settings


def check_base(settings: Settings, base_dir: Path, formats: dict[str, str],
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every check on `base_dir` for levels whose data formats are `formats` ({"level 2": "chat", ...});
    returns what was found, raises a StrataError naming the first problem and its fix."""
    from transformers import AutoConfig, AutoTokenizer

    base_dir = Path(base_dir)
    try:
        config = AutoConfig.from_pretrained(base_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise StrataError(f"transformers cannot load the base model's config or tokenizer in {base_dir} "
                          f"({type(exc).__name__}: {exc}); it must be a Hugging Face model dir with its tokenizer "
                          "files.") from None
    found = {"architecture": (config.architectures or [type(config).__name__])[0],
             **tokenizer_fits(base_dir, config, tokenizer)}
    chat = sorted(name for name, fmt in formats.items() if fmt == "chat")
    if chat:
        require_chat_template(has_chat_template(base_dir), str(base_dir),
                              f"{', '.join(chat)} cannot train on chat records (format: chat)",
                              f"Add the model's chat template there ({CHAT_TEMPLATE_PLACES}), or set format: text in "
                              "those levels' presets.")
    found |= llamacpp_vocab(base_dir, settings.runs / "preflight")
    window = sliding_window(config)
    if window and not found.get("gguf_sliding_window"):
        echo(f"note: {base_dir.name} attends through a {window}-token sliding window, but llama.cpp's GGUF of it has "
             f"none, so llama.cpp attends to the whole context: served outputs match training only while the context "
             f"stays within {window} tokens (keep N_CTX <= {window}).")
    echo(f"pre-flight: {found['architecture']} base; tokenizer ids 0..{found['largest_id']} fit its "
         f"{found['embedding_rows']} embedding rows; llama.cpp converts and loads its vocabulary "
         f"({found['gguf_vocab']} tokens, arch {found['gguf_arch']}){'; chat template present' if chat else ''}")
    return found


def tokenizer_fits(base_dir: Path, config: Any, tokenizer: Any) -> dict[str, int]:
    """The tokenizer's largest id must index the model's embedding; else training dies in an IndexError."""
    rows = int(config.get_text_config().vocab_size)
    largest = max(tokenizer.get_vocab().values())
    if largest >= rows:
        declared = _declared_class(base_dir)
        chosen = type(tokenizer).__name__
        swapped = declared and declared.removesuffix("Fast") != chosen.removesuffix("Fast")
        why = (f"tokenizer_config.json names {declared}, but transformers loads {chosen} for model_type "
               f"{config.model_type!r}. " if swapped else "")
        raise StrataError(f"the tokenizer of {base_dir} ({chosen}) has token ids up to {largest}, but the model's "
                          f"embedding has {rows} rows (vocab_size in config.json): training would stop with "
                          f"`IndexError: index out of range`. {why}Use the tokenizer files this model was trained "
                          f"with, or a model whose embedding has at least {largest + 1} rows.")
    return {"largest_id": largest, "embedding_rows": rows}


def sliding_window(config: Any) -> int | None:
    """The attention window the HF model applies inside its context (None: full attention)."""
    text = config.get_text_config()
    window = getattr(text, "sliding_window", None)
    if not window or getattr(text, "use_sliding_window", True) is False:
        return None
    return int(window) if window < getattr(text, "max_position_embeddings", window + 1) else None


def _declared_class(base_dir: Path) -> str | None:
    return (read_json_or_none(base_dir / "tokenizer_config.json") or {}).get("tokenizer_class")


def llamacpp_vocab(base_dir: Path, log_dir: Path) -> dict[str, Any]:
    """Convert only the vocabulary and hyperparameters with llama.cpp's convert_hf_to_gguf.py (`--vocab-only`), then
    load that vocabulary in llama.cpp: this asks the converter's own registry whether it knows the architecture and
    meets every tokenizer refusal (unknown BPE pre-tokenizer, ...) before training. A pass is cached by content."""
    from strata.export.adapter_gguf import read_metadata
    from strata.export.gguf_load import check_vocab
    from strata.llamacpp import cache_root, convert_hf

    cache = cache_root() / "preflight" / f"{_vocab_key(base_dir)}.json"
    cached = read_json_or_none(cache)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="strata-vocab-") as tmp:
        vocab = Path(tmp) / "vocab.gguf"
        convert_hf(base_dir, vocab, vocab_only=True, log=log_dir / f"{base_dir.name}.vocab-convert.log")
        size = check_vocab(vocab, log=log_dir / f"{base_dir.name}.vocab-load.log",
                           what=f"the vocabulary its converter made from {base_dir}")
        arch = read_metadata(vocab, "general.architecture")
        found = {"gguf_arch": arch, "gguf_vocab": size,
                 "gguf_sliding_window": read_metadata(vocab, f"{arch}.attention.sliding_window")}
    try:
        atomic_write_json(cache, found)
    except OSError:  # a read-only cache (a baked image) only costs the check again next time
        pass
    return found


def _vocab_key(base_dir: Path) -> str:
    """What the vocabulary check depends on: llama.cpp's scripts, the dir's name (llama.cpp reads general.name for
    some tokenizer rules) and every non-weight file (config, tokenizer files, chat template)."""
    from strata.llamacpp import installed_version, scripts_dir

    digest = hashlib.sha256(f"{installed_version()}|{scripts_dir()}|{base_dir.resolve().name}".encode())
    for path in extra_files(base_dir) + [base_dir / "config.json"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]
