"""Serve fixtures: one shared real server on the tiny GGUF, fresh reference servers per adapter set, helpers."""

from __future__ import annotations

import math
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


def _fake_lora(path: Path, arch: str, rows: int, fill: float = 0.0) -> Path:
    """A genuine GGUF LoRA file for blk.0.attn_q of a `rows`-wide model of architecture `arch`, its lora_b filled
    with `fill` (a wrong arch or width does not fit the tiny base; NaN makes a broken adapter that does)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, rows), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.full((rows, 4), fill, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def fake_lora() -> Callable[..., Path]:
    """fake_lora(path, arch, rows, fill=0.0) -> a small GGUF LoRA written at `path` (see _fake_lora)."""
    return _fake_lora


def _probe(client: httpx.Client) -> dict:
    """Greedy completion with echoed log-probabilities under the global set: every one finite, the distribution
    not flat (a 1e308 scale gave -7.6246 = -ln(vocab) for every token), and tokens out. Returns the choice."""
    reply = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 2,
                                                 "echo": True})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    values = [v for v in choice["logprobs"]["token_logprobs"] if v is not None]
    assert values and all(math.isfinite(v) for v in values), choice
    rows = [sorted(row.values()) for row in choice["logprobs"]["top_logprobs"] if row and len(row) > 1]
    assert any(row[-1] - row[0] > 1e-3 for row in rows), f"flat log-probabilities: {choice['logprobs']}"
    assert reply.json()["usage"]["completion_tokens"] >= 1 or choice["finish_reason"] == "stop", choice
    return choice


@pytest.fixture(scope="session")
def probe() -> Callable[[httpx.Client], dict]:
    """probe(client) -> the choice of a greedy completion checked to be sane (see _probe)."""
    return _probe


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
