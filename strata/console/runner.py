"""`python -m strata.console.runner --lock-fd N RUN_DIR -- CMD...`: runs one triggered build command, keeps the
workspace's run lock for its whole life, tees its output to RUN_DIR/log.txt and records the outcome in run.json."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from strata.files import atomic_write_json, now_iso, read_json

RECORD = "run.json"
LOG = "log.txt"
ERROR_LINES = 40


def tail(path: Path, lines: int = ERROR_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata.console.runner")
    parser.add_argument("--lock-fd", type=int, required=True, help="the run lock's fd, taken by the console")
    parser.add_argument("run_dir")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    run_dir = Path(ns.run_dir)
    record = read_json(run_dir / RECORD, "the console writes it before starting the runner")
    record["runner_pid"] = os.getpid()
    atomic_write_json(run_dir / RECORD, record)
    with open(run_dir / LOG, "ab", buffering=0) as log:
        # the child inherits the lock fd too: the lock is free only once both have exited
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               pass_fds=(ns.lock_fd,))
    record.update(status="ok" if code == 0 else "failed", returncode=code, finished=now_iso(),
                  error=None if code == 0 else tail(run_dir / LOG) or f"exited with code {code}")
    atomic_write_json(run_dir / RECORD, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
