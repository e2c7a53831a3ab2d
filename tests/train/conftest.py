"""Training fixtures: a small train/val dataset written from the kit corpus, and a workspace that points at it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from strata.kit.texts import CORPUS_DIR
from strata.settings import Settings

FAST = {"max_seq_len": 64, "batch_size": 2, "grad_accum": 1, "max_steps": 12, "lr": 5e-3, "save_steps": 1000,
        "eval_batches": 4}
SAMPLES = 40  # training records per run: a few dozen steps of 2x64 tokens, seconds on CPU
TRAINED_STEPS = 48


def corpus_records() -> list[dict]:
    """One record per corpus paragraph: text + a one-turn chat asking about its heading."""
    records = []
    for path in sorted(CORPUS_DIR.glob("*.md")):
        topic, heading = path.stem, path.stem
        for n, block in enumerate(re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))):
            block = block.strip()
            if block.startswith("#"):
                heading = block.lstrip("# ").strip()
                continue
            if len(block) < 200:
                continue
            answer = " ".join(re.split(r"(?<=\.)\s+", block)[:2])
            records.append({
                "id": f"{topic}-{n}", "text": block, "topic": topic, "source": f"{topic}/{topic}.pdf", "pages": [1],
                "heading": heading, "n_tokens": len(block.split()),
                "messages": [{"role": "user", "content": f"In {topic.replace('_', ' ')}, what about {heading}?"},
                             {"role": "assistant", "content": answer}],
            })
    return records


@pytest.fixture(scope="session")
def dataset_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """train.jsonl / val.jsonl: every 6th paragraph of each topic held out."""
    folder = tmp_path_factory.mktemp("dataset")
    records = corpus_records()
    val = [r for i, r in enumerate(records) if i % 6 == 5]
    train = [r for i, r in enumerate(records) if i % 6 != 5]
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl", folder / "val.jsonl"


def dataset_workspace(root: Path, dataset_files: tuple[Path, Path], tiny_base: Path) -> Settings:
    """A workspace at `root` with the dataset in data/processed and BASE_MODEL at the tiny base."""
    import shutil

    settings = Settings.resolve(workspace=root, base_model=str(tiny_base), n_threads=1)  # see train.cpu_threads
    settings.ensure_skeleton()
    for src in dataset_files:
        shutil.copy(src, settings.processed / src.name)
    return settings


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_files: tuple[Path, Path], tiny_base: Path) -> Settings:
    """A workspace with level 1 and level 2 trained (shared, read-only: copy before mutating)."""
    from strata.train.trainer import train_level

    settings = dataset_workspace(tmp_path_factory.mktemp("trained") / "ws", dataset_files, tiny_base)
    for level in (1, 2):  # 48 steps: enough for the held-out loss to fall on this tiny base whatever the data order
        train_level(settings, level, overrides=FAST | {"max_steps": TRAINED_STEPS}, max_train_samples=SAMPLES,
                    progress=False)
    return settings


@pytest.fixture
def ws(workspace: Settings, dataset_files: tuple[Path, Path], tiny_base: Path) -> Settings:
    """The test's own workspace with the dataset in data/processed and BASE_MODEL at the tiny base."""
    return dataset_workspace(workspace.workspace, dataset_files, tiny_base)


@pytest.fixture
def fast() -> dict:
    """Preset overrides that keep a CPU training run to seconds."""
    return dict(FAST)


@pytest.fixture
def trained_steps() -> int:
    """Optimiser steps of each adapter in the `trained` workspace."""
    return TRAINED_STEPS


@pytest.fixture
def preset_file(tmp_path: Path):
    """Write a preset YAML (for CLI runs that need more than the CLI's knobs): preset_file(values) -> path."""
    import yaml

    def write(values: dict, name: str = "preset.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(values))
        return path

    return write


@pytest.fixture
def strata_env(tiny_base: Path) -> dict[str, str]:
    """Environment for `python -m strata ...` subprocesses: the tiny base, one torch thread per process."""
    import os

    return os.environ | {"BASE_MODEL": str(tiny_base), "N_THREADS": "1", "PYTHONUNBUFFERED": "1"}
