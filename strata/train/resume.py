"""--resume-from auto|DIR onto the Trainer's checkpoint-N dirs; each finished one carries strata's run identity."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import atomic_write_json

MARKER = "strata_run.json"  # written after the Trainer finished the checkpoint: its presence means "complete"
TRAINER_STATE = "trainer_state.json"
STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_dir(adapter_dir: Path) -> Path:
    """Where the Trainer keeps an adapter's resumable checkpoints (its `output_dir`)."""
    return Path(adapter_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / TRAINER_STATE).is_file() and (path / MARKER).is_file()


def latest_checkpoint(adapter_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step (a run killed mid-save leaves one without the marker)."""
    found = [p for p in checkpoints_dir(adapter_dir).glob("checkpoint-*") if STEP.match(p.name) and is_complete(p)]
    return max(found, key=lambda p: int(STEP.match(p.name).group(1)), default=None)


def resolve_resume(adapter_dir: Path, resume_from: str | None) -> Path | None:
    """`auto` -> the latest complete checkpoint under the adapter dir (None: start fresh); a path -> that one."""
    if resume_from is None:
        return None
    if resume_from == "auto":
        return latest_checkpoint(adapter_dir)
    path = Path(resume_from).expanduser()
    if not is_complete(path):
        raise StrataError(f"--resume-from {path} is not a finished checkpoint (no {TRAINER_STATE} and {MARKER}); pass "
                          f"`auto` or a {checkpoints_dir(adapter_dir)}/checkpoint-N dir.")
    return path


def read_marker(path: Path, expect: dict[str, Any]) -> dict[str, Any]:
    """The run record saved with checkpoint `path`; its identity keys must equal `expect` (same data, same run)."""
    saved = json.loads((path / MARKER).read_text())
    clashes = {k: (saved.get(k), v) for k, v in expect.items() if saved.get(k) != v}
    if clashes:
        raise StrataError(f"checkpoint {path} belongs to a different run ({clashes} as saved vs now); resume with "
                          "the same data, preset and global batch, or train from scratch without --resume-from.")
    return saved


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / TRAINER_STATE).read_text())["global_step"])


def marker_callback(record: dict[str, Any]) -> Any:
    """A TrainerCallback that stamps every checkpoint (rank 0, after the Trainer wrote it) with `record`."""
    from transformers import TrainerCallback

    class RunMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                atomic_write_json(Path(args.output_dir) / f"checkpoint-{state.global_step}" / MARKER, record)

    return RunMarker()
