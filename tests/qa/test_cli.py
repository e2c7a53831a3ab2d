"""`strata qa` from the command line: --dry-run sends nothing, --fail-under gates with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from strata.cli import main


def test_dry_run_prints_the_plan_and_sends_nothing(small_prompts, workspace):
    (workspace.peft / "level1").mkdir()
    (workspace.peft / "level1" / "adapter.gguf").write_bytes(b"x")
    # nothing listens on port 9: any request would fail, so success proves none was sent
    result = CliRunner().invoke(main, ["qa", "--server", "http://127.0.0.1:9", "--prompts", str(small_prompts),
                                       "--blend", "mix=level1:0.5", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 configuration(s) x 3 prompt(s)" in result.output
    assert "base: no adapters" in result.output and "layer level1: level1:1" in result.output
    assert "blend mix: level1:0.5" in result.output and "requests" in result.output
    assert not list(workspace.runs.iterdir())


def test_from_val_dry_run_counts_held_out_items(workspace):
    lines = [json.dumps({"heading": f"H{i}", "topic": "ASC_Leases", "text": f"text {i}"}) for i in range(5)]
    workspace.val_jsonl.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["qa", "--server", "http://127.0.0.1:9", "--from-val", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 configuration(s) x 2 prompt(s)" in result.output and "perplexity on 5 text(s)" in result.output


def test_usage_errors_are_clear(small_prompts):
    runner = CliRunner()
    both = runner.invoke(main, ["qa", "--server", "http://x", "--model", "m.gguf", "--dry-run"])
    assert both.exit_code == 1 and "either --server URL or --model" in both.output
    blend = runner.invoke(main, ["qa", "--server", "http://x", "--blend", "oops", "--dry-run"])
    assert blend.exit_code == 1 and "NAME=a:0.6,b:0.4" in blend.output
    gate = runner.invoke(main, ["qa", "--server", "http://x", "--fail-under", "f1@nobody=0.1", "--dry-run",
                                "--prompts", str(small_prompts)])
    assert gate.exit_code == 1 and "unknown layer(s) ['nobody']" in gate.output
    missing = runner.invoke(main, ["qa", "--model", "nowhere.gguf", "--layers", "x", "--prompts", str(small_prompts)])
    assert missing.exit_code == 1 and "nowhere.gguf not found" in missing.output


def test_fail_under_gates_a_real_run(base_gguf, lora_dirs, small_prompts, workspace):
    args = ["qa", "--model", str(base_gguf), "--layers", str(lora_dirs["alpha"]), "--prompts", str(small_prompts),
            "--max-tokens", "4", "--quiet"]
    failing = CliRunner().invoke(main, args + ["--fail-under", "rouge_l=1.01", "--fail-under", "f1=0"])
    assert failing.exit_code == 1, failing.output
    assert "QA gate failed" in failing.output and "rouge_l of layer alpha is" in failing.output
    assert "fails 1.01" in failing.output and "f1>=0" not in failing.output.split("QA gate failed")[1]
    passing = CliRunner().invoke(main, args + ["--fail-under", "f1=0", "--fail-under", "rouge_l@alpha=0"])
    assert passing.exit_code == 0, passing.output
    reports = sorted(workspace.runs.glob("qa-*"))
    assert len(reports) == 2 and all((r / "report.html").is_file() for r in reports)
    assert f"QA report: {Path(reports[-1]) / 'report.html'}" in passing.output


def test_qa_never_imports_the_build_stage_or_training_stack():
    import subprocess
    import sys

    code = ("import sys, strata.qa.harness, strata.qa.report, strata.qa.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft') "
            "or m.startswith(('strata.data', 'strata.train', 'strata.export', 'strata.pipeline'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
