"""`archive_pdfs`: move the PDFs the last dataset build used into PDF_ARCHIVE_PATH without ever losing one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from strata.errors import StrataError
from strata.files import atomic_write_json, now_iso, now_stamp, read_json, sha256_file, staged_path
from strata.settings import Settings

Hook = Callable[[str, Path, Path], None]
"""Called as hook(stage, source, dest) at "copied" (dest verified, source not yet removed); tests inject failures."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_name(dest: Path, sha: str) -> tuple[Path, bool]:
    """(path, already_there): dest itself, or the first of name-1.pdf, name-2.pdf ... that is free or holds
    the identical file. Never a path holding different bytes."""
    candidate, n = dest, 0
    while candidate.exists():
        if candidate.is_file() and sha256_file(candidate) == sha:
            return candidate, True
        n += 1
        candidate = dest.with_name(f"{dest.stem}-{n}{dest.suffix}")
    return candidate, False


def _copy_verified(source: Path, dest: Path, size: int, sha: str) -> None:
    """Copy to a hidden part file (staged_path), fsync, verify size + sha256, then link it into place (a link, unlike
    a rename, fails if the name was taken meanwhile)."""
    def place(part: Path, dest: Path) -> None:
        try:
            os.link(part, dest)
        except OSError as exc:  # taken meanwhile, or a filesystem without hard links
            if isinstance(exc, FileExistsError) or dest.exists():
                raise StrataError(f"{dest} appeared while archiving; run `strata build archive` again") from None
            os.replace(part, dest)
        _fsync_dir(dest.parent)

    with staged_path(dest, "part", publish=place) as part:
        with open(source, "rb") as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if part.stat().st_size != size or sha256_file(part) != sha:
            raise StrataError(f"copy of {source} to {dest} does not match the original; the source was left in place")


def _move_one(source: Path, dest: Path, sha: str, hook: Hook | None) -> dict[str, Any]:
    size = source.stat().st_size
    target, already = _free_name(dest, sha)
    if not already:  # an already-archived twin was matched by sha256 in _free_name; a copy is verified in place
        _copy_verified(source, target, size, sha)
    if hook:
        hook("copied", source, target)
    source.unlink()
    _fsync_dir(source.parent)
    return {"dest": str(target), "status": "already archived, source removed" if already else "moved",
            "renamed": target.name != dest.name}


def archive_pdfs(settings: Settings, hook: Hook | None = None) -> dict[str, Any]:
    """Move dataset_summary.json's sources (verified by sha256) from raw_pdfs to settings.pdf_archive, keeping topic
    folders. Writes processed/archive/archive-<time>.json listing what moved and what stayed; returns it."""
    summary = read_json(settings.processed / "dataset_summary.json", "run `strata build dataset` first")
    record: dict[str, Any] = {"archive": str(settings.pdf_archive), "created": now_iso(), "moved": [], "skipped": [],
                              "error": None}
    stamp = now_stamp()
    out = settings.processed / "archive" / f"archive-{stamp}.json"
    try:
        for entry in summary.get("sources", []):
            source, dest = settings.raw_pdfs / entry["path"], settings.pdf_archive / entry["path"]
            row = {"path": entry["path"], "topic": entry["topic"], "sha256": entry["sha256"]}
            if not source.is_file():
                archived = _free_name(dest, entry["sha256"])
                reason = "already archived" if archived[1] else "not in raw_pdfs and not in the archive"
                record["skipped"].append(row | {"reason": reason, "dest": str(archived[0]) if archived[1] else None})
            elif sha256_file(source) != entry["sha256"]:
                record["skipped"].append(row | {"reason": "changed since the dataset was built: left in place; "
                                                          "rebuild the dataset to archive it"})
            else:
                record["moved"].append(row | _move_one(source, dest, entry["sha256"], hook))
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        atomic_write_json(out, record)
    record["record"] = str(out)
    return record
