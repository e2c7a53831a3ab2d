"""Fixtures for merge/convert/train_all: a workspace on the tiny base, trained-looking levels, one shared conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strata.settings import Settings


@pytest.fixture
def on_tiny_base(workspace: Settings, tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The per-test workspace with BASE_MODEL pointing at the session's tiny base."""
    monkeypatch.setenv("BASE_MODEL", str(tiny_base))
    return Settings.resolve()


@pytest.fixture
def two_levels(on_tiny_base: Settings, lora_dirs: dict[str, Path]) -> Settings:
    """peft/level1 = the `alpha` LoRA, peft/level2 = the `beta` LoRA (real PEFT dirs on the tiny base)."""
    for level, name in ((1, "alpha"), (2, "beta")):
        shutil.copytree(lora_dirs[name], on_tiny_base.peft / f"level{level}")
    return on_tiny_base


@pytest.fixture(scope="session")
def converted(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict, list[str]]:
    """One real Q4_K_M conversion of the tiny base in its own workspace: (settings, fidelity record, echoed lines)."""
    from strata.export.convert import convert_model

    settings = Settings.resolve(workspace=tmp_path_factory.mktemp("converted"), base_model=str(tiny_base))
    settings.ensure_skeleton()
    lines: list[str] = []
    record = convert_model(settings, tiny_base, "Q4_K_M", echo=lines.append)
    return settings, record, lines
