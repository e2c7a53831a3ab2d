"""File helpers for the data steps: atomic writes, content hashes, and the PDFs under a folder by topic."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

DEFAULT_TOPIC = "default"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to a temp file beside `path`, fsync it, then os.replace it in: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: Path, missing_hint: str) -> Any:
    """Load a JSON file written by an earlier step; a missing or broken file raises StrataError with `missing_hint`."""
    from strata.errors import StrataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StrataError(f"{path} not found: {missing_hint}") from None
    except json.JSONDecodeError as exc:
        raise StrataError(f"{path} is not valid JSON ({exc}): {missing_hint}") from None


def pdfs_by_topic(root: Path) -> list[tuple[str, Path]]:
    """(topic, path) for every *.pdf under `root`, sorted; the topic is the first subfolder, DEFAULT_TOPIC at the top."""
    root = Path(root)
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())
    return [(topic_of(p.relative_to(root)), p) for p in found]


def topic_of(relative: Path | str) -> str:
    parts = Path(relative).parts
    return parts[0] if len(parts) > 1 else DEFAULT_TOPIC


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
