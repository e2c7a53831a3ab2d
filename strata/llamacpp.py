"""llama.cpp's own converter scripts, version-matched to the installed llama-cpp-python, run as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from strata.errors import StrataError

ENV_CHECKOUT = "STRATA_LLAMA_CPP"  # a llama.cpp checkout (or extracted scripts) for offline hosts
ENV_CACHE = "STRATA_CACHE"
# What the converters need from vendor/llama.cpp inside the llama-cpp-python sdist.
PARTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py")


def installed_version() -> str:
    """The llama-cpp-python version that serves; the converters must match it."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise StrataError(
            "llama-cpp-python is not installed; run `make install` (or pip install 'strata[serve]')."
        ) from None


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "strata")


def scripts_dir(fetch: bool = True) -> Path:
    """Folder holding convert_hf_to_gguf.py and friends: $STRATA_LLAMA_CPP, else the cache (fetched once)."""
    override = os.environ.get(ENV_CHECKOUT)
    if override:
        path = Path(override).expanduser()
        if not (path / "convert_hf_to_gguf.py").is_file():
            raise StrataError(f"{ENV_CHECKOUT}={path} has no convert_hf_to_gguf.py; point it at a llama.cpp checkout.")
        return path
    version = installed_version()
    path = cache_root() / f"llama.cpp-{version}"
    if all((path / part).exists() for part in PARTS):
        return path
    if not fetch:
        raise StrataError(f"llama.cpp converters for {version} are not cached at {path}; run `python -m strata.llamacpp`.")
    _extract(_sdist(version), path)
    return path


def _sdist(version: str) -> Path:
    """The llama-cpp-python sdist (it vendors llama.cpp at exactly the served version), downloaded once."""
    folder = cache_root() / "sdist"
    target = folder / f"llama_cpp_python-{version}.tar.gz"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder),
           f"llama-cpp-python=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        raise StrataError(
            f"could not download the llama-cpp-python {version} sdist for its converter scripts "
            f"({done.stderr.strip().splitlines()[-1:] or 'no output'}). Offline? Set {ENV_CHECKOUT} to a llama.cpp "
            f"checkout at the matching version, or copy the sdist to {target}."
        )
    return target


def _extract(sdist: Path, dest: Path) -> None:
    """Unpack only the converter parts, then rename into place, so a half-extracted cache is never used."""
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].split("/")[0] in PARTS and (m.isfile() or m.isdir())]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(tmp, members=members, filter="data")
        missing = [p for p in PARTS if not (tmp / p).exists()]
        if missing:
            raise StrataError(f"{sdist} lacks {missing}; this llama-cpp-python version ships other converters.")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_script(script: str, args: list[str], what: str) -> str:
    """Run one converter with this interpreter; raise a StrataError carrying its last lines on failure."""
    path = scripts_dir() / script
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the script's own gguf-py
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise StrataError(f"{what} failed (llama.cpp {script}, exit {done.returncode}):\n{tail}")
    return done.stderr + done.stdout


def convert_hf(hf_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """HF model dir -> GGUF at `out` (outtype f32, f16, bf16 or q8_0)."""
    run_script("convert_hf_to_gguf.py", [str(hf_dir), "--outfile", str(out), "--outtype", outtype],
               f"converting {hf_dir} to GGUF")
    return out


def convert_lora(adapter_dir: Path, base_dir: Path, out: Path, outtype: str = "f32") -> Path:
    """PEFT LoRA dir -> GGUF LoRA at `out`, against the HF base it was trained on."""
    run_script("convert_lora_to_gguf.py",
               [str(adapter_dir), "--base", str(base_dir), "--outfile", str(out), "--outtype", outtype],
               f"converting the LoRA adapter {adapter_dir} to GGUF")
    return out


if __name__ == "__main__":
    print(scripts_dir())
