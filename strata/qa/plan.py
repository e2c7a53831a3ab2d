"""What a QA run compares: the base, adapter layers and blends, parsed from the CLI and resolved to paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from strata.errors import StrataError

BASE = "base"
ADAPTER_FILE = "adapter.gguf"
SOFT_PROMPT_FILE = "softprompt.gguf"
SKIPPED = frozenset({"merged", "checkpoints"})
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Layer:
    """One configuration to test: a name, its kind (base, layer, blend) and the exact active adapter set."""

    name: str
    kind: str
    adapters: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    soft_prompt: str | None = None  # a soft prompt (name or path) sent with every request of this layer

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "soft_prompt": self.soft_prompt,
                "adapters": [{"path": path, "scale": scale} for path, scale in self.adapters]}


def discover_layers(peft_dir: Path) -> list[Path]:
    """Every adapter dir under peft_dir that holds adapter.gguf, excluding merged/, checkpoints/ and hidden
    (temp) dirs, sorted by path."""
    if not peft_dir.is_dir():
        return []
    found = {file.parent for file in peft_dir.rglob(ADAPTER_FILE)}
    return sorted(d for d in found if not any(part in SKIPPED or part.startswith(".")
                                              for part in d.relative_to(peft_dir).parts))


def layer_name(path: str | os.PathLike, taken: Iterable[str] = ()) -> str:
    """A short unique name for an adapter path: the dir name (a .gguf's stem), with the parent prefixed on clashes."""
    p = Path(path)
    if p.name == ADAPTER_FILE:
        p = p.parent
    name = p.stem if p.suffix == ".gguf" else p.name
    if name in taken or name == BASE:
        name = f"{p.parent.name}-{name}"
    return name


def parse_blend(spec: str) -> tuple[str, list[tuple[str, float]]]:
    """`NAME=a:0.6,b:0.4` -> (NAME, [(a, 0.6), (b, 0.4)]); a and b are layer names or paths."""
    name, sep, body = spec.partition("=")
    name = name.strip()
    if not sep or not name or not body.strip():
        raise StrataError(f"--blend {spec!r} must look like NAME=a:0.6,b:0.4 (layer names or paths with scales)")
    if not _NAME.match(name) or name == BASE:
        raise StrataError(f"--blend name {name!r} must be letters, digits, '.', '_' or '-' and not 'base'")
    parts = []
    for item in body.split(","):
        target, colon, scale = item.strip().rpartition(":")
        if not colon or not target:
            raise StrataError(f"--blend {spec!r}: {item.strip()!r} needs a scale, like {item.strip() or 'a'}:0.5")
        try:
            value = float(scale)
        except ValueError:
            raise StrataError(f"--blend {spec!r}: scale {scale!r} of {target!r} is not a number") from None
        if value != value or abs(value) == float("inf"):
            raise StrataError(f"--blend {spec!r}: scale of {target!r} must be finite")
        parts.append((target, value))
    return name, parts


def discover_soft_prompts(folder: Path) -> list[Path]:
    """Every soft prompt dir under WORKSPACE/soft_prompts/ holding softprompt.gguf (hidden dirs skipped), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p / SOFT_PROMPT_FILE).is_file())


def build_plan(layer_paths: Iterable[str | os.PathLike], blends: Iterable[str], peft_dir: Path,
               soft_prompts: Iterable[str | os.PathLike] = ()) -> list[Layer]:
    """Base first, then each layer (scale 1), then each blend with its parts resolved to layer paths, then each
    soft prompt on the base (named soft:<dir name>)."""
    plan = [Layer(BASE, "base")]
    by_name: dict[str, str] = {}
    for path in layer_paths:
        name = layer_name(path, by_name)
        by_name[name] = str(path)
        plan.append(Layer(name, "layer", ((str(path), 1.0),)))
    for spec in blends:
        name, parts = parse_blend(spec)
        if name in {layer.name for layer in plan}:
            raise StrataError(f"--blend name {name!r} is already used by a layer or blend; pick another name")
        plan.append(Layer(name, "blend", tuple((_resolve(target, by_name, peft_dir), s) for target, s in parts)))
    for soft in soft_prompts:
        path = Path(soft).expanduser()
        plan.append(Layer(f"soft:{layer_name(path.parent if path.suffix == '.gguf' else path)}", "soft_prompt",
                          soft_prompt=str(path.absolute()) if path.exists() else str(soft)))
    return plan


def _resolve(target: str, by_name: dict[str, str], peft_dir: Path) -> str:
    """A blend part: a known layer name, a dir under peft/, or else a path as given (the server judges it)."""
    if target in by_name:
        return by_name[target]
    if _NAME.match(target) and (peft_dir / target).is_dir():
        return str(peft_dir / target)
    path = Path(target).expanduser()
    return str(path.absolute()) if path.exists() else target


def adapter_roots(plan: Iterable[Layer]) -> list[str]:
    """Folders an in-process server must allow so every planned adapter can be loaded."""
    roots = set()
    for layer in plan:
        for path, _ in layer.adapters + (((layer.soft_prompt, 1.0),) if layer.soft_prompt else ()):
            p = Path(path).expanduser().absolute()
            roots.add(str(p.parent if p.suffix == ".gguf" else p))
    return sorted(roots)


@dataclass(frozen=True)
class Gate:
    """`--fail-under METRIC[@LAYER]=VALUE`: the layer's mean METRIC must reach VALUE."""

    metric: str
    value: float
    layer: str | None = None


def parse_gate(spec: str, metrics: Iterable[str]) -> Gate:
    """Parse one --fail-under spec; only higher-is-better metrics can be gated."""
    allowed = sorted(metrics)
    left, sep, value = spec.partition("=")
    metric, _, layer = left.strip().partition("@")
    if not sep or not metric:
        raise StrataError(f"--fail-under {spec!r} must look like METRIC=VALUE or METRIC@LAYER=VALUE, e.g. rouge_l=0.2")
    if metric not in allowed:
        raise StrataError(f"--fail-under {spec!r}: unknown metric {metric!r}; choose one of {', '.join(allowed)}")
    try:
        number = float(value)
    except ValueError:
        raise StrataError(f"--fail-under {spec!r}: {value!r} is not a number") from None
    return Gate(metric, number, layer.strip() or None)
