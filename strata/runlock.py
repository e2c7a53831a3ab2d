"""One build run per workspace: an flock on runs/.run.lock that every `strata build` stage, `strata build all` and the
console's trigger take."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from strata.errors import StrataError
from strata.files import now_iso, now_stamp

LOCK_NAME = ".run.lock"
RUN_ID_ENV = "STRATA_RUN_ID"  # set by a parent that already holds the lock for this run id (the console's runner)


class RunActive(StrataError):
    """Another run holds the workspace's lock; `info` is what it wrote there (run_id, pid, command, started)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        super().__init__(f"run {info.get('run_id')} ({info.get('command')}, pid {info.get('pid')}, started "
                         f"{info.get('started')}) is already active in this workspace; wait for it to finish or "
                         "stop it, then start again.")


def lock_path(runs: Path) -> Path:
    return Path(runs) / LOCK_NAME


def active(runs: Path) -> dict[str, Any] | None:
    """What the lock holder wrote, while a live process holds the lock; None when no run is active (a holder that
    died, e.g. with its pod, released the lock with its last file descriptor)."""
    path = lock_path(runs)
    if not path.is_file():
        return None
    with open(path, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                return {"run_id": None, "command": "unknown"}
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def acquire(runs: Path, command: str, run_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """Take the lock (RunActive when held) and write who holds it; returns (fd, info). The lock lasts while the fd,
    or a copy inherited by a child process, stays open."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(runs), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunActive(active(runs) or {"run_id": None, "command": "unknown"}) from None
    info = {"run_id": run_id or now_stamp(), "pid": os.getpid(), "command": command, "started": now_iso()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd, info


@contextmanager
def hold(runs: Path, command: str) -> Iterator[str]:
    """Hold the workspace's run lock for the block and yield the run id. Under the console's runner (which holds
    the lock and sets STRATA_RUN_ID to its run id) the parent's lock and id are used instead."""
    inherited = os.environ.get(RUN_ID_ENV)
    if inherited and (active(runs) or {}).get("run_id") == inherited:
        yield inherited
        return
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun's other ranks: rank 0 holds the lock for the run
        yield inherited or ""
        return
    fd, info = acquire(runs, command)
    os.environ[RUN_ID_ENV] = info["run_id"]  # processes this run starts (torchrun ranks) share its lock
    try:
        yield info["run_id"]
    finally:
        if inherited is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = inherited
        os.close(fd)
