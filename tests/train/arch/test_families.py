"""The build stage across families: level 1 -> merge -> convert -> fidelity, and the level's adapter.gguf on the
served GGUF; each family either passes or stops early with llama.cpp's reason in one line, as this table expects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from strata.errors import StrataError
from strata.export.convert import convert_model
from strata.export.fidelity import gguf_logits, relative_error
from strata.export.merge import merge_levels

PROMPT = "A lessee recognises a right-of-use asset and a lease liability at the commencement date."
# family -> the modules level 1's `attention` role wraps on it
PASSES = {
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2-padded": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "llama-tied": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
# family -> what the one-line error must say (llama.cpp's own words where llama.cpp refuses), and whether it
# names a llama.cpp log file
STOPS = {
    "qwen2": (r"token ids up to 1024, but the model's embedding has 1024 rows.*transformers loads Qwen2Tokenizer", False),
    "qwen2-bpe": (r"\"BPE pre-tokenizer was not recognized - update get_vocab_base_pre\(\)\".*chkhsh [0-9a-f]{64}", True),
    "phi3-no-endoftext": (r"\"error loading model vocabulary: unordered_map::at\"", True),
    "opt": (r"\"Model OPTForCausalLM is not supported\"", True),
}


def _log_named(message: str) -> Path:
    found = re.search(r"Full log: (\S+)$", message)
    assert found, message
    return Path(found.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(PASSES))
def test_family_trains_converts_and_serves_what_it_trained(family, on_family, train1, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = on_family(family)
    (level1,) = train1(settings)
    summary = json.loads((level1 / "training_summary.json").read_text())
    wrapped = summary["target_modules"]
    assert wrapped["requested"] == ["attention"] and set(wrapped["wrapped"]) == set(PASSES[family])
    assert all(entry["layers"] == 2 for entry in wrapped["wrapped"].values())
    out = capsys.readouterr().out
    assert "pre-flight:" in out
    # Mistral's window lies inside the context and llama.cpp's llama arch has none: the user is told
    assert ("512-token sliding window" in out) == (family == "mistral"), out

    merge_levels(settings, [1], echo=lambda _: None)
    record = convert_model(settings, echo=lambda _: None)
    assert record["passed"] and record["relative_error"] < 1e-2 and record["top1_agreement"] >= 0.9
    assert record["hf_attention"] in ("sdpa", "eager")

    # level 1's adapter.gguf on the served models: it loads, moves the logits, and moves them as HF does
    tokens = AutoTokenizer.from_pretrained(settings.base_model)(PROMPT)["input_ids"]
    adapter = [(level1 / "adapter.gguf", 1.0)]
    f16 = Path(record["f16_gguf"])
    plain, with_adapter = gguf_logits(f16, tokens, n_threads=1), gguf_logits(f16, tokens, adapter, n_threads=1)
    merged = AutoModelForCausalLM.from_pretrained(settings.merged, dtype=torch.float32)
    with torch.no_grad():
        want = PeftModel.from_pretrained(merged, level1).eval()(torch.tensor([tokens])).logits[0].numpy()
    moved = relative_error(plain, with_adapter)
    assert moved > 1e-2, f"{family}: the adapter barely changes the logits ({moved:.1e})"
    assert relative_error(with_adapter, want) < moved / 5
    served = gguf_logits(settings.model_path, tokens, n_threads=1)
    assert relative_error(served, gguf_logits(settings.model_path, tokens, adapter, n_threads=1)) > 1e-2
    assert not np.isnan(served).any()


@pytest.mark.parametrize("family", sorted(STOPS))
def test_family_stops_before_training_with_one_line(family, on_family, train1):
    settings = on_family(family)
    needle, names_log = STOPS[family]
    with pytest.raises(StrataError) as info:
        train1(settings)
    message = str(info.value)
    assert "\n" not in message and re.search(needle, message), message
    if names_log:  # the quoted cause is llama.cpp's own line, kept whole in the log the message names
        assert re.search(r'"([^"]+)"', message).group(1) in _log_named(message).read_text()
    assert not (settings.peft / "level1").exists()


def test_chat_level_without_a_chat_template_stops_before_training(on_family, family_base, train1, tmp_path):
    import shutil

    from strata.settings import Settings

    bare = tmp_path / "llama-no-template"
    shutil.copytree(family_base("llama-tied"), bare)
    (bare / "chat_template.jinja").unlink()
    settings = Settings.resolve(workspace=on_family("llama-tied").workspace, base_model=str(bare), n_threads=1)
    with pytest.raises(StrataError, match=r"has no chat template, so level 1 cannot train on chat records \(format: chat\)"):
        train1(settings, overrides={"format": "chat"})
    assert not (settings.peft / "level1").exists()


def test_run_all_stops_on_the_base_before_pretest(on_family):
    from strata.pipeline import run_all

    settings = on_family("opt")
    with pytest.raises(StrataError, match="Model OPTForCausalLM is not supported"):
        run_all(settings, levels=(1,), progress=False, echo=lambda _: None)
    assert not settings.pretest_json.exists() and not list(settings.runs.glob("*/manifest.json"))


def test_gemma2_reference_uses_eager_attention_and_matches(on_family):
    settings = on_family("gemma2")
    record = convert_model(settings, hf_dir=Path(settings.base_model), echo=lambda _: None)
    assert record["hf_attention"] == "eager" and record["relative_error"] < 1e-2
    assert json.loads(Path(record["record_path"]).read_text())["hf_attention"] == "eager"


OLD = b"GGUF previous model bytes"


@pytest.mark.parametrize("family, needle", [
    ("gemma2-qscale", r"fidelity check failed: the F16 GGUF disagrees with the HF model \(eager attention\)"),
    ("qwen2-bpe", r"failed in llama.cpp's convert_hf_to_gguf.py: \"BPE pre-tokenizer was not recognized - update"),
    ("phi3-no-endoftext", r"llama.cpp could not load strata.F16.gguf: \"error loading model vocabulary: unordered_map"),
])
def test_refused_conversion_leaves_model_path_untouched(family, needle, on_family):
    settings = on_family(family)
    settings.model_path.write_bytes(OLD)
    with pytest.raises(StrataError) as info:
        convert_model(settings, hf_dir=Path(settings.base_model), echo=lambda _: None)
    message = str(info.value)
    assert re.search(needle, message) and "\n" not in message, message
    if "Full log" in message:
        assert _log_named(message).stat().st_size > 0
    assert settings.model_path.read_bytes() == OLD
    assert sorted(p.name for p in settings.models.iterdir() if p.name.startswith(".")) == []
