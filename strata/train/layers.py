"""Adapter layers on disk: base fingerprints, the levels-below check, and the base with levels merged in."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import sha256_file
from strata.settings import Settings

SUMMARY = "training_summary.json"
SAMPLES_PER_FILE = 16  # weight chunks read per safetensors file: enough to tell two checkpoints apart
SAMPLE_BYTES = 1 << 16


def fingerprint(model_dir: Path) -> str:
    """A stable id of an HF model dir, cheap for a 7B model: config.json, every weight file's name, size and
    safetensors header, and 16 evenly spaced 64 KiB samples of its bytes (first and last included) (about 1 MiB read per file)."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise StrataError(f"{model_dir} is not a Hugging Face model dir (no config.json); point --base-model / "
                          "BASE_MODEL at one.")
    digest = hashlib.sha256(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    weights = sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")])
    if not weights:
        raise StrataError(f"{model_dir} has no *.safetensors or *.bin weights; the base model is incomplete.")
    for path in weights:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            if path.suffix == ".safetensors":
                (length,) = struct.unpack("<Q", handle.read(8))
                digest.update(handle.read(length))
            for index in range(SAMPLES_PER_FILE):  # first to last chunk, evenly spaced
                handle.seek(max(0, size - SAMPLE_BYTES) * index // (SAMPLES_PER_FILE - 1))
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:32]


def read_summary(adapter_dir: Path) -> dict[str, Any] | None:
    """The adapter's training_summary.json, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(adapter_dir) / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def level_dir(settings: Settings, level: int) -> Path:
    return settings.peft / f"level{level}"


def levels_below(settings: Settings, level: int, base_dir: Path | None = None) -> list[Path]:
    """Dirs of levels 1..level-1, checked: each is trained, on this base (fingerprint), and on the current
    versions of the levels under it. Raises "train level K first" naming the lowest level that fails."""
    if level <= 1:
        return []
    if base_dir is None:
        from strata.train.basemodel import resolve_base_model

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
        out.append({"path": str(folder), "level": summary.get("level"),
                    "adapter_sha256": summary.get("adapter_sha256"),
                    "base_fingerprint": summary.get("base_fingerprint")})
    return out


def load_base_with_levels(base_dir: Path, level_dirs: list[Path], dtype: Any, **load_kwargs: Any) -> Any:
    """The HF causal LM at `base_dir` in `dtype` with each PEFT adapter in `level_dirs` merged in, in order
    (level 1 first). LoRA and DoRA merge the same way. Never call on a 4-bit/8-bit base: merge in 16/32-bit."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, **load_kwargs)
    for folder in level_dirs:
        try:
            model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        except Exception as exc:  # corrupt or foreign adapter files: name the level, not the library internals
            raise StrataError(f"cannot load the adapter in {folder} ({type(exc).__name__}: {exc}); retrain it "
                              f"(strata build train) or restore its files.") from exc
    return model


def merged_base_dir(settings: Settings, base_dir: Path, level_dirs: list[Path], dtype: Any) -> Path:
    """The base with `level_dirs` merged, saved once under peft/.bases/<key> (needed to load it quantized)."""
    import shutil
    import tempfile

    key = hashlib.sha256("|".join([fingerprint(base_dir), *(sha256_file(d / "adapter_model.safetensors")
                                                            for d in level_dirs)]).encode()).hexdigest()[:16]
    dest = settings.peft / ".bases" / key
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{key}-"))
    try:
        load_base_with_levels(base_dir, level_dirs, dtype).save_pretrained(tmp)
        for extra in base_dir.iterdir():  # tokenizer files, chat template, generation config
            if extra.is_file() and not (tmp / extra.name).exists() and extra.suffix not in {".safetensors", ".bin"}:
                shutil.copy2(extra, tmp / extra.name)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
