"""The three data steps through the CLI, in order, by their seed-003 aliases."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from strata.cli import main


def test_seed_aliases_run_in_order(workspace, sample_pdfs, tiny_base):
    shutil.copytree(sample_pdfs, workspace.raw_pdfs, dirs_exist_ok=True)
    runner = CliRunner()
    ws = ["--workspace", str(workspace.workspace)]

    result = runner.invoke(main, ["build", "pdf_pretest", *ws])
    assert result.exit_code == 0, result.output
    assert "4 of 10 PDFs recommended" in result.output and "scanned" in result.output and "encrypted" in result.output

    result = runner.invoke(main, ["build", "pdf_pretest", "--json", *ws])
    assert result.exit_code == 0 and len(json.loads(result.output)["documents"]) == 10

    result = runner.invoke(main, ["build", "build_dataset", *ws])
    assert result.exit_code == 1 and "BASE_MODEL" in result.output and "strata kit tiny-base" in result.output

    result = runner.invoke(main, ["build", "build_dataset", "--base-model", str(tiny_base), *ws])
    assert result.exit_code == 0, result.output
    train = workspace.train_jsonl.read_text().splitlines()
    assert train and "ASC_Leases" in result.output and workspace.val_jsonl.read_text()

    result = runner.invoke(main, ["build", "archive_pdfs", *ws])
    assert result.exit_code == 0, result.output
    assert "moved 4 PDFs" in result.output
    assert sorted(p.parent.name for p in workspace.pdf_archive.rglob("*.pdf")) == sorted(
        p.name for p in sample_pdfs.iterdir() if p.name != "_bad")
    assert len(list(workspace.raw_pdfs.rglob("*.pdf"))) == 6


def test_help_explains_every_option():
    for command in ("pdf-pretest", "dataset", "archive"):
        result = CliRunner().invoke(main, ["build", command, "--help"])
        assert result.exit_code == 0 and "--workspace" in result.output
    assert "--base-model" in CliRunner().invoke(main, ["build", "dataset", "--help"]).output
