"""`strata build convert --embedding HF_DIR`: a BERT-family sentence embedder to an F16 GGUF with llama.cpp's own
converter, written beside its final name and renamed only once llama.cpp has loaded it and embedded a sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from strata.errors import StrataError
from strata.files import read_json_or_none

Echo = Callable[[str], None]
PROBE = "A lessee recognises a right-of-use asset and a lease liability."


def convert_embedder(hf_dir: Path, out: Path, *, model_name: str | None = None, echo: Echo = print) -> Path:
    """HF sentence-embedder folder -> F16 GGUF at `out` (pooling from its sentence-transformers config, as
    llama.cpp's converter reads it). Returns `out`; a folder that is no model, or a GGUF llama.cpp cannot embed
    with, is a StrataError and leaves nothing at `out`."""
    from strata.index.embedder import GgufEmbedder
    from strata.llamacpp import convert_hf

    hf_dir, out = Path(hf_dir), Path(out)
    config = read_json_or_none(hf_dir / "config.json")
    if not isinstance(config, dict):
        raise StrataError(f"{hf_dir} holds no readable config.json: pass the folder of a sentence embedder saved "
                          "by transformers or sentence-transformers (e.g. all-MiniLM-L6-v2).")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.partial")
    echo(f"converting {hf_dir} ({', '.join(config.get('architectures') or ['?'])}) to {out} with llama.cpp's "
         "convert_hf_to_gguf.py")
    try:
        convert_hf(hf_dir, staged, "f16", model_name=model_name or hf_dir.name, log=out.with_name(out.name + ".log"))
        embedder = GgufEmbedder(staged, 1)
        try:
            dims = len(embedder.embed([PROBE])[0])
        finally:
            embedder.close()
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    staged.replace(out)
    echo(f"embedder GGUF: {out} ({out.stat().st_size / 1e6:.1f} MB, {dims} dims; llama.cpp embedded a probe "
         f"sentence); use it with `strata build index --embedding-model {out}`")
    return out
