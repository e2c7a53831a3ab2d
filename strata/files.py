"""File helpers every part shares: atomic writes, content hashes, and JSON/JSONL reads with clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from strata.errors import StrataError


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds: every record's timestamp."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def now_stamp() -> str:
    """The current UTC time as a compact id that sorts by time (20260102T030405123456Z): run and archive ids."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


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
def staged_path(target: Path, tag: str = "tmp", *, directory: bool = False,
                publish: Callable[[Path, Path], None] | None = None) -> Iterator[Path]:
    """A fresh temp file (or, with `directory`, folder) beside `target`, readable by all (0644 / 0755). When the
    block ends without an error it becomes `target`: `publish(temp, target)`, by default os.replace for a file and a
    swap for a folder (the previous folder is put back if the swap fails). On an error it is removed, so readers
    never see a half-written target and no temp outlives the block."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".{tag}"))
        os.chmod(tmp, 0o755)
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".{tag}")
        os.fchmod(fd, 0o644)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        (publish or (_swap_dir if directory else os.replace))(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _swap_dir(tmp: Path, target: Path) -> None:
    """Replace folder `target` by `tmp` with renames; on failure the previous `target` is put back."""
    old = target.with_name(f".{target.name}.old-{time.time_ns()}") if target.exists() else None
    if old:
        target.rename(old)
    try:
        tmp.rename(target)
    except OSError:
        if old:
            old.rename(target)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_file(path: Path, text: bool = False,
                publish: Callable[[Path, Path], None] = os.replace) -> Iterator[IO[Any]]:
    """An open handle on a staged_path temp file beside `path`, fsynced when the block ends, then
    `publish(temp, path)`: os.replace (readers never see half a file) or os.link (create-only: FileExistsError if
    `path` exists)."""
    with staged_path(path, publish=publish) as tmp:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


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


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable, not JSON or not an object (for
    records whose absence only costs a re-run or a blank field)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path, hint: str) -> list[dict[str, Any]]:
    """Every object in a JSONL file (blank lines skipped). Missing file, bad JSON or a non-object line raise
    StrataError naming the file and line, followed by `hint` (what to run to make it)."""
    return [record for _, record in numbered_jsonl(path, hint)]


def numbered_jsonl(path: Path, hint: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every object in a JSONL file, checked as `read_jsonl` does."""
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
        records.append((number, record))
    return records
