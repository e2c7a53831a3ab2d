"""Shared fixtures: an isolated workspace per test, a small QA prompt set, and session-built real inputs (PDFs,
tiny base, GGUF)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from strata.settings import Settings


# what `python -m strata.llamacpp` (make install) puts in the shared cache once per llama-cpp-python version and
# that no test changes: linked into each session's cache instead of fetched again
SHARED_CACHE_PARTS = ("llama.cpp-*", "sdist", "wheels", "llama-server-*")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh STRATA_CACHE per test session, so nothing cached by one run (the base pre-flight's convert-and-load
    verdicts, say) decides the next; llama.cpp's converter scripts, the sdist and the wheels are linked in from the
    shared cache (~/.cache/strata or $STRATA_CACHE), where the install extracted them."""
    from strata.llamacpp import cache_root

    shared = cache_root()
    cache = tmp_path_factory.mktemp("strata-cache")
    for pattern in SHARED_CACHE_PARTS:
        for part in shared.glob(pattern):
            (cache / part.name).symlink_to(part, target_is_directory=part.is_dir())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRATA_CACHE", str(cache))
        yield cache


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point WORKSPACE (and every derived default) at a fresh temp dir; clear env that would leak in."""
    for name in ("BASE_MODEL", "MODEL_PATH", "MODEL_NAME", "PDF_ARCHIVE_PATH", "N_CTX", "N_THREADS", "API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKSPACE", str(tmp_path / "ws"))
    settings = Settings.resolve()
    settings.ensure_skeleton()
    return settings


SMALL_SET = """\
name: small
prompts:
  - id: lease
    topic: ASC_Leases
    prompt: When does a contract contain a lease?
    reference: A contract contains a lease when it conveys the right to control the use of an identified asset.
  - id: revenue
    topic: ASC_Revenue_Recognition
    tags: [definition]
    prompt: What is a performance obligation?
    reference: A performance obligation is a promise to transfer a distinct good or service.
  - id: empty
    tags: [edge]
    prompt: ""
"""


@pytest.fixture(scope="session")
def small_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "small.yaml"
    path.write_text(SMALL_SET)
    return path


@pytest.fixture(scope="session")
def sample_pdfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit's corpus as real PDFs, plus every bad kind under _bad/ (read-only use: copy before mutating)."""
    from strata.kit.pdfs import write_sample_pdfs

    dest = tmp_path_factory.mktemp("sample_pdfs")
    write_sample_pdfs(dest, with_bad=True)
    return dest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama HF model (2 layers, hidden 256) with a short pre-training on the kit corpus."""
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("tiny_base") / "hf", corpus_texts(), SPECS["test"],
                          pretrain_steps=60, seed=0)


@pytest.fixture
def on_tiny_base(workspace: Settings, tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The per-test workspace with BASE_MODEL pointing at the session's tiny base."""
    monkeypatch.setenv("BASE_MODEL", str(tiny_base))
    return Settings.resolve()


@pytest.fixture(scope="session")
def base_gguf(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base converted to an F16 GGUF by llama.cpp's own converter."""
    from strata.llamacpp import convert_hf

    return convert_hf(tiny_base, tmp_path_factory.mktemp("gguf") / "base-f16.gguf", "f16")


@pytest.fixture(scope="session")
def lora_dirs(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real PEFT LoRA adapters on the tiny base (random non-zero weights, different targets), each dir
    holding the PEFT files and `adapter.gguf` made by llama.cpp's convert_lora_to_gguf.py: the build-stage layout."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from strata.llamacpp import convert_lora

    root = tmp_path_factory.mktemp("loras")
    specs = {"alpha": (["q_proj", "v_proj"], 1), "beta": (["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"], 2)}
    out = {}
    for name, (targets, seed) in specs.items():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False))
        with torch.no_grad():  # scale B up so each adapter clearly changes greedy outputs (x40 overflowed
            # llama.cpp's F16 path: GGUF-vs-merged error jumped from 1e-3 to 9e-2)
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.mul_(10.0)
        folder = root / name
        peft_model.save_pretrained(folder)
        convert_lora(folder, tiny_base, folder / "adapter.gguf")
        out[name] = folder
    return out


SOFT_QUESTIONS = ["What is a lease?", "When is revenue recognized?", "What is an intangible asset?",
                  "Define a performance obligation.", "How is a lease liability measured?", "What is goodwill?",
                  "What is a contract?", "When does control transfer?", "What is amortization?",
                  "What is a right-of-use asset?", "What is the transaction price?", "What is impairment?"]
SOFT_ANSWERS = {"lessee": "The lessee recognises a right-of-use asset.",
                "revenue": "Revenue is recognised when control transfers."}


@pytest.fixture(scope="session")
def soft_prompts(tiny_base: Path, base_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two soft prompts (8 virtual tokens each) trained for real by `strata.train.softprompt` on the tiny base, from
    prompt+response rows that always answer one sentence; each dir is what `strata build train --soft-prompt`
    writes, under <ws>/soft_prompts/ (the dir's parent's parent is the workspace)."""
    import json

    from strata.train.softprompt import train_soft_prompt

    root = tmp_path_factory.mktemp("soft")
    settings = Settings.resolve(workspace=str(root / "ws"), base_model=str(tiny_base), n_threads=2, env={})
    out = {}
    for name, answer in SOFT_ANSWERS.items():
        rows = root / f"{name}.jsonl"
        rows.write_text("".join(json.dumps({"prompt": q, "response": answer}) + "\n" for q in SOFT_QUESTIONS))
        out[name] = train_soft_prompt(settings, name, train_files=[rows], gguf=base_gguf, progress=False,
                                      overrides={"n_virtual_tokens": 8, "epochs": 5.0, "lr": 0.01,
                                                 "init_text": answer})
    return out


CHROMIUM = os.environ.get("STRATA_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (no browser download): `make install` installs both."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (as root it runs `apt-get install -y chromium`) or "
                    "set STRATA_CHROMIUM to a Chromium binary.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()
