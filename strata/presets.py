"""Load presets/*.yaml into dataclasses: files hold only what differs from the defaults; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from strata.errors import StrataError

T = TypeVar("T")
ENV_PRESETS = "STRATA_PRESETS"


def presets_dir() -> Path:
    """The presets folder: $STRATA_PRESETS, else the repo's top-level presets/."""
    return Path(os.environ.get(ENV_PRESETS) or Path(__file__).resolve().parents[1] / "presets")


def preset_path(name: str | os.PathLike) -> Path:
    """A preset by path, or by name relative to the presets folder (`levels/level1` -> presets/levels/level1.yaml)."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    candidate = presets_dir() / path.with_suffix(".yaml")
    if not candidate.is_file():
        raise StrataError(f"preset {name!s} not found (looked for {candidate}); pass a .yaml path or a name under {presets_dir()}")
    return candidate


def load_preset(kind: type[T], name: str | os.PathLike, **overrides: Any) -> T:
    """Defaults of `kind`, updated by the YAML file, then by non-None overrides. Rejects unknown keys and wrong types."""
    path = preset_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StrataError(f"preset {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StrataError(f"preset {path} must be a mapping of keys to values, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(kind, data, source=str(path))


def from_mapping(kind: type[T], data: dict[str, Any], source: str = "preset") -> T:
    """Build `kind` from a mapping, naming unknown keys and mistyped values."""
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StrataError(f"{source}: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise StrataError(f"{source}: {key} must be {_describe(hints[key])}, got {value!r}")
    return kind(**data)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
