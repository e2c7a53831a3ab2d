"""QA fixtures: one shared real QA run (in-process server on the tiny GGUF, two real
LoRA layers, a blend and a broken layer), so the expensive part runs once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.settings import Settings


@pytest.fixture(scope="session")
def broken_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter dir whose adapter.gguf is not a GGUF at all."""
    folder = tmp_path_factory.mktemp("broken") / "broken"
    folder.mkdir()
    (folder / "adapter.gguf").write_bytes(b"this is not a gguf file")
    return folder


@pytest.fixture(scope="session")
def qa_run(base_gguf: Path, lora_dirs: dict[str, Path], broken_layer: Path, small_prompts: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The results of one real QA run: base, alpha, beta, broken and blend mix=alpha:0.6,beta:0.4."""
    from strata.qa.harness import run_qa

    settings = Settings.resolve(workspace=tmp_path_factory.mktemp("qa_ws"), n_threads=2, n_ctx=1024)
    settings.ensure_skeleton()
    return run_qa(settings, model=base_gguf, layers=[lora_dirs["alpha"], lora_dirs["beta"], broken_layer],
                  blends=["mix=alpha:0.6,beta:0.4"], prompts=small_prompts, max_tokens=12,
                  fail_under=["f1=0", "bleu@alpha=1000"], progress=False, echo=lambda line: None)
