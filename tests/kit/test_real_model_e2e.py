"""The real base end to end, once: fetch, rebuild, one short LoRA level, merge + convert (fidelity checked), serve
the result with the adapter hot-loaded, one answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

# ~4 CPU-minutes on 2 idle cores; the timeout leaves room for a machine shared by several test runs
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.timeout(2400)]

SHORT = {"max_steps": 2, "max_seq_len": 128, "batch_size": 2, "grad_accum": 1, "lr": 2e-4, "eval_batches": 1}


def test_real_base_trains_converts_serves_and_answers(workspace, real_cache: Path, real_hf: Path) -> None:
    from strata.cli import main
    from strata.kit.pdfs import write_sample_pdfs
    from strata.pipeline import run_all
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    result = CliRunner().invoke(main, ["kit", "real-base"])  # default DEST: BASE_MODEL in the workspace
    assert result.exit_code == 0, result.output
    assert (Path(workspace.base_model) / "strata_kit.json").is_file()
    write_sample_pdfs(workspace.raw_pdfs)
    record = run_all(workspace, per_topic=False, levels=(1,), quant="Q4_K_M", train_overrides=SHORT, progress=False,
                     echo=lambda _: None)
    convert = next(s for s in record["stages"] if s["name"] == "convert")["result"]
    assert convert["passed"] and convert["top1_agreement"] >= 0.9 and convert["relative_error"] < 1e-2
    assert "dequantized from SmolLM2-135M-Instruct.Q4_1.gguf" in convert["hf_reference"]
    assert convert["perplexity"]["Q4_K_M"] < 40  # real language, not the tiny model's ~70
    adapter = workspace.peft / "level1" / "adapter.gguf"
    assert adapter.is_file()

    config = ServeConfig(model=workspace.model_path, n_ctx=512, n_threads=2, n_batch=128,
                         adapter_roots=[str(workspace.peft)], workspace=workspace.workspace, seed=0)
    question = {"messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                "max_tokens": 24, "temperature": 0}
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=300) as client:
        base = client.post("/v1/chat/completions", json=question)
        assert base.status_code == 200, base.text
        assert "Paris" in base.json()["choices"][0]["message"]["content"]
        loaded = client.post("/lora-adapters", json={"adapters": [{"path": str(workspace.peft / "level1"), "scale": 1.0}]})
        assert loaded.status_code == 200, loaded.text
        layered = client.post("/v1/chat/completions", json=question)
        assert layered.status_code == 200, layered.text
        assert layered.json()["choices"][0]["message"]["content"].strip()
