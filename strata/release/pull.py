"""`strata release pull`: download into WORKSPACE/releases/NAME/VERSION/, sha256-checked while writing, moved
into place only when every file verified; an interrupted pull resumes, a present verified copy is a no-op."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from strata.errors import StrataError
from strata.files import atomic_write_text, sha256_file, staged_file
from strata.release import tags
from strata.release.manifest import MANIFEST, FileEntry, Manifest, blob_key
from strata.release.progress import transfers
from strata.release.stores import Store
from strata.settings import Settings

STAMP = ".manifest.sha256"  # in a partial pull: which manifest its verified files belong to
TAGS = ".tags"  # releases/NAME/.tags/TAG: the version a tag named at the last pull (for offline restarts)


@dataclass(frozen=True)
class Pulled:
    """A release on local disk: WORKSPACE/releases/NAME/VERSION/ (complete and verified when it exists)."""

    name: str
    version: str
    tag: str | None
    root: Path
    manifest: Manifest

    @property
    def model(self) -> Path:
        return self.root / self.manifest.model

    @property
    def adapters(self) -> Path:
        return self.root / "peft"

    def label(self) -> dict[str, str | None]:
        """What /health and /v1/models report."""
        return {"name": self.name, "version": self.version, "tag": self.tag, "path": str(self.root),
                "adapters": str(self.adapters)}


def releases_dir(settings: Settings) -> Path:
    return settings.workspace / "releases"


def is_pulled(settings: Settings, name: str, version: str) -> bool:
    """A complete local copy exists (its manifest.json is written last, once every file verified)."""
    return (releases_dir(settings) / name / version / MANIFEST).is_file()


class _Hashing:
    """A write-only (unseekable) file wrapper that hashes what it writes, so s3transfer writes parts in order."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)


def pull(settings: Settings, store: Store, ref: str, *, verify: bool = False, progress: bool = True,
         echo: Callable[[str], None] = print) -> Pulled:
    """Pull NAME[@VERSION|@TAG] (no @: latest) from `store`; returns where it lies."""
    name, version, tag = tags.resolve(store, ref)
    manifest, data = tags.load(store, name, version)
    for entry in manifest.files:
        _safe_path(entry.path, f"{name}@{version}")
    dest = releases_dir(settings) / name / version
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".{version}.lock"):
        if _present(dest, data, manifest, verify):
            echo(f"{name}@{version} is already in {dest}, verified; nothing to pull")
        else:
            staging = _staging(dest, data)
            _download(store, manifest, staging, dest, progress)
            with staged_file(staging / MANIFEST) as handle:  # last: a folder without it is never a release
                handle.write(data)
            _swap(staging, dest)
            echo(f"pulled {name}@{version} into {dest}: {len(manifest.files)} files, "
                 f"{manifest.total_bytes / 1e6:.1f} MB, every sha256 verified")
    if tag:
        atomic_write_text(dest.parent / TAGS / tag, version + "\n")
    return Pulled(name, version, tag, dest, manifest)


def _safe_path(path: str, ref: str) -> None:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", ".") or p.startswith(".") for p in parts) \
            or path == MANIFEST:
        raise StrataError(f"{ref}: the manifest names an unsafe file path {path!r}; refusing to pull it.")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One pull of a version at a time per workspace (two replicas sharing a volume start together)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _present(dest: Path, data: bytes, manifest: Manifest, verify: bool) -> bool:
    """The release is in place: its manifest is this one and every file is there with its size (and, with
    verify, its sha256). A folder only gets its manifest.json once all files verified."""
    try:
        if (dest / MANIFEST).read_bytes() != data:
            return False
    except OSError:
        return False
    for entry in manifest.files:
        path = dest / entry.path
        if not path.is_file() or path.stat().st_size != entry.size:
            return False
        if verify and sha256_file(path) != entry.sha256:
            return False
    return True


def _staging(dest: Path, data: bytes) -> Path:
    """The hidden folder a pull writes into; files verified by an earlier, interrupted pull of the same manifest
    are kept, anything else is started afresh."""
    staging = dest.with_name(f".{dest.name}.partial")
    stamp = hashlib.sha256(data).hexdigest()
    if staging.is_dir() and (staging / STAMP).is_file() and (staging / STAMP).read_text().strip() == stamp:
        return staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / STAMP).write_text(stamp + "\n")
    return staging


def _download(store: Store, manifest: Manifest, staging: Path, dest: Path, progress: bool) -> None:
    with transfers(progress) as start:
        for entry in manifest.files:
            target = staging / entry.path
            if target.is_file() and target.stat().st_size == entry.size:
                continue  # verified (and renamed from its temp file) by an earlier run of this pull
            target.parent.mkdir(parents=True, exist_ok=True)
            _fetch(store, manifest, entry, target, dest, start(f"pull {entry.path}", entry.size))


def _fetch(store: Store, manifest: Manifest, entry: FileEntry, target: Path, dest: Path,
           advance: Callable[[int], None]) -> None:
    """Download one file beside target, hashing as it is written; it takes target's name only if it matches."""
    writer: _Hashing | None = None

    def verified(tmp: str, path: Path) -> None:
        got = writer.digest.hexdigest()
        if got != entry.sha256 or writer.size != entry.size:
            raise StrataError(f"{manifest.name}@{manifest.version}: {entry.path} is corrupt in the store {store.url}: "
                              f"sha256 {got} ({writer.size} bytes), but the manifest says {entry.sha256} "
                              f"({entry.size} bytes). Nothing was moved into {dest}; publish the release again from "
                              "the build pod, or pull another version.")
        os.replace(tmp, path)

    with staged_file(target, publish=verified) as handle:
        writer = _Hashing(handle)
        store.download(blob_key(manifest.name, entry.sha256), writer, advance)


def _swap(staging: Path, dest: Path) -> None:
    """Move the verified release into place; an older (damaged) copy at dest is replaced only now."""
    (staging / STAMP).unlink(missing_ok=True)
    if not dest.exists():
        os.replace(staging, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, old)
    os.replace(staging, dest)
    shutil.rmtree(old, ignore_errors=True)
