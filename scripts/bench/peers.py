"""The launches under test: each peer in its best configuration for the measures it runs, started on the same GGUF
and threads, waited on until ready, and stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from strata.ports import free_port

STRATA = "strata serve"
STRATA_NP1 = "strata serve --parallel 1"  # the like-for-like single-stream launch (llama-server -np 1)
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python server"
SHORT_NAMES = {"strata": STRATA, "strata-np1": STRATA_NP1, "llama-server": LLAMA_SERVER,
               "llama-cpp-python": LLAMA_CPP_PYTHON}


@dataclass(frozen=True)
class PeerSpec:
    """One launch: a peer, how it was started (shown in the table) and which measures it runs (`role`)."""

    name: str
    role: str  # a key of run.ROLES
    config: str
    argv: list[str]
    ready_path: str
    lora_flag: str = "--lora"  # how to add one more adapter at start (the restart measure)


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


def peer_specs(model: Path, loras: dict[str, Path], startup: tuple[str, ...], threads: int, n_ctx: int,
               llama_server: Path | None, slots: int = 4) -> list[PeerSpec]:
    """Every launch that can run here. strata runs once with its default --parallel 4 and the four adapters loaded
    but not applied (it never computes a zero-scale adapter); llama-server computes adapters loaded at scale 0
    (measured 30 % slower), so each of its measures gets a launch with only what that measure needs. Flash
    attention is off everywhere (strata's default); the context per sequence is n_ctx for every peer."""
    paths = [str(loras[n]) for n in startup]
    specs = [
        PeerSpec(STRATA, "strata", f"--parallel {slots}, {len(paths)} adapters loaded (scale 0 until a request or "
                 "POST /lora-adapters applies one)",
                 [sys.executable, "-m", "strata.serve", "--model", str(model), "--n_threads", str(threads),
                  "--n_ctx", str(n_ctx), "--parallel", str(slots), "--lora_init_without_apply", "True",
                  *[a for p in paths for a in ("--lora", p)]], "/health"),
        PeerSpec(STRATA_NP1, "strata-np1", f"--parallel 1, {paths and startup[0]} loaded (scale 0 until POST "
                 "/lora-adapters applies it)",
                 [sys.executable, "-m", "strata.serve", "--model", str(model), "--n_threads", str(threads),
                  "--n_ctx", str(n_ctx), "--parallel", "1", "--lora_init_without_apply", "True", "--lora", paths[0]],
                 "/health"),
        PeerSpec(LLAMA_CPP_PYTHON, "lcp", "no adapters",
                 [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads),
                  "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx), "--flash_attn", "False"],
                 "/v1/models", lora_flag="--lora_path"),
    ]
    if llama_server is not None:
        base = [str(llama_server), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-fa", "off",
                "--no-webui"]
        specs += [
            PeerSpec(LLAMA_SERVER, "ls-bare", "-np 1, no adapters", [*base, "-c", str(n_ctx), "-np", "1"],
                     "/health"),
            PeerSpec(LLAMA_SERVER, "ls-adapter", f"-np 1 --lora {startup[0]} (scale 1)",
                     [*base, "-c", str(n_ctx), "-np", "1", "--lora", paths[0]], "/health"),
            PeerSpec(LLAMA_SERVER, "ls-same", f"-np {slots} --lora {startup[0]} (scale 1)",
                     [*base, "-c", str(n_ctx * slots), "-np", str(slots), "--lora", paths[0]], "/health"),
            PeerSpec(LLAMA_SERVER, "ls-mixed", f"-np {slots}, {len(paths)} adapters loaded at scale 0, per-request "
                     "\"lora\"", [*base, "-c", str(n_ctx * slots), "-np", str(slots), "--lora-init-without-apply",
                                  *[a for p in paths for a in ("--lora", p)]], "/health"),
        ]
    return specs


def with_extra_lora(spec: PeerSpec, lora: Path) -> PeerSpec:
    """The same launch with one more adapter: what loading a new adapter costs without runtime loading."""
    return PeerSpec(spec.name, spec.role, spec.config, [*spec.argv, spec.lora_flag, str(lora)], spec.ready_path,
                    spec.lora_flag)


def start(spec: PeerSpec, log_dir: Path, timeout: float = 300.0) -> Running:
    """Launch on a free loopback port; block until ready_path answers 200. Raises RuntimeError on failure."""
    port = free_port()
    argv = [*spec.argv, "--host", "127.0.0.1", "--port", str(port)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{spec.name.replace(' ', '-')}-{spec.role}.log"
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
