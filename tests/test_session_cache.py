"""Tests never share state through ~/.cache/strata: each session gets its own cache, with the install's converters."""

from __future__ import annotations

from pathlib import Path

from strata.llamacpp import cache_root, scripts_dir


def test_the_cache_is_this_sessions_own_and_still_finds_the_converters(session_cache: Path, tmp_path: Path):
    assert cache_root() == session_cache and session_cache != Path.home() / ".cache" / "strata"
    assert (scripts_dir(fetch=False) / "convert_hf_to_gguf.py").is_file()  # linked in, not fetched again
