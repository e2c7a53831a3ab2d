"""Run manifests for `strata build all`: input hashing and finding the last success of a stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from strata.files import read_json_or_none, sha256_file

# Files up to this size are hashed by content; bigger ones (model weights) by path + size + mtime.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024
MANIFEST = "manifest.json"


def file_identity(path: Path) -> str:
    """sha256 of a small file's bytes; `size:mtime_ns` for a big one (cheap and changes whenever it is rewritten)."""
    stat = path.stat()
    if stat.st_size > CONTENT_HASH_LIMIT:
        return f"stat:{stat.st_size}:{stat.st_mtime_ns}"
    return "sha256:" + sha256_file(path)


def _files(path: Path) -> Iterable[tuple[str, Path]]:
    """(name relative to `path`, file) for a file or every file under a folder, in a stable order; temp/hidden files skipped."""
    if path.is_file():
        yield path.name, path
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path)
            if not any(part.startswith(".") for part in rel.parts):
                yield rel.as_posix(), file


def path_identity(*paths: Path) -> str:
    """One hash for files or folder trees (relative names + file identities); 'missing' when none exists.
    Names are relative and several roots are pooled, so a file moved between roots (raw -> archive) keeps its identity."""
    rows = sorted(f"{name}\0{file_identity(file)}" for path in paths if path.exists() for name, file in _files(path))
    if not any(path.exists() for path in paths):
        return "missing"
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def value_identity(value: Any) -> str:
    """Stable hash of a JSON-able parameter value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def manifests(runs: Path) -> list[Path]:
    """Every run manifest under `runs`, oldest first (run ids sort by time)."""
    return sorted(runs.glob(f"*/{MANIFEST}")) if runs.is_dir() else []


def last_success(runs: Path, stage: str, exclude: Path | None = None) -> dict[str, Any] | None:
    """The newest entry for `stage` that ended ok (or was skipped as unchanged) in any earlier run's manifest."""
    for path in reversed(manifests(runs)):
        if exclude is not None and path == exclude:
            continue
        # a damaged manifest only costs a re-run
        for entry in (read_json_or_none(path) or {}).get("stages", []):
            if entry.get("name") == stage and entry.get("status") in ("ok", "skipped"):
                return entry
    return None
