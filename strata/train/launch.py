"""--nproc N: a level trains data-parallel under torchrun; per-topic layers train N at a time, one per device.

Both start worker processes running `python -m strata.train.launch SPEC.json` (the spec holds the settings and
the `train_level` arguments). A level's workers are torchrun's ranks; topic workers are plain single processes,
each given one GPU (CUDA_VISIBLE_DEVICES) or an equal share of the CPU threads. If any worker fails, the others
are stopped and the run fails with its exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.settings import Settings


def run(settings: Settings, level: int, nproc: int, device: str, topics: list[str] | None,
        args: dict[str, Any]) -> None:
    """Train `level` on `nproc` devices: data-parallel (topics None), or the per-topic layers `topics` in parallel."""
    from strata.train import distributed

    if distributed.launched():
        raise StrataError("--nproc starts its own processes; drop it when launching with torchrun or accelerate "
                          "launch (or drop the launcher and keep --nproc).")
    if device == "cuda":
        import torch

        if nproc > torch.cuda.device_count():
            raise StrataError(f"--nproc {nproc} asks for more GPUs than the {torch.cuda.device_count()} visible here.")
    with tempfile.TemporaryDirectory(prefix="strata-launch-") as tmp:
        if topics is None:
            spec = _write_spec(Path(tmp) / "spec.json", settings, level, args, threads=_threads(settings, nproc))
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                       "-m", "strata.train.launch", str(spec)]
            _wait({"all ranks": subprocess.Popen(command, env=os.environ.copy())})
            return
        groups = [topics[i::nproc] for i in range(nproc) if topics[i::nproc]]
        print(f"training {len(topics)} topic layers on {len(groups)} devices at once: "
              + "; ".join(f"[{i}] {', '.join(g)}" for i, g in enumerate(groups)), flush=True)
        workers = {}
        for index, group in enumerate(groups):
            spec = _write_spec(Path(tmp) / f"spec-{index}.json", settings, level,
                               args | {"only_topics": group, "progress": False}, threads=_threads(settings, nproc))
            env = os.environ.copy()
            if device == "cuda":
                visible = env.get("CUDA_VISIBLE_DEVICES")
                env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
            command = [sys.executable, "-m", "strata.train.launch", str(spec)]
            workers[", ".join(group)] = subprocess.Popen(command, env=env)
        _wait(workers)


def _threads(settings: Settings, nproc: int) -> int:
    return max(1, settings.n_threads // nproc)


def _write_spec(path: Path, settings: Settings, level: int, args: dict[str, Any], threads: int) -> Path:
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()}
    path.write_text(json.dumps({"settings": fields | {"n_threads": threads}, "level": level, "args": args}))
    return path


def _wait(workers: dict[str, subprocess.Popen]) -> None:
    """Wait for every worker; the first one to fail stops the rest, and the run fails naming it."""
    try:
        while workers:
            for name, proc in list(workers.items()):
                code = proc.poll()
                if code is None:
                    continue
                del workers[name]
                if code != 0:
                    raise StrataError(f"training failed in the worker for {name} (exit code {code}; its error is "
                                      "printed above); the other workers were stopped.")
            time.sleep(0.2)
    finally:
        for proc in workers.values():
            proc.terminate()
        for proc in workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Worker entry: train what SPEC.json says, as one process (or one torchrun rank)."""
    from strata.train import distributed
    from strata.train.trainer import train_level

    (spec_path,) = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(spec_path).read_text())
    try:
        train_level(Settings.resolve(**spec["settings"]), spec["level"], **spec["args"])
    except StrataError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
