"""`merge_level`: merge the chosen LoRA/DoRA levels into a fresh 16/32-bit load of the base, written atomically to peft/merged/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from strata.errors import StrataError
from strata.files import atomic_write_json, now_iso, sha256_file, staged_path
from strata.modelfolder import (
    copy_model_extras,
    fingerprint,
    has_chat_template,
    level_dir,
    load_base_with_levels,
    pick_device,
    read_summary,
    resolve_base_model,
)
from strata.settings import Settings

RECORD = "merge_record.json"


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
        folder = level_dir(settings, level)
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
        summary = read_summary(folder)
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


def merge_levels(settings: Settings, levels: list[int] | None = None, out: Path | None = None,
                 echo: Callable[[str], None] = print) -> Path:
    """Merge levels (default: every trained peft/levelN, 1..N) into the base, in order, and write `out`
    (default peft/merged/): safetensors, config, tokenizer files incl. tokenizer.model, chat template, merge_record.json."""
    dirs = _level_dirs(settings, levels)
    base_dir = resolve_base_model(settings)
    base_fp = fingerprint(base_dir)
    described = _check_stack(dirs, base_fp, echo)
    device, dtype = pick_device("none")  # always a fresh bf16 (CUDA) / fp32 (CPU) load, never 4/8-bit
    out = Path(out or settings.merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    echo(f"merging {', '.join(d.name for d in dirs)} into {base_dir} ({str(dtype).removeprefix('torch.')} on {device}) ...")
    model = load_base_with_levels(base_dir, dirs, dtype)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise StrataError("refusing to merge into a 4/8-bit base: merged weights would be rounded. Load the base in 16/32-bit.")
    with staged_path(out, directory=True) as tmp:
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
            "chat_template": template, "merged_fingerprint": fingerprint(tmp),
            "created": now_iso(),
        })
    echo(f"wrote {out}")
    return out
