"""`strata demo`: the whole chain on the kit's tiny model, in an isolated workspace."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from strata.settings import Settings


@dataclass(frozen=True)
class Stage:
    """One demo step; `run` is None while the stage is not built yet."""

    name: str
    run: Callable[[Settings, Callable[[str], None]], str | None] | None


def _sample_pdfs(settings: Settings, echo: Callable[[str], None]) -> str:
    from strata.kit.pdfs import write_sample_pdfs

    paths = write_sample_pdfs(settings.raw_pdfs, with_bad=True)
    return f"{len(paths)} PDFs in {settings.raw_pdfs} (good and bad)"


def _tiny_base(settings: Settings, echo: Callable[[str], None], steps: int = 300) -> str:
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    base = Path(settings.base_model)
    if (base / "config.json").is_file():
        return f"reusing {base}"
    make_tiny_base(base, corpus_texts(settings.raw_pdfs), SPECS["demo"], pretrain_steps=steps, progress=True)
    return f"tiny Llama base at {base}"


STAGES: list[Stage] = [
    Stage("sample PDFs", _sample_pdfs),
    Stage("tiny base model", _tiny_base),
    Stage("build train_all (pretest -> dataset -> levels -> merge -> GGUF -> archive)", None),
    Stage("serve + QA across layers", None),
]


def run_demo(workspace: Path, echo: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Run every built stage in order; report the rest as not built yet. Returns (stage, outcome) rows."""
    settings = Settings.resolve(workspace=workspace)
    settings.ensure_skeleton()
    echo(f"demo workspace: {settings.workspace}")
    rows = []
    for number, stage in enumerate(STAGES, 1):
        if stage.run is None:
            rows.append((stage.name, "not built yet"))
            echo(f"[{number}/{len(STAGES)}] {stage.name}: not built yet")
            continue
        echo(f"[{number}/{len(STAGES)}] {stage.name} ...")
        started = time.monotonic()
        outcome = stage.run(settings, echo) or "done"
        rows.append((stage.name, outcome))
        echo(f"    {outcome} ({time.monotonic() - started:.1f}s)")
    return rows
