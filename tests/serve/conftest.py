"""Serve fixtures: one shared real server on the tiny GGUF, fresh reference servers per adapter set, helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from strata.serve.config import ServeConfig
from strata.serve.server import serve_in_thread

PROMPT = "Revenue is recognized when"


def make_config(base_gguf: Path, root: Path, **overrides) -> ServeConfig:
    """A small, fast config: adapters allowed under `root` (the folder holding the lora dirs)."""
    values = dict(model=base_gguf, n_ctx=512, n_threads=2, n_batch=128, adapter_roots=[str(root)],
                  workspace=root / "_ws", seed=0)
    values.update(overrides)
    return ServeConfig(**values)


@pytest.fixture(scope="session")
def lora_root(lora_dirs: dict[str, Path]) -> Path:
    return lora_dirs["alpha"].parent


@pytest.fixture(scope="session")
def config_for(base_gguf: Path, lora_root: Path) -> Callable[..., ServeConfig]:
    return lambda **overrides: make_config(base_gguf, lora_root, **overrides)


@pytest.fixture(scope="session")
def server(config_for: Callable[..., ServeConfig]) -> Iterator[str]:
    """One real server for the session, started with no adapters."""
    with serve_in_thread(config_for()) as url:
        yield url


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    """A client on the shared server; the global adapter set is cleared again afterwards."""
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client
        client.post("/lora-adapters", json={"adapters": []})


def _complete(client: httpx.Client, prompt: str = PROMPT, max_tokens: int = 12, **extra) -> str:
    """Greedy text completion; fails loudly on a non-200 answer."""
    reply = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                                  **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["text"]


@pytest.fixture(scope="session")
def complete() -> Callable[..., str]:
    """complete(client, prompt=PROMPT, max_tokens=12, **extra) -> greedy completion text."""
    return _complete


@pytest.fixture(scope="session")
def fresh_reply(config_for: Callable[..., ServeConfig]) -> Callable[[tuple[tuple[str, float], ...]], str]:
    """Greedy reply of a freshly started server whose start-up adapter set is `loras` (cached per set)."""
    cache: dict[tuple, str] = {}

    def reply(loras: tuple[tuple[str, float], ...]) -> str:
        if loras not in cache:
            with serve_in_thread(config_for(loras=list(loras))) as url, httpx.Client(base_url=url, timeout=120) as c:
                cache[loras] = _complete(c)
        return cache[loras]

    return reply
