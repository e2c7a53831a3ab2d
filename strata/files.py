"""File helpers every part shares: atomic writes, content hashes, and JSON/JSONL reads with clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from strata.errors import StrataError


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file's bytes, read in chunks; `progress(n)` is told each chunk's size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


@contextmanager
def staged_file(path: Path, text: bool = False,
                publish: Callable[[str, Path], None] = os.replace) -> Iterator[IO[Any]]:
    """Write to a temp file beside `path`, fsync it, then `publish(temp, path)`: os.replace (readers never see
    half a file) or os.link (create-only: FileExistsError if `path` exists). The temp file never outlives it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty folder beside `dest` to fill; on success it replaces `dest` (mode 0755) by one rename, on
    failure it is removed: `dest` is never half-written."""
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        yield work
        work.chmod(0o755)
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` through a fsynced temp file and os.replace: readers never see half a file."""
    with staged_file(path, text=True) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: Path, data: Any) -> Path:
    """Pretty JSON, atomically; values JSON cannot hold (paths, dates) are written as strings."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: Path, missing_hint: str) -> Any:
    """Load a JSON file written by an earlier step; a missing or broken file raises StrataError with `missing_hint`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StrataError(f"{path} not found: {missing_hint}") from None
    except json.JSONDecodeError as exc:
        raise StrataError(f"{path} is not valid JSON ({exc}): {missing_hint}") from None


def read_jsonl(path: Path, hint: str) -> list[dict[str, Any]]:
    """Every object in a JSONL file (blank lines skipped). Missing file, bad JSON or a non-object line raise
    StrataError naming the file and line, followed by `hint` (what to run to make it)."""
    path = Path(path)
    if not path.is_file():
        raise StrataError(f"{path} does not exist; {hint}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StrataError(f"{path}:{number} is not valid JSON ({exc.msg}); {hint}") from None
        if not isinstance(record, dict):
            raise StrataError(f"{path}:{number} must be a JSON object, got {type(record).__name__}; {hint}")
        records.append(record)
    return records
