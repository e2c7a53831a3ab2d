"""`merge_level`: merge the chosen LoRA/DoRA levels into a fresh 16/32-bit load of the base, written atomically to peft/merged/."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from strata.errors import StrataError
from strata.files import atomic_write_json, sha256_file
from strata.settings import Settings
from strata.train import layers

RECORD = "merge_record.json"
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf"}
MODEL_FILES = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"}


def trained_levels(settings: Settings) -> list[int]:
    """Level numbers with a PEFT adapter under peft/levelN/, ascending."""
    found = [int(m.group(1)) for p in settings.peft.glob("level*")
             if (m := re.fullmatch(r"level(\d+)", p.name)) and (p / "adapter_config.json").is_file()]
    return sorted(found)


def _level_dirs(settings: Settings, levels: list[int] | None) -> list[Path]:
    if levels is None:
        levels = trained_levels(settings)
        if not levels:
            raise StrataError(f"no trained levels under {settings.peft}: train a level first "
                              "(strata build train --level 1), then merge.")
    if len(set(levels)) != len(levels):
        raise StrataError(f"--levels lists a level twice: {levels}; give each level once, lowest first.")
    dirs = []
    for level in levels:
        folder = layers.level_dir(settings, level)
        if not (folder / "adapter_config.json").is_file():
            raise StrataError(f"level {level} is not trained ({folder} has no adapter_config.json): train a level first "
                              f"(strata build train --level {level}) or leave it out of --levels.")
        dirs.append(folder)
    return dirs


def _check_stack(dirs: list[Path], base_fp: str, echo: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each level must sit on this base and on exactly the levels merged before it (as its summary records)."""
    described = []
    below: list[str | None] = []
    for folder in dirs:
        summary = layers.read_summary(folder)
        sha = sha256_file(folder / "adapter_model.safetensors")
        if summary is not None:
            if summary.get("base_fingerprint") not in (None, base_fp):
                raise StrataError(f"{folder} was trained on another base model (fingerprint {summary['base_fingerprint']}, "
                                  f"this base is {base_fp}); merge onto the base it was trained on, or retrain it.")
            recorded = [entry.get("adapter_sha256") for entry in summary.get("levels_below", [])]
            if recorded != below:
                raise StrataError(f"{folder.name} was trained on top of {len(recorded)} level(s) {recorded and '(by hash)'} "
                                  f"that differ from the {len(below)} merged before it here; merge the levels it was "
                                  "trained on, in order (e.g. --levels 1,2,3), or retrain it.")
            if summary.get("quantization") in ("int4", "int8"):
                echo(f"{folder.name} was trained with QLoRA ({summary['quantization']}); merging it into a fresh "
                     "16/32-bit load of the base, never into a quantized base.")
        described.append({"level": int(folder.name.removeprefix("level")), "path": str(folder),
                          "peft": (summary or {}).get("peft"), "adapter_sha256": sha,
                          "trained_quantization": (summary or {}).get("quantization")})
        below.append(sha)
    return described


def copy_model_extras(base_dir: Path, dest: Path) -> list[str]:
    """Copy the base's non-weight files save_pretrained does not write: tokenizer.model, tokenizer*.json,
    special tokens, chat template, generation config. Returns the names copied."""
    copied = []
    for extra in sorted(base_dir.iterdir()):
        if extra.is_file() and extra.suffix not in WEIGHT_SUFFIXES and extra.name not in MODEL_FILES \
                and not (dest / extra.name).exists():
            shutil.copy2(extra, dest / extra.name)
            copied.append(extra.name)
    return copied


def has_chat_template(model_dir: Path) -> bool:
    """A chat template as chat_template.jinja or inside tokenizer_config.json."""
    import json

    config = model_dir / "tokenizer_config.json"
    inline = config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
    return (model_dir / "chat_template.jinja").is_file() or inline


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` with renames; on failure the previous `out` is put back."""
    old = out.with_name(f".{out.name}.old-{time.time_ns()}") if out.exists() else None
    if old:
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old:
            old.rename(out)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def merge_levels(settings: Settings, levels: list[int] | None = None, out: Path | None = None,
                 echo: Callable[[str], None] = print) -> Path:
    """Merge levels (default: every trained peft/levelN, 1..N) into the base, in order, and write `out`
    (default peft/merged/): safetensors, config, tokenizer files incl. tokenizer.model, chat template, merge_record.json."""
    from strata.train.basemodel import resolve_base_model
    from strata.train.trainer import pick_device

    dirs = _level_dirs(settings, levels)
    base_dir = resolve_base_model(settings)
    base_fp = layers.fingerprint(base_dir)
    described = _check_stack(dirs, base_fp, echo)
    device, dtype = pick_device("none")  # always a fresh bf16 (CUDA) / fp32 (CPU) load, never 4/8-bit
    out = Path(out or settings.merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    echo(f"merging {', '.join(d.name for d in dirs)} into {base_dir} ({str(dtype).removeprefix('torch.')} on {device}) ...")
    model = layers.load_base_with_levels(base_dir, dirs, dtype)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise StrataError("refusing to merge into a 4/8-bit base: merged weights would be rounded. Load the base in 16/32-bit.")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        copied = copy_model_extras(base_dir, tmp)
        if (base_dir / "tokenizer.model").is_file() and not (tmp / "tokenizer.model").is_file():
            raise StrataError(f"tokenizer.model was not copied from {base_dir}; check the folder is readable.")
        template = has_chat_template(tmp)
        if not template:
            echo(f"warning: {base_dir} has no chat template; `strata build convert` will refuse the model until one is added.")
        atomic_write_json(tmp / RECORD, {
            "base_model": str(base_dir), "base_fingerprint": base_fp, "levels": described,
            "dtype": str(dtype).removeprefix("torch."), "device": device, "copied_from_base": copied,
            "chat_template": template, "merged_fingerprint": layers.fingerprint(tmp),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"wrote {out}")
    return out
