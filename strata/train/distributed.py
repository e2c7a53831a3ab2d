"""Where this process sits in a launched run (torchrun / accelerate launch): world size, rank 0, barrier."""

from __future__ import annotations

import os
from typing import Any


def launched() -> bool:
    """True under a multi-process launcher (torchrun and accelerate launch both set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def rank() -> int:
    """This process's global rank (0 outside a launcher), from the launcher's environment: no process group needed."""
    return int(os.environ.get("RANK", "0"))


def state(device: str | None = None) -> Any:
    """accelerate's PartialState (one per process), set up as the Trainer will want it: gloo on CPU. The first call
    (train_level's, with its device) sets it up; later calls without a device get that same state."""
    from accelerate import PartialState

    if device is None:
        return PartialState()
    kwargs: dict[str, Any] = {"cpu": device == "cpu"}
    if launched() and device == "cpu":
        kwargs["backend"] = "gloo"
    return PartialState(**kwargs)


def is_main() -> bool:
    """The one rank-0 check: this process writes the shared files (from the launcher's RANK, so it holds before the
    process group exists, as accelerate's is_main_process does after)."""
    return rank() == 0


def barrier() -> None:
    """Every rank waits here (no-op in a single process)."""
    if launched():
        state().wait_for_everyone()


def finish() -> None:
    """Leave the process group cleanly once a launched run is done."""
    if launched():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
