"""Adapter layers on disk: base fingerprints, the levels-below check, and the base with levels merged in."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import sha256_file, staged_path
from strata.modelfolder import (
    copy_model_extras,
    fingerprint,
    level_dir,
    load_base_with_levels,
    read_summary,
    resolve_base_model,
)
from strata.settings import Settings


def levels_below(settings: Settings, level: int, base_dir: Path | None = None) -> list[Path]:
    """Dirs of levels 1..level-1, checked: each is trained, on this base (fingerprint), and on the current
    versions of the levels under it. Raises "train level K first" naming the lowest level that fails."""
    if level <= 1:
        return []
    if base_dir is None:
        base_dir = resolve_base_model(settings)
    base_fp = fingerprint(base_dir)
    dirs: list[Path] = []
    for k in range(1, level):
        folder = level_dir(settings, k)
        fix = f"train level {k} first (strata build train --level {k})"
        summary = read_summary(folder)
        weights = folder / "adapter_model.safetensors"
        if summary is None or not weights.is_file() or not (folder / "adapter_config.json").is_file():
            raise StrataError(f"level {level} trains on levels 1..{level - 1}, but {folder} holds no finished "
                              f"adapter: {fix}.")
        if summary.get("base_fingerprint") != base_fp:
            raise StrataError(f"{folder} was trained on another base model (fingerprint "
                              f"{summary.get('base_fingerprint')} != {base_fp} of {base_dir}): {fix}.")
        if summary.get("adapter_sha256") != sha256_file(weights):
            raise StrataError(f"{folder}/adapter_model.safetensors does not match its training summary: {fix}.")
        recorded = [entry.get("adapter_sha256") for entry in summary.get("levels_below", [])]
        current = [read_summary(d).get("adapter_sha256") for d in dirs]  # type: ignore[union-attr]
        if recorded != current:
            raise StrataError(f"{folder} was trained on older versions of the levels below it: {fix}.")
        dirs.append(folder)
    return dirs


def describe_levels(level_dirs: list[Path]) -> list[dict[str, Any]]:
    """What a summary records about the levels an adapter was trained on."""
    out = []
    for folder in level_dirs:
        summary = read_summary(folder) or {}
        out.append({"name": folder.name, "path": str(folder), "level": summary.get("level"),
                    "adapter_sha256": summary.get("adapter_sha256"),
                    "base_fingerprint": summary.get("base_fingerprint")})
    return out


def merged_base_dir(settings: Settings, base_dir: Path, level_dirs: list[Path], dtype: Any) -> Path:
    """The base with `level_dirs` merged, saved once under peft/.bases/<key> (needed to load it quantized)."""
    key = hashlib.sha256("|".join([fingerprint(base_dir), *(sha256_file(d / "adapter_model.safetensors")
                                                            for d in level_dirs)]).encode()).hexdigest()[:16]
    dest = settings.peft / ".bases" / key
    if (dest / "config.json").is_file():
        return dest
    with staged_path(dest, directory=True) as tmp:
        load_base_with_levels(base_dir, level_dirs, dtype).save_pretrained(tmp)
        copy_model_extras(base_dir, tmp)  # tokenizer files, chat template, generation config
    return dest
