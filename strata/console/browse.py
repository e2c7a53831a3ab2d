"""The adapter root browser: folders under the allowed roots that hold adapter.gguf, never anything outside them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from strata.serve.adapters import is_allowed
from strata.serve.errors import ApiError

GGUF = "adapter.gguf"
SUMMARY = "training_summary.json"
MAX_DEPTH = 4  # roots are workspaces: peft/<level>/<topic> sits 2-3 below
MAX_ENTRIES = 500


def _inside(path: Path, roots: list[Path]) -> Path | None:
    """The real path when it lies under a root (symlinks resolved first), else None."""
    real = Path(os.path.realpath(path))
    return real if is_allowed(real, roots) else None


def summary(folder: Path) -> dict[str, Any]:
    """level, topic and base fingerprint from the adapter dir's training_summary.json (empty when absent)."""
    try:
        data = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data.get(k) for k in ("level", "topic", "base_fingerprint")}


def adapters_under(roots: list[Path]) -> list[dict[str, Any]]:
    """Every folder (to MAX_DEPTH) under `roots` holding a regular adapter.gguf, as {path, name, root, ...summary}.
    A symlink that leads out of every root is skipped, and so is anything the process cannot read."""
    roots = [Path(os.path.realpath(r)) for r in roots]
    found: dict[str, dict[str, Any]] = {}
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):  # only folders inside a root are entered
            here = Path(dirpath)
            deep = len(here.relative_to(root).parts) >= MAX_DEPTH
            dirnames[:] = [] if deep else sorted(d for d in dirnames if not d.startswith(".")
                                                   and _inside(here / d, roots))
            real = _inside(here / GGUF, roots)
            if real is not None and real.is_file() and str(real.parent) not in found:
                found[str(real.parent)] = {"path": str(here), "name": here.name, "root": str(root),
                                           **summary(real.parent)}
            if len(found) >= MAX_ENTRIES:
                return list(found.values())
    return sorted(found.values(), key=lambda a: a["path"])


def described(listing: list[dict[str, Any]], roots: list[Path]) -> list[dict[str, Any]]:
    """GET /lora-adapters rows plus level, topic and base fingerprint read from their dirs (inside the roots)."""
    rows = []
    for row in listing:
        path = Path(str(row.get("path", "")))
        folder = path.parent if path.suffix == ".gguf" else path
        real = _inside(folder, roots) if roots else None
        rows.append({**row, **(summary(real) if real else {})})
    return rows


def check_inside(path: str, roots: list[Path]) -> None:
    """403 before anything is opened when `path` leads outside the roots (the engine checks again on load)."""
    if not isinstance(path, str) or not path:
        raise ApiError(400, "path must be a non-empty string")
    if _inside(Path(os.path.expanduser(path)), roots) is None:
        raise ApiError(403, f"{path} lies outside the allowed roots {[str(r) for r in roots]}; pick an adapter "
                            "from the list, or start the server with --adapter-root DIR.")
