"""`strata build convert`: F16 GGUF matches HF, quantized GGUF promoted atomically only after the fidelity checks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.cli import main as cli
from strata.errors import StrataError
from strata.export.convert import convert_model
from strata.export.quantize import quantize_gguf

OLD = b"GGUF previous model bytes"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_record_has_fidelity_numbers_and_f16_matches_hf(converted):
    settings, record, lines = converted
    assert record["relative_error"] < 1e-2 and record["top1_agreement"] >= 0.9
    assert record["perplexity"]["F16"] > 1 and record["perplexity"]["Q4_K_M"] > 1
    assert 0.5 < record["perplexity_ratio"] < 2
    assert record["chat_template"] is True and record["passed"] is True and record["sample"]["tokens"] > 10
    on_disk = json.loads(Path(record["record_path"]).read_text())
    assert on_disk["relative_error"] == record["relative_error"]
    assert Path(record["record_path"]).parent == settings.model_path.parent
    assert Path(record["f16_gguf"]) == settings.models / "strata.F16.gguf"
    assert any("relative error" in line for line in lines) and any("perplexity" in line for line in lines)
    assert _leftovers(settings.models) == []


def test_q4_k_m_at_model_path_loads_and_generates(converted):
    import llama_cpp
    from gguf import GGUFReader

    settings, record, _ = converted
    assert Path(record["model_path"]) == settings.model_path and settings.model_path.name == "strata.Q4_K_M.gguf"
    types = {t.tensor_type.name for t in GGUFReader(settings.model_path).tensors}
    assert "Q4_K" in types
    llm = llama_cpp.Llama(model_path=str(settings.model_path), n_ctx=128, n_threads=2, verbose=False)
    try:
        out = llm("A lessee classifies each lease", max_tokens=8, temperature=0)
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] > 0 and out["choices"][0]["text"]


def test_q8_0_via_cli_alias(on_tiny_base, tiny_base):
    result = CliRunner().invoke(cli, ["build", "convert_to_gguf", "--hf", str(tiny_base), "--quant", "q8_0",
                                      "--out", str(on_tiny_base.models / "tiny.Q8_0.gguf")])
    assert result.exit_code == 0, result.output
    from gguf import GGUFReader

    out = on_tiny_base.models / "tiny.Q8_0.gguf"
    assert "Q8_0" in {t.tensor_type.name for t in GGUFReader(out).tensors}
    assert json.loads((on_tiny_base.models / "tiny.Q8_0.fidelity.json").read_text())["quant"] == "Q8_0"
    assert (on_tiny_base.models / "tiny.F16.gguf").is_file()


def test_unknown_quant_lists_valid_names(on_tiny_base, tiny_base):
    with pytest.raises(StrataError, match="unknown quantization type 'Q9_X'.*Q4_K_M.*Q8_0"):
        convert_model(on_tiny_base, tiny_base, "Q9_X")
    result = CliRunner().invoke(cli, ["build", "convert", "--hf", str(tiny_base), "--quant", "Q9_X"])
    assert result.exit_code == 1 and "Q5_K_M" in result.output


def test_missing_merged_dir_says_merge_first(on_tiny_base):
    with pytest.raises(StrataError, match="strata build merge"):
        convert_model(on_tiny_base)


def _kill_quantizer(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL this process's `python -m strata.export.quantize` child as soon as it shows up."""
    me = str(os.getpid())
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me and b"strata.export.quantize" in cmd:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        time.sleep(0.005)


def test_killed_quantization_leaves_model_path_untouched(on_tiny_base, tiny_base):
    on_tiny_base.model_path.write_bytes(OLD)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_quantizer, args=(stop, killed), daemon=True)
    watcher.start()
    try:
        with pytest.raises(StrataError, match="killed by signal 9.*left as it was"):
            convert_model(on_tiny_base, tiny_base, "Q4_K_M", echo=lambda _: None)
    finally:
        stop.set()
        watcher.join()
    assert killed
    assert on_tiny_base.model_path.read_bytes() == OLD
    assert _leftovers(on_tiny_base.models) == []
    assert not (on_tiny_base.models / "strata.Q4_K_M.fidelity.json").exists()


def test_quantization_failing_midway_leaves_target_and_no_temp(converted, tmp_path):
    settings, record, _ = converted
    target = tmp_path / "model.gguf"
    target.write_bytes(OLD)
    # IQ2_XXS needs an importance matrix: llama.cpp starts writing, then fails on the first such tensor.
    with pytest.raises(StrataError, match="importance matrix"):
        quantize_gguf(Path(record["f16_gguf"]), target, "IQ2_XXS")
    assert target.read_bytes() == OLD and _leftovers(tmp_path) == []


def test_forced_low_threshold_fails_without_promoting(on_tiny_base, tiny_base, tmp_path):
    on_tiny_base.model_path.write_bytes(OLD)
    strict = tmp_path / "strict.yaml"
    strict.write_text("max_relative_error: 1.0e-12\n")
    with pytest.raises(StrataError, match=r"fidelity check failed.*relative error .*NOT promoted"):
        convert_model(on_tiny_base, tiny_base, preset=strict, echo=lambda _: None)
    assert on_tiny_base.model_path.read_bytes() == OLD
    assert _leftovers(on_tiny_base.models) == []


def test_missing_chat_template_fails_clearly(on_tiny_base, tiny_base, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_base, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(StrataError, match=r"\(tokenizer.chat_template\) has no chat template"):
        convert_model(on_tiny_base, bare, echo=lambda _: None)
    assert not on_tiny_base.model_path.exists()
