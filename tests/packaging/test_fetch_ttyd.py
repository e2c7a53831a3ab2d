"""scripts/fetch_ttyd.sh against a local stand-in for ttyd's release page: installed only when the checksum fits."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_ttyd.sh"
VERSION = "1.7.7"
BINARY = b"#!/bin/sh\necho 'ttyd version 1.7.7-test'\n"


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server over tmp/releases/<version>/ (the layout of github.com/.../releases/download)."""
    root = tmp_path / "releases"
    (root / VERSION).mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root / VERSION
    finally:
        server.shutdown()
        server.server_close()


def publish(folder: Path, assets: dict[str, bytes], sums: dict[str, bytes]) -> None:
    """Write the assets, and a SHA256SUMS as ttyd's release job writes it (`sha256sum ttyd.* > SHA256SUMS`)."""
    for name, data in assets.items():
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                                               for name, data in sums.items()))


def fetch(url: str, dest: Path) -> subprocess.CompletedProcess:
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    env = {"PATH": os.environ["PATH"], "TTYD_RELEASES": url, "TTYD_ARCH": "x86_64"}
    return subprocess.run(["bash", str(SCRIPT), VERSION, str(dest)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_binary_matching_its_published_checksum_is_installed(releases, tmp_path: Path) -> None:
    url, folder = releases
    other = b"\x7fELF aarch64 build"
    publish(folder, {"ttyd.x86_64": BINARY, "ttyd.aarch64": other}, {"ttyd.aarch64": other, "ttyd.x86_64": BINARY})
    dest = tmp_path / "bin" / "ttyd"
    done = fetch(url, dest)
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == BINARY and os.access(dest, os.X_OK)
    assert hashlib.sha256(BINARY).hexdigest() in done.stdout
    assert subprocess.run([str(dest), "--version"], capture_output=True, text=True).stdout.startswith("ttyd version")


def test_a_tampered_binary_is_refused_and_nothing_installed(releases, tmp_path: Path) -> None:
    url, folder = releases
    publish(folder, {"ttyd.x86_64": BINARY + b"# tampered\n"}, {"ttyd.x86_64": BINARY})
    dest = tmp_path / "ttyd"
    done = fetch(url, dest)
    assert done.returncode != 0
    assert "ttyd.x86_64 does not match its checksum in SHA256SUMS of ttyd 1.7.7; not installing it." in done.stderr
    assert not dest.exists()


def test_no_checksum_for_this_architecture_is_refused(releases, tmp_path: Path) -> None:
    url, folder = releases
    publish(folder, {"ttyd.x86_64": BINARY}, {"ttyd.x86_64.exe": BINARY})  # a near-miss name must not count
    done = fetch(url, tmp_path / "ttyd")
    assert done.returncode != 0
    assert "SHA256SUMS of ttyd 1.7.7 lists no checksum for ttyd.x86_64." in done.stderr
    assert not (tmp_path / "ttyd").exists()


def test_an_unreachable_release_says_how_to_build_without_ttyd(releases, tmp_path: Path) -> None:
    url, _ = releases  # nothing published: 404
    done = fetch(url, tmp_path / "ttyd")
    assert done.returncode != 0
    assert f"could not download {url}/{VERSION}/SHA256SUMS" in done.stderr
    assert "--build-arg TTYD_VERSION=" in done.stderr
    assert not (tmp_path / "ttyd").exists()
