"""scripts/llama_wheel.sh with a recording stand-in for pip: what it downloads, its cache key, --cached, prebuilt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "llama_wheel.sh"
VERSION = "0.3.36"
# Plays `python -m pip download|wheel`: logs its argv (and CMAKE_ARGS), writes the file pip would write.
FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$PIP_LOG"
[ "$1 $2" = "-m pip" ] || exit 90
out=""; prev=""
for arg in "$@"; do
  case "$prev" in -d|-w) out="$arg" ;; esac
  prev="$arg"
done
case "$3" in
  download) touch "$out/llama_cpp_python-${VERSION}.tar.gz" ;;
  wheel) echo "CMAKE_ARGS=$CMAKE_ARGS" >> "$PIP_LOG"
         touch "$out/llama_cpp_python-${VERSION}-py3-none-linux_x86_64.whl" ;;
  *) exit 91 ;;
esac
"""


@pytest.fixture
def wheel_sh(tmp_path: Path):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    pip_log = tmp_path / "pip.log"

    def run(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
        full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": str(fake), "PIP_LOG": str(pip_log),
                "VERSION": VERSION, "STRATA_CACHE": str(cache)} | env
        return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=60)

    run.pip_log = pip_log
    return run


def test_builds_only_llama_cpp_python_from_source_and_caches_by_flags(wheel_sh, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = wheel_sh(VERSION, cache=cache)
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip())
    assert wheel.is_file() and wheel.parent.parent == cache / "wheels"
    calls = wheel_sh.pip_log.read_text().splitlines()
    download = next(c for c in calls if c.startswith("-m pip download"))
    assert "--no-binary llama-cpp-python" in download and ":all:" not in download
    assert f"llama-cpp-python=={VERSION}" in download
    assert "CMAKE_ARGS=-DGGML_NATIVE=OFF" in calls[-1]  # the portable default reaches the compile
    # Same version and flags: the cached wheel, no pip at all; other flags: another cache entry, compiled again.
    again = wheel_sh(VERSION, cache=cache)
    assert again.stdout.strip() == str(wheel) and len(wheel_sh.pip_log.read_text().splitlines()) == len(calls)
    other = wheel_sh(VERSION, cache=cache, CMAKE_ARGS="-DGGML_NATIVE=ON")
    assert other.returncode == 0 and Path(other.stdout.strip()).parent != wheel.parent
    assert "CMAKE_ARGS=-DGGML_NATIVE=ON" in wheel_sh.pip_log.read_text().splitlines()[-1]
    assert "download" not in wheel_sh.pip_log.read_text().splitlines()[-2]  # the sdist was kept


def test_cached_only_reports_and_never_builds(wheel_sh, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    missing = wheel_sh("--cached", VERSION, cache=cache)
    assert missing.returncode == 3 and missing.stdout == ""
    assert not wheel_sh.pip_log.exists()
    built = wheel_sh(VERSION, cache=cache).stdout.strip()
    assert wheel_sh("--cached", VERSION, cache=cache).stdout.strip() == built


def test_a_prebuilt_cache_with_the_same_key_is_used_instead_of_compiling(wheel_sh, tmp_path: Path) -> None:
    prebuilt = tmp_path / "host-cache"
    host_wheel = Path(wheel_sh(VERSION, cache=prebuilt).stdout.strip())
    before = sorted(p.relative_to(prebuilt) for p in prebuilt.rglob("*"))
    calls = len(wheel_sh.pip_log.read_text().splitlines())
    image_cache = tmp_path / "image-cache"
    probe = wheel_sh("--cached", VERSION, cache=image_cache, STRATA_PREBUILT=str(prebuilt))
    assert probe.returncode == 0, probe.stderr
    assert "using the prebuilt wheel" in probe.stderr
    copied = Path(probe.stdout.strip())
    assert copied.parent == image_cache / "wheels" / host_wheel.parent.name and copied.name == host_wheel.name
    assert (image_cache / "sdist" / f"llama_cpp_python-{VERSION}.tar.gz").is_file()
    assert wheel_sh(VERSION, cache=image_cache, STRATA_PREBUILT=str(prebuilt)).stdout.strip() == str(copied)
    assert len(wheel_sh.pip_log.read_text().splitlines()) == calls  # no download, no compile
    assert sorted(p.relative_to(prebuilt) for p in prebuilt.rglob("*")) == before  # only read (a bind mount)
    # Built with other flags: not taken, so the image compiles its own.
    other = wheel_sh("--cached", VERSION, cache=tmp_path / "c2", STRATA_PREBUILT=str(prebuilt),
                     CMAKE_ARGS="-DGGML_NATIVE=ON")
    assert other.returncode == 3
