"""Resumable training checkpoints: <adapter dir>/checkpoints/step-N with adapter weights, optimiser, schedule, RNG."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from strata.errors import StrataError

ADAPTER = "adapter.safetensors"
STATE = "state.json"


def checkpoints_dir(adapter_dir: Path) -> Path:
    return Path(adapter_dir) / "checkpoints"


def save_checkpoint(adapter_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    """Write checkpoints/step-<step> atomically (temp dir, then rename), so a kill never leaves a half checkpoint."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = checkpoints_dir(adapter_dir)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}-"))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, tmp / ADAPTER)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        rng = {"python": random.getstate(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=1))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def latest_checkpoint(adapter_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = [p for p in checkpoints_dir(adapter_dir).glob("step-*") if (p / STATE).is_file() and p.name[5:].isdigit()]
    return max(found, key=lambda p: int(p.name[5:]), default=None)


def resolve_resume(adapter_dir: Path, resume_from: str | None) -> Path | None:
    """`auto` -> the latest checkpoint under the adapter dir (None: start fresh); a path -> that checkpoint."""
    if resume_from is None:
        return None
    if resume_from == "auto":
        return latest_checkpoint(adapter_dir)
    path = Path(resume_from).expanduser()
    if not (path / STATE).is_file():
        raise StrataError(f"--resume-from {path} is not a checkpoint (no {STATE}); pass `auto` or a "
                          f"{checkpoints_dir(adapter_dir)}/step-N dir.")
    return path


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, expect: dict[str, Any]) -> dict[str, Any]:
    """Restore weights, optimiser, schedule and RNG from `path`; `expect` keys must match the saved state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / STATE).read_text())
    clashes = {k: (state.get(k), v) for k, v in expect.items() if state.get(k) != v}
    if clashes:
        raise StrataError(f"checkpoint {path} belongs to a different run ({clashes} as saved vs now); resume with "
                          "the same data and preset, or train from scratch without --resume-from.")
    device = next(p.device for p in model.parameters())
    set_peft_model_state_dict(model, load_file(path / ADAPTER, device=str(device)))
    saved = torch.load(path / "optimizer.pt", map_location=device, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
