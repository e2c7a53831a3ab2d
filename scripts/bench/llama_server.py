"""Build (once) llama.cpp's own llama-server from the pinned llama-cpp-python sdist, with the wheel's portable flags."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# Same portable flags as the Makefile's CMAKE_ARGS for the wheel (AMX is advertised here but SIGILLs).
PORTABLE_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# Only the server binary: no tests/examples, no network fetches (curl, prebuilt web UI), one static binary.
SERVER_ONLY_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF "
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON "
    "-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
)


def cache_root() -> Path:
    return Path(os.environ.get("STRATA_CACHE") or Path.home() / ".cache" / "strata")


def portable_flags() -> str:
    """The wheel's CMAKE_ARGS (the Makefile exports them), so both peers run the same kernels."""
    return os.environ.get("CMAKE_ARGS") or PORTABLE_FLAGS


def build_dir(version: str, flags: str) -> Path:
    key = hashlib.sha1(f"{version}|{flags}|{SERVER_ONLY_FLAGS}".encode()).hexdigest()[:12]
    return cache_root() / f"llama-server-{version}-{key}"


def sdist_path(version: str) -> Path:
    """The pinned sdist (already fetched by `make install`); pip-downloaded here if missing."""
    folder = cache_root() / "sdist"
    target = folder / f"llama_cpp_python-{version}.tar.gz"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                        "-d", str(folder), f"llama-cpp-python=={version}"], check=True, capture_output=True)
    return target


def _extract_llama_cpp(sdist: Path, dest: Path) -> None:
    """Unpack vendor/llama.cpp of the sdist into dest (atomically renamed into place)."""
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".src-"))
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and len(m.name) > len(prefix)]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(tmp, members=members, filter="data")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_group(cmd: list[str], out, timeout: float) -> None:
    """Run cmd in its own process group; on timeout kill the whole group (cmake, ninja and the compilers)."""
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)


def binary_path(version: str, flags: str | None = None) -> Path:
    return build_dir(version, flags or portable_flags()) / "bin" / "llama-server"


def ensure_llama_server(version: str, jobs: int = 2, timeout: float = 3600, log=print) -> tuple[Path | None, dict]:
    """Return (binary, info); binary is None (and info['error'] says why) when it cannot be built in `timeout` s.

    info carries the build seconds when this call built it ('built_s') and the flags used. A second caller
    waits on the first one's build (file lock) instead of building twice.
    """
    flags = portable_flags()
    root = build_dir(version, flags)
    binary = root / "bin" / "llama-server"
    info: dict = {"flags": flags, "binary": str(binary), "cached": binary.is_file()}
    if binary.is_file():
        return binary, info
    root.mkdir(parents=True, exist_ok=True)
    with (root / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary, {**info, "cached": True}
        return _build(version, flags, root, binary, jobs, timeout, info, log)


def _build(version: str, flags: str, root: Path, binary: Path, jobs: int, timeout: float, info: dict,
           log) -> tuple[Path | None, dict]:
    logfile = root / "build.log"
    start = time.perf_counter()
    try:
        src = root / "src"
        if not (src / "CMakeLists.txt").is_file():
            shutil.rmtree(src, ignore_errors=True)
            _extract_llama_cpp(sdist_path(version), src)
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = ["cmake", "-S", str(src), "-B", str(root / "build"), *generator,
                     *flags.split(), *SERVER_ONLY_FLAGS.split()]
        build = ["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j", str(jobs)]
        log(f"building llama-server {version} (one time, several minutes on 2 cores); log: {logfile}")
        with logfile.open("w") as out:
            for cmd in (configure, build):
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                _run_group(["nice", "-n", "19", *cmd], out, timeout - (time.perf_counter() - start))
        built = next((root / "build").rglob("bin/llama-server"))
        (root / "bin").mkdir(exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, binary)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, StopIteration,
            tarfile.TarError) as exc:
        tail = logfile.read_text().strip().splitlines()[-6:] if logfile.is_file() else []
        info["error"] = f"llama-server build failed ({exc}); see {logfile}: " + " | ".join(tail)
        return None, info
    info["built_s"] = round(time.perf_counter() - start, 1)
    return binary, info


if __name__ == "__main__":
    from importlib import metadata

    path, details = ensure_llama_server(metadata.version("llama-cpp-python"))
    print(path, details)
    sys.exit(0 if path else 1)
