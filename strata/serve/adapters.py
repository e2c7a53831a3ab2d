"""Adapter paths: resolution to a GGUF LoRA file, the allow-list, GGUF metadata and base-compatibility checks."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from strata.serve.errors import ApiError

EXPORT_HINT = ("export it first: `strata build train ...` writes adapter.gguf into every adapter dir, or run "
               "llama.cpp's convert_lora_to_gguf.py ADAPTER_DIR --base HF_BASE --outfile ADAPTER_DIR/adapter.gguf")
FINGERPRINT_KEY = "strata.base_fingerprint"


def _limit(name: str, default: int) -> int:
    try:
        return os.pathconf("/", name)
    except (OSError, ValueError):
        return default


PATH_MAX = _limit("PC_PATH_MAX", 4096)  # bytes, including the final NUL
NAME_MAX = _limit("PC_NAME_MAX", 255)  # bytes per path component


@dataclass(frozen=True)
class BaseInfo:
    """What an adapter must match: the base's architecture and its tensor shapes (GGUF order, ne0 first)."""

    architecture: str
    shapes: dict[str, tuple[int, ...]]


@dataclass
class Adapter:
    """One loaded LoRA: a llama.cpp handle plus what GET /lora-adapters lists."""

    id: int
    path: str  # the path the user gave (shown back)
    file: Path  # the real GGUF file
    key: tuple[str, int]  # (real path, mtime_ns): the cache key
    name: str
    handle: Any
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 1  # 1 + how many times this file was loaded before (it changed on disk in between)
    last_used: float = 0.0  # monotonic time of the last request that took it (LRU eviction)
    nbytes: int = 0  # tensor bytes llama.cpp holds for it (the GGUF's tensor data)


def _field_value(reader_field: Any) -> Any:
    """A GGUFReader field as a plain Python value (string, number or list)."""
    from gguf import GGUFValueType

    types = reader_field.types
    if not types:
        return None
    if types[0] == GGUFValueType.STRING:
        return bytes(reader_field.parts[reader_field.data[0]]).decode("utf-8", "replace")
    if types[0] == GGUFValueType.ARRAY:
        return None  # no adapter metadata we show is an array
    value = reader_field.parts[reader_field.data[0]]
    return value.tolist()[0] if hasattr(value, "tolist") else value


def read_base_info(model: Path) -> BaseInfo:
    """Architecture and tensor shapes of the base GGUF (header only; tensor data stays memory-mapped)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(model))
    arch_field = reader.fields.get("general.architecture")
    arch = _field_value(arch_field) if arch_field else ""
    return BaseInfo(architecture=str(arch), shapes={t.name: tuple(int(n) for n in t.shape) for t in reader.tensors})


def read_adapter_meta(file: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """(metadata, tensor shapes) of a GGUF LoRA; 422 when the file is not one."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(file))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF"
        raise ApiError(422, f"{file} is not a readable GGUF file ({exc}); {EXPORT_HINT}") from None
    values = {name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    if values.get("general.type") != "adapter" or values.get("adapter.type") != "lora":
        raise ApiError(422, f"{file} is a GGUF but not a LoRA adapter (general.type={values.get('general.type')!r}, "
                            f"adapter.type={values.get('adapter.type')!r}); pass an adapter GGUF, not a model.")
    check_finite(reader, file)
    meta = {"alpha": values.get("adapter.lora.alpha"), "architecture": values.get("general.architecture")}
    if FINGERPRINT_KEY in values:
        meta["base_fingerprint"] = values[FINGERPRINT_KEY]
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return meta, shapes


def check_finite(reader: Any, file: Path) -> None:
    """422 when a float tensor of a GGUF LoRA holds NaN or inf: llama.cpp loads it happily, and every reply under
    it (and, through cached prompt state, later replies) turns non-finite."""
    import numpy as np
    from gguf import GGMLQuantizationType

    for tensor in reader.tensors:
        if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            values = tensor.data
        elif tensor.tensor_type == GGMLQuantizationType.BF16:  # raw bytes in gguf-py: widen to float32
            values = (np.asarray(tensor.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        if not np.isfinite(values).all():
            raise ApiError(422, f"{file}: tensor {tensor.name} holds NaN or inf values, so the adapter is broken (an "
                                "fp16 overflow in training, say); retrain or re-export it.")


def check_compatible(file: Path, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], base: BaseInfo) -> None:
    """422 unless the adapter's architecture and every lora_a/lora_b shape fit the base tensors."""
    if meta.get("architecture") and base.architecture and meta["architecture"] != base.architecture:
        raise ApiError(422, f"{file} is a LoRA for architecture {meta['architecture']!r} but the served model is "
                            f"{base.architecture!r}; train the adapter on this base.")
    for name, shape in shapes.items():
        target, _, part = name.rpartition(".lora_")
        if part not in ("a", "b"):
            continue
        if target not in base.shapes:
            raise ApiError(422, f"{file}: tensor {target} does not exist in the served model; the adapter was "
                                "trained on a different base.")
        want_in, want_out = base.shapes[target][0], base.shapes[target][1]
        got = shape[0] if part == "a" else shape[1]
        want = want_in if part == "a" else want_out
        if got != want:
            raise ApiError(422, f"{file}: {name} has shape {list(shape)} but the served model's {target} is "
                                f"{list(base.shapes[target])}; the adapter was trained on a different base "
                                "(dimension mismatch).")


def is_allowed(real: Path, roots: list[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def check_utf8(value: str, where: str) -> bytes:
    """`value` as UTF-8 bytes; 400 naming `where` when it holds a lone surrogate (a JSON \\ud800-style escape
    without its pair), which neither llama.cpp's tokenizer nor the file system can take."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{where} is not valid UTF-8: a lone surrogate {value[exc.start]!r} at character "
                            f"{exc.start} (a JSON \\ud800-style escape without its pair); send UTF-8 text.") from None


def check_path(value: str, where: str) -> str:
    """400 naming `where` unless `value` can be a file-system path: no NUL byte, valid UTF-8 (no lone surrogate,
    e.g. from a JSON \\ud800 escape), under PATH_MAX bytes and NAME_MAX bytes per component."""
    if "\x00" in value:
        raise ApiError(400, f"{where} contains a NUL byte (\\u0000) at character {value.index(chr(0))}; file paths "
                            "cannot hold one: send the path without it.")
    raw = check_utf8(value, where)
    if len(raw) >= PATH_MAX:
        raise ApiError(400, f"{where} is {len(raw)} bytes long; paths are limited to {PATH_MAX - 1} bytes (PATH_MAX): "
                            "send a shorter path.")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise ApiError(400, f"{where} has a {len(longest)}-byte name ({longest[:40].decode(errors='replace')}...); "
                            f"each file or folder name is limited to {NAME_MAX} bytes (NAME_MAX).")
    return value


def resolve_file(path: str, roots: list[Path], convert: Callable[[Path], Path] | None = None) -> Path:
    """User path -> the real GGUF LoRA file: 400 unusable path, 404 missing, 403 outside the allowed roots,
    422 no GGUF inside (or unreadable)."""
    if not isinstance(path, str) or not path.strip():
        raise ApiError(400, "adapter path must be a non-empty string")
    check_path(path, "adapter path")
    try:
        return _resolve_checked(path, roots, convert)
    except OSError as exc:  # e.g. permission denied, or a name that grew too long through a symlink
        raise ApiError(422, f"adapter path {path} cannot be read ({exc.strerror or exc}); check the file and its "
                            "permissions.") from None


def _resolve_checked(path: str, roots: list[Path], convert: Callable[[Path], Path] | None) -> Path:
    given = Path(os.path.expanduser(path))  # os.path: an unknown ~user stays as written instead of raising
    real = Path(os.path.realpath(given))  # symlinks and .. resolved before the allow-list check
    if not is_allowed(real, roots):
        raise ApiError(403, f"adapter path {path} lies outside the allowed roots {[str(r) for r in roots]}; "
                            "put it under WORKSPACE or start the server with --adapter-root DIR.")
    if not real.exists():
        raise ApiError(404, f"adapter path {path} does not exist; check the path (adapters live under "
                            "WORKSPACE/peft/<name>).")
    if real.is_file():
        return real
    # a FIFO or device (named *.gguf or not) is never opened: reading one could block the engine forever
    if not real.is_dir():
        raise ApiError(422, f"adapter path {path} is not a regular file or a dir; pass a .gguf LoRA file or its dir.")
    candidates = [real / "adapter.gguf"] if (real / "adapter.gguf").is_file() else sorted(
        c for c in real.glob("*.gguf") if c.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise ApiError(422, f"{path} holds several .gguf files ({[c.name for c in candidates]}); name one file, "
                            "or keep a single adapter.gguf in the dir.")
    if (real / "adapter_config.json").is_file():
        if convert is None:
            raise ApiError(422, f"{path} is a PEFT adapter dir without a GGUF export; llama.cpp loads only GGUF "
                                f"LoRAs, so {EXPORT_HINT}")
        return convert(real)
    raise ApiError(422, f"{path} holds no adapter.gguf or other .gguf LoRA; {EXPORT_HINT}")


def cache_key(file: Path) -> tuple[str, int]:
    return (str(file), file.stat().st_mtime_ns)


def display_name(path: str) -> str:
    """Dir name for an adapter dir, file stem for a bare .gguf (`adapter.gguf` -> its dir's name)."""
    p = Path(path.rstrip("/"))
    if p.suffix == ".gguf":
        return p.parent.name if p.stem == "adapter" else p.stem
    return p.name


def peft_converter(base_model: str | None, cache_dir: Path) -> Callable[[Path], Path] | None:
    """On-the-fly PEFT -> GGUF conversion when torch and the base HF dir are at hand; None otherwise."""
    if not base_model or not (Path(base_model) / "config.json").is_file() or importlib.util.find_spec("torch") is None:
        return None

    def convert(adapter_dir: Path) -> Path:
        from strata.llamacpp import convert_lora

        stamp = f"{adapter_dir}:{max(f.stat().st_mtime_ns for f in adapter_dir.iterdir() if f.is_file())}"
        out = cache_dir / f"{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.gguf"
        if not out.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.gguf")
            try:
                convert_lora(adapter_dir, Path(base_model), tmp)
            except Exception as exc:  # noqa: BLE001 - surface the converter's message as a 422
                raise ApiError(422, f"converting the PEFT dir {adapter_dir} to GGUF failed: {exc}; {EXPORT_HINT}") from None
            os.replace(tmp, out)
        return out

    return convert
