"""Fixtures for the packaging tests: start.sh launched for real on a free port, with sshd and ttyd hidden."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from strata.ports import free_port

REPO = Path(__file__).resolve().parents[2]
READY = "strata serve is ready"
HIDDEN_TOOLS = ("sshd", "ttyd")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tool_free_path() -> str:
    """PATH without any folder holding sshd or ttyd, so start.sh takes its 'not installed' branches."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    keep = [d for d in dirs if not any((Path(d) / tool).exists() for tool in HIDDEN_TOOLS)]
    return os.pathsep.join(keep)


@dataclass
class Appliance:
    """One start.sh process: its port, log file and Popen handle."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"start.sh exited {self.proc.returncode} before ready:\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"start.sh not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(name="port_is_free", scope="session")
def port_is_free_fixture() -> Callable[[int], bool]:
    return port_is_free


@pytest.fixture(scope="session")
def start_sh() -> Path:
    return REPO / "start.sh"


@pytest.fixture(scope="session")
def strata_bin() -> str:
    """The venv's strata command (start.sh's STRATA_BIN)."""
    local = REPO / ".venv" / "bin" / "strata"
    found = str(local) if local.exists() else shutil.which("strata")
    assert found, "the strata command is not installed; run `make install`"
    return found


@pytest.fixture(scope="session")
def run_start_sh(start_sh: Path, strata_bin: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Callable[..., subprocess.CompletedProcess]:
    """Run start.sh to completion (for the paths that exit before serving) with a clean, tool-free env."""

    def run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
        full = _base_env(strata_bin, tmp_path_factory.mktemp("ws")) | env
        return subprocess.run([str(start_sh)], env=full, capture_output=True, text=True, timeout=timeout)

    return run


def _default_signals() -> None:
    """Give start.sh SIGINT and SIGQUIT at their defaults, as a container's PID 1 gets them. A test process whose
    SIGINT is ignored (a shell's background job starts it that way) hands that to its children, and bash cannot
    trap a signal ignored at its start, so start.sh would ignore the SIGINT test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def launch(start_sh: Path, strata_bin: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Callable[..., Appliance]]:
    """Start start.sh in the background on a free port (its own process group); every one is stopped at the end."""
    started: list[Appliance] = []

    def start(env: dict[str, str]) -> Appliance:
        port = free_port()
        folder = tmp_path_factory.mktemp("appliance")
        log = folder / "start.log"
        full = _base_env(strata_bin, folder / "ws") | {"PORT": str(port), "HOST": "127.0.0.1"} | env
        with log.open("w") as out:
            proc = subprocess.Popen([str(start_sh)], env=full, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_default_signals)
        appliance = Appliance(proc, port, log)
        started.append(appliance)
        return appliance

    yield start
    for appliance in started:
        appliance.stop()


@pytest.fixture(scope="module")
def appliance(launch: Callable[..., Appliance], base_gguf: Path, lora_dirs: dict[str, Path]) -> Appliance:
    """The real server on the tiny GGUF with both kit adapters from LORA_PATHS (beta at scale 0.5)."""
    served = launch({
        "MODEL_PATH": str(base_gguf),
        "LORA_PATHS": f"{lora_dirs['alpha']}, {lora_dirs['beta']}:0.5",
        "N_CTX": "512",
        "N_THREADS": "1",
        "PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITESTKEY test@strata",
    })
    served.wait_ready()
    return served


def _base_env(strata_bin: str, workspace: Path) -> dict[str, str]:
    keep = ("LANG", "LC_ALL", "TMPDIR", "STRATA_CACHE", "STRATA_LLAMA_CPP")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    return env | {
        "PATH": tool_free_path(),
        "HOME": str(workspace.parent),
        "WORKSPACE": str(workspace),
        "STRATA_BIN": strata_bin,
        "HEALTH_TIMEOUT": "120",
        "STOP_TIMEOUT": "20",
    }
