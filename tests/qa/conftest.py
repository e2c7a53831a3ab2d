"""QA fixtures: a small prompt set and one shared real QA run (in-process server on the tiny GGUF, two real
LoRA layers, a blend and a broken layer), so the expensive part runs once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.settings import Settings

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
