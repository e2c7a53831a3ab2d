"""Fuzz fixtures: the budget profiles, a real server with a start-up adapter, hostile files on disk, the tally."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from strata.serve.config import ServeConfig
from strata.serve.server import serve_in_thread

# The budget: `make test` runs "ci" (fixed seed, a small number of requests); `make fuzz` runs "fuzz".
# STRATA_FUZZ_PROFILE picks one; STRATA_FUZZ_EXAMPLES overrides the request count of either.
PROFILES = {"ci": dict(max_examples=120, derandomize=True, database=None),
            "fuzz": dict(max_examples=1500)}
PROFILE = os.environ.get("STRATA_FUZZ_PROFILE", "ci")
if PROFILE not in PROFILES:
    raise pytest.UsageError(f"STRATA_FUZZ_PROFILE={PROFILE!r}: choose one of {sorted(PROFILES)}")
for _name, _values in PROFILES.items():
    settings.register_profile(f"strata-{_name}", deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], **_values)
START_SCALE = 0.5  # the fuzz server starts with alpha at this scale, so there is a non-empty state to protect
MAX_LOADED = 2  # --max-loaded-adapters: alpha (global) plus one more; a request needing two more gets 429
N_CTX = 128  # small: bounds the work of a request that asks for "as many tokens as fit"


@pytest.fixture(scope="session")
def fuzz_budget() -> settings:
    """The chosen profile's settings (a decorator for @given tests); STRATA_FUZZ_EXAMPLES overrides the count."""
    chosen = settings.get_profile(f"strata-{PROFILE}")
    examples = os.environ.get("STRATA_FUZZ_EXAMPLES")
    return settings(chosen, max_examples=int(examples)) if examples else chosen


@dataclass
class Tally:
    """What the fuzz run did, for the summary line and the README's reliability notes."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    rejected_state_changes: list[str] = field(default_factory=list)
    accepted_changes: int = 0
    probes: int = 0

    def line(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"fuzz ({PROFILE}): {self.requests} generated requests ({codes}); "
                f"{len(self.server_errors)} x 5xx; {len(self.rejected_state_changes)} state changes from rejected "
                f"requests; {self.accepted_changes} state changes from accepted ones; {self.probes} greedy "
                "probes after accepted requests, all finite and not flat")


TALLY = pytest.StashKey[Tally]()


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Tally:
    found = Tally()
    request.config.stash[TALLY] = found
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if TALLY in config.stash:
        terminalreporter.write_line(config.stash[TALLY].line())


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory, lora_dirs: dict[str, Path], base_gguf: Path,
                  fake_lora: Callable[..., Path]) -> dict[str, Path]:
    """Adapter paths a hostile client would try, under an allowed root unless the name says otherwise."""
    import random

    root = tmp_path_factory.mktemp("fuzz_root")
    outside = tmp_path_factory.mktemp("fuzz_outside")
    rng = random.Random(17)
    files: dict[str, Path] = {}

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir()
        files[name] = path
        return path

    (folder("random_bytes") / "adapter.gguf").write_bytes(rng.randbytes(4096))
    (folder("gguf_magic_then_junk") / "adapter.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + rng.randbytes(4096))
    (folder("empty_file") / "adapter.gguf").write_bytes(b"")
    shutil.copy(base_gguf, folder("model_as_adapter") / "adapter.gguf")
    fake_lora(folder("nan_weights") / "adapter.gguf", "llama", 256, fill=float("nan"))  # fits the base, but broken
    fake_lora(folder("inf_weights") / "adapter.gguf", "llama", 256, fill=float("inf"))
    shutil.copytree(lora_dirs["alpha"], root / "peft_only", ignore=shutil.ignore_patterns("*.gguf"))
    files["peft_only"] = root / "peft_only"
    folder("empty_dir")
    two = folder("two_ggufs")
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(lora_dirs["alpha"] / "adapter.gguf", two / name)
    (folder("gguf_is_a_dir") / "adapter.gguf").mkdir()
    os.mkfifo(folder("fifo") / "adapter.gguf")
    shutil.copytree(lora_dirs["beta"], outside / "beta_copy")
    files["outside"] = outside / "beta_copy"
    (root / "link_out").symlink_to(outside / "beta_copy")
    files["link_out"] = root / "link_out"
    (root / "link_in").symlink_to(lora_dirs["alpha"])  # allowed: an alias of alpha
    files["link_in"] = root / "link_in"
    shutil.copytree(lora_dirs["beta"], root / "beta_twin")  # a third loadable file: past --max-loaded-adapters 2
    files["beta_twin"] = root / "beta_twin"
    (root / "loop").symlink_to(root / "loop")
    files["loop"] = root / "loop"
    files["root"] = root
    return files


@pytest.fixture(scope="module")
def fuzz_config(config_for: Callable[..., ServeConfig], lora_root: Path, lora_dirs: dict[str, Path],
                hostile_files: dict[str, Path]) -> ServeConfig:
    return config_for(n_ctx=N_CTX, adapter_roots=[str(lora_root), str(hostile_files["root"])],
                      loras=[(str(lora_dirs["alpha"]), START_SCALE)], max_loaded_adapters=MAX_LOADED)


@pytest.fixture(scope="module")
def fuzz_server(fuzz_config: ServeConfig) -> Iterator[str]:
    """A real server on the tiny GGUF for this module only (its adapter state is the thing under test)."""
    with serve_in_thread(fuzz_config) as url:
        yield url
