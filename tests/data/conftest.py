"""Session fixtures for the data steps: one workspace with the kit PDFs (good + bad) pretested and chunked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strata.settings import Settings


def fill_raw_pdfs(settings: Settings, sample_pdfs: Path) -> Settings:
    """Copy the kit's PDFs (good and bad) into the workspace's raw_pdfs."""
    settings.ensure_skeleton()
    shutil.copytree(sample_pdfs, settings.raw_pdfs, dirs_exist_ok=True)
    return settings


@pytest.fixture(scope="session")
def fill() -> object:
    """The raw_pdfs filler, for tests that need a fresh mutable copy."""
    return fill_raw_pdfs


@pytest.fixture(scope="session")
def pretested(tmp_path_factory: pytest.TempPathFactory, sample_pdfs: Path) -> Settings:
    """A workspace holding the kit PDFs (good and bad) after `pdf-pretest` with the default preset."""
    from strata.data.pretest import run_pretest

    settings = fill_raw_pdfs(Settings.resolve(workspace=tmp_path_factory.mktemp("data_ws"), env={}), sample_pdfs)
    run_pretest(settings)
    return settings


@pytest.fixture(scope="session")
def built(pretested: Settings, tiny_base: Path) -> Settings:
    """The pretested workspace after `dataset` (default preset, tiny_base tokenizer); read-only for tests."""
    from strata.data.dataset import build_dataset

    build_dataset(pretested, tokenizer_dir=tiny_base)
    return pretested


@pytest.fixture(scope="session")
def tokenizer(tiny_base: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)
