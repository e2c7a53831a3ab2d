"""The three servers under test: how to launch each on the same GGUF and threads, wait until ready, and stop it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STRATA = "strata serve"
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python server"
SHORT_NAMES = {"strata": STRATA, "llama-server": LLAMA_SERVER, "llama-cpp-python": LLAMA_CPP_PYTHON}


@dataclass(frozen=True)
class PeerSpec:
    """One server kind: its launch line and what it can do."""

    name: str
    argv: list[str]
    ready_path: str  # GET this until 200
    switch_form: str | None = None  # "id": POST /lora-adapters [{"id","scale"}]; None: cannot switch at runtime
    loads_by_path: bool = False  # can load a never-seen adapter file at runtime
    parallel_slots: int = 1
    extra_body: dict = field(default_factory=dict)  # fields added to every completion request (none by default:
    # the bench model never emits EOS, so every peer gets the same request body)


@dataclass
class Running:
    spec: PeerSpec
    proc: subprocess.Popen
    base_url: str
    start_s: float
    log: Path

    def stop(self) -> float:
        """SIGTERM, wait (SIGKILL after 15 s); returns seconds taken."""
        started = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peer_specs(model: Path, loras: dict[str, Path], threads: int, n_ctx: int, llama_server: Path | None,
               preload: tuple[str, ...] = ("alpha", "beta"), slots: int = 4) -> dict[str, PeerSpec]:
    """Launch lines for every peer that can run here. Adapters are loaded but not applied (scale 0), so
    decode is measured on the bare model everywhere; flash attention is off everywhere (strata's default)."""
    lora_paths = [str(loras[n]) for n in preload]
    specs = {
        STRATA: PeerSpec(
            STRATA,
            [sys.executable, "-m", "strata.serve", "--model", str(model), "--n_threads", str(threads),
             "--n_ctx", str(n_ctx), "--lora_init_without_apply", "True",
             *[a for p in lora_paths for a in ("--lora", p)]],
            "/health", switch_form="id", loads_by_path=True),
        LLAMA_CPP_PYTHON: PeerSpec(
            LLAMA_CPP_PYTHON,
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads),
             "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx), "--flash_attn", "False"],
            "/v1/models"),
    }
    if llama_server is not None:
        specs[LLAMA_SERVER] = PeerSpec(
            LLAMA_SERVER,
            [str(llama_server), "-m", str(model), "-t", str(threads), "-tb", str(threads),
             "-c", str(n_ctx * slots), "-np", str(slots), "-fa", "off", "--no-webui",
             "--lora-init-without-apply", *[a for p in lora_paths for a in ("--lora", p)]],
            "/health", switch_form="id", parallel_slots=slots)
    return specs


def with_extra_lora(spec: PeerSpec, lora: Path) -> PeerSpec:
    """The same peer relaunched with one more --lora: what loading a new adapter costs without runtime loading."""
    flag = "--lora_path" if spec.name == LLAMA_CPP_PYTHON else "--lora"
    return PeerSpec(spec.name, [*spec.argv, flag, str(lora)], spec.ready_path, spec.switch_form,
                    spec.loads_by_path, spec.parallel_slots, spec.extra_body)


def start(spec: PeerSpec, log_dir: Path, timeout: float = 300.0) -> Running:
    """Launch on a free loopback port; block until ready_path answers 200. Raises RuntimeError on failure."""
    port = free_port()
    argv = [*spec.argv, "--host", "127.0.0.1", "--port", str(port)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{spec.name.replace(' ', '-')}.log"
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log.open("ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    running = Running(spec, proc, base, 0.0, log)
    try:
        with httpx.Client(timeout=5.0) as client:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"{spec.name} exited with {proc.returncode} while starting; see {log}")
                try:
                    if client.get(base + spec.ready_path).status_code == 200:
                        running.start_s = time.perf_counter() - started
                        return running
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{spec.name} was not ready after {timeout:.0f} s; see {log}")
    except BaseException:
        running.stop()  # never leave a half-started server behind (timeout, Ctrl-C, SIGTERM)
        raise
