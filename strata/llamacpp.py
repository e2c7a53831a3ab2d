"""llama.cpp's own converter scripts, version-matched to the installed llama-cpp-python, run as subprocesses."""

from __future__ import annotations

import os
import re
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
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python", "-d", str(folder),
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
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and ".." not in m.name.split("/")
                       and m.name[len(prefix):].split("/")[0] in PARTS and (m.isfile() or m.isdir())]
            for member in members:
                member.name = member.name[len(prefix):]
            # filter="data" needs Python 3.11.4+; Debian bookworm's python3.11 (3.11.2) lacks it: the members
            # kept above are plain files and folders under PARTS either way.
            tar.extractall(tmp, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        missing = [p for p in PARTS if not (tmp / p).exists()]
        if missing:
            raise StrataError(f"{sdist} lacks {missing}; this llama-cpp-python version ships other converters.")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# What llama.cpp says (a regex over its converter or loader log) -> what to do. The first pattern found names the
# cause in llama.cpp's own words; a log matching none is quoted by its last error line.
DIAGNOSES: list[tuple[str, str]] = [
    (r"BPE pre-tokenizer was not recognized[^\n]*",
     "llama.cpp's converter does not know this tokenizer's pre-tokenizer{chkhsh}. A newer llama.cpp may: upgrade "
     "llama-cpp-python (its converter comes with it) or point " + ENV_CHECKOUT + " at a newer llama.cpp checkout; a "
     "new tokenizer is registered with llama.cpp's convert_hf_to_gguf_update.py (llama.cpp PR #6920)"),
    (r"Model \S+ is not supported",
     "llama.cpp's converter has no model class for this architecture (convert_hf_to_gguf.py --print-supported-models "
     "lists those it has): choose a base of a supported family, or a llama-cpp-python whose llama.cpp supports it"),
    (r"Failed to detect model architecture",
     "config.json names no `architectures`; add the model class, e.g. [\"LlamaForCausalLM\"]"),
    (r"unknown model architecture: '[^']*'",
     "this llama.cpp cannot run the architecture the GGUF names: use a llama-cpp-python that supports it, or another base"),
    (r"error loading model vocabulary: [^\n]*",
     "llama.cpp could not build its tokenizer from the converted vocabulary (for some families it looks special tokens "
     "up by name, e.g. Phi-3's <|endoftext|>): use the model's own tokenizer files, with all its special tokens"),
    (r"(wrong number of tensors[^\n]*|missing tensor[^\n]*|tensor '[^']*' has wrong shape[^\n]*)",
     "the GGUF does not hold the tensors this llama.cpp expects: converter and runtime must be the same llama.cpp "
     "version (unset " + ENV_CHECKOUT + " or point it at the checkout matching llama-cpp-python)"),
]
LAST_ERROR = r"(?m)^(?:\w+(?:Error|Exception)\b.*|.*error loading model: .*)$"


def explain(log: str) -> str:
    """`"<llama.cpp's words>": <what to do>` for a failed conversion or load, from its log."""
    for pattern, advice in DIAGNOSES:
        found = ([None] + list(re.finditer(pattern, log)))[-1]  # the last mention: the exception, not a banner
        if found:
            chkhsh = re.search(r"chkhsh:\s*([0-9a-f]{16,})", log)
            return f"\"{found.group(0).strip()}\": " + advice.format(chkhsh=f" (chkhsh {chkhsh.group(1)})" if chkhsh else "")
    errors = re.findall(LAST_ERROR, log)
    lines = [line for line in log.splitlines() if line.strip()]
    return f"\"{(errors or lines or ['no output'])[-1].strip()}\""


def run_script(script: str, args: list[str], what: str, log: Path) -> str:
    """Run one converter with this interpreter. On failure the whole output is written to `log` and a one-line
    StrataError names llama.cpp's reason, what to do, and the log."""
    path = scripts_dir() / script
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the script's own gguf-py
    cmd = [sys.executable, str(path), *args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if done.returncode != 0:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{done.stdout}(exit {done.returncode})\n")
        raise StrataError(f"{what} failed in llama.cpp's {script}: {explain(done.stdout)}. Full log: {log}")
    log.unlink(missing_ok=True)  # an older failure's log no longer describes this output
    return done.stdout


def convert_hf(hf_dir: Path, out: Path, outtype: str = "f16", *, log: Path | None = None,
               model_name: str | None = None, vocab_only: bool = False) -> Path:
    """HF model dir -> GGUF at `out` (outtype f32, f16, bf16 or q8_0; `vocab_only`: tokenizer and hyperparameters
    only). `model_name` sets general.name, which llama.cpp reads for some per-family tokenizer rules."""
    extra = [*(["--model-name", model_name] if model_name else []), *(["--vocab-only"] if vocab_only else [])]
    run_script("convert_hf_to_gguf.py", [str(hf_dir), "--outfile", str(out), "--outtype", outtype, *extra],
               f"converting {hf_dir} to GGUF", log or out.with_name(out.name + ".log"))
    return out


def convert_lora(adapter_dir: Path, base_dir: Path, out: Path, outtype: str = "f32", *, log: Path | None = None) -> Path:
    """PEFT LoRA dir -> GGUF LoRA at `out`, against the HF base it was trained on."""
    run_script("convert_lora_to_gguf.py",
               [str(adapter_dir), "--base", str(base_dir), "--outfile", str(out), "--outtype", outtype],
               f"converting the LoRA adapter {adapter_dir} to GGUF", log or out.with_name(out.name + ".log"))
    return out


if __name__ == "__main__":
    print(scripts_dir())
