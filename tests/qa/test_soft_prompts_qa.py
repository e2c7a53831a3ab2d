"""`strata qa --soft-prompts`: every soft prompt under WORKSPACE/soft_prompts/ becomes a layer on the base, sent per
request, with its own replies and perplexity (a real QA run on the tiny GGUF with the session's soft prompts)."""

from __future__ import annotations

import math

import pytest

from strata.settings import Settings

pytestmark = pytest.mark.slow


def test_qa_compares_every_soft_prompt(base_gguf, soft_prompts, small_prompts):
    from strata.qa.harness import run_qa

    settings = Settings.resolve(workspace=str(soft_prompts["lessee"].parent.parent), n_threads=2, n_ctx=1024, env={})
    results = run_qa(settings, model=base_gguf, layers=[], soft_prompts=None, prompts=small_prompts, max_tokens=8,
                     progress=False, echo=lambda line: None)
    layers = {layer["name"]: layer for layer in results["layers"]}
    assert list(layers) == ["base", "soft:lessee", "soft:revenue"]
    assert layers["soft:lessee"]["kind"] == "soft_prompt" and layers["soft:lessee"]["status"] == "ok"
    outputs = {name: [r["output"] for r in results["rows"] if r["layer"] == name] for name in layers}
    assert outputs["soft:lessee"] != outputs["base"] and outputs["soft:revenue"] != outputs["base"]
    ppl = {name: layer["perplexity"] for name, layer in layers.items()}
    assert all(math.isfinite(v) for v in ppl.values()) and len(set(ppl.values())) == 3, ppl
