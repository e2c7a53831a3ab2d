"""`strata build all` for real on the kit PDFs and the tiny base: every stage once, then all skipped, then resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.cli import main as cli
from strata.errors import StrataError
from strata.pipeline import run_all

QUICK = {"max_steps": 1, "max_train_samples": 8, "lr": 5e-2}  # one big step: adapters visibly move logits
TOPICS = ("ASC_Leases", "ASC_Intangibles")


def _statuses(record):
    return {s["name"]: s["status"] for s in record["stages"]}


@pytest.fixture
def kit_workspace(on_tiny_base, sample_pdfs, tmp_path, monkeypatch):
    for topic in TOPICS:
        shutil.copytree(sample_pdfs / topic, on_tiny_base.raw_pdfs / topic)
    presets = tmp_path / "presets"  # a private copy, so the test can break the convert preset
    shutil.copytree(Path(__file__).resolve().parents[2] / "presets", presets)
    monkeypatch.setenv("STRATA_PRESETS", str(presets))
    return on_tiny_base, presets


def _topic_layer_serves_what_was_trained(settings, topic_dir: Path) -> None:
    """A topic layer trains on base + every level, i.e. the model convert wrote: its adapter.gguf applied on that
    model's F16 GGUF gives the HF merged + topic logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from strata.export.fidelity import gguf_logits, hf_reference, relative_error

    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(settings.merged, dtype=torch.float32),
                                   topic_dir).merge_and_unload()
    hf.save_pretrained(settings.workspace / "merged_plus_topic")
    tokens = AutoTokenizer.from_pretrained(settings.merged)("A lessee measures the lease liability.")["input_ids"]
    f16 = next(settings.models.glob("*.F16.gguf"))
    want = hf_reference(settings.workspace / "merged_plus_topic", tokens)[0]
    error = relative_error(gguf_logits(f16, tokens, lora=[(topic_dir / "adapter.gguf", 1.0)]), want)
    effect = relative_error(gguf_logits(f16, tokens), want)  # served model without the topic layer
    assert error < 1e-2 and effect > 3 * error, (error, effect)


def _console_reads_the_run(settings, record, browser) -> None:
    """The console's training page reads this real run: its row (samples, last loss) and each adapter's loss curve
    are what the manifest and the adapters' loss.jsonl files hold."""
    from strata.console import training

    row = next(r for r in training.runs(settings.runs)["runs"] if r["id"] == record["run_id"])
    assert row["samples"] > 0 and row["loss"] is not None and row["error"] is None
    curves = {c["name"]: c["points"] for c in training.loss_curve(row["adapters"])}
    assert set(curves) == {"level1", "level2", *TOPICS}  # the level and topic stages return their adapter dirs
    for name, points in curves.items():
        logged = [(r["step"], r["loss"]) for r in map(json.loads, (settings.peft / name / "loss.jsonl").read_text()
                                                       .splitlines()) if "loss" in r]
        assert points and [tuple(p) for p in points] == logged, name
    _training_page_plots_the_run(settings, row, browser)


def _training_page_plots_the_run(settings, row, browser) -> None:
    """In Chromium, the training page's runs table shows the run's sample count, and its log button draws the loss
    curves of the real run: the plot's first and last points are the first adapter's first logged loss and the
    last adapter's last one."""
    from playwright.sync_api import expect

    from strata.console.app import standalone
    from strata.console.training import loss_curve

    from ..console.conftest import app_in_thread

    curves = loss_curve(row["adapters"])
    first, last = curves[0]["points"][0][1], curves[-1]["points"][-1][1]
    context = browser.new_context()
    try:
        with app_in_thread(standalone(settings.workspace)) as url:
            page = context.new_page()
            page.goto(f"{url}/training")
            line = page.locator(f"tr[data-run='{row['id']}']")
            expect(line.locator("td").nth(3)).to_have_text(str(row["samples"]))
            page.get_by_role("button", name=f"Show the log of run {row['id']}").click()
            plot = page.locator("#loss-plot svg[role=img]")
            expect(plot).to_have_attribute("aria-label", f"loss from {first:.3f} to {last:.3f}")
            assert plot.locator("polyline").count() == len(curves)
    finally:
        context.close()


def test_train_all_runs_then_skips_then_resumes_from_a_failed_stage(kit_workspace, browser):
    settings, presets = kit_workspace
    lines: list[str] = []
    first = run_all(settings, levels=(1, 2), per_topic=True, train_overrides=QUICK, progress=False, echo=lines.append)
    names = ["pretest", "dataset", "index", "synthesize", "level1", "level2", "topics", "merge", "convert", "gate",
             "archive"]
    assert list(_statuses(first)) == names and set(_statuses(first).values()) == {"ok"}
    topics = next(s for s in first["stages"] if s["name"] == "topics")["result"]
    assert sorted(Path(t).name for t in topics) == sorted(TOPICS)  # --max-train-samples caps each topic
    for folder in ("level1", "level2", *(Path(t).name for t in topics)):
        assert (settings.peft / folder / "adapter.gguf").is_file(), folder
    assert settings.model_path.is_file() and (settings.merged / "tokenizer.model").is_file()
    from strata.kit.embedder import default_embedder  # the kit's MiniLM, if tests/kit made it this session

    index = next(s for s in first["stages"] if s["name"] == "index")["result"]
    assert index["mode"] == ("lexical+dense" if default_embedder() else "lexical")
    assert (settings.workspace / "index.sqlite").is_file()
    convert = next(s for s in first["stages"] if s["name"] == "convert")
    assert convert["result"]["passed"] and convert["result"]["relative_error"] < 1e-2
    assert convert["inputs"]["opt:quant"]["hash"] and convert["duration_s"] > 0
    assert not list(settings.raw_pdfs.rglob("*.pdf")) and list(settings.pdf_archive.rglob("*.pdf"))
    assert any("F16 vs HF" in line for line in lines)  # stage output printed as it goes
    gate = next(s for s in first["stages"] if s["name"] == "gate")["result"]
    assert set(gate["matrix"]) == {"base", *TOPICS} and set(gate["verdicts"]) == set(TOPICS)
    _topic_layer_serves_what_was_trained(settings, Path(topics[0]))
    _console_reads_the_run(settings, first, browser)

    again = CliRunner().invoke(cli, ["build", "train_all", "--levels", "1,2", "--max-steps", "1", "--lr", "5e-2",
                                     "--max-train-samples", "8", "--no-progress"])
    assert again.exit_code == 0, again.output
    second = json.loads(Path(again.output.strip().splitlines()[-1].removeprefix("manifest: ")).read_text())
    assert set(_statuses(second).values()) == {"skipped"} and len(second["stages"]) == len(names)

    model_bytes = settings.model_path.read_bytes()
    (presets / "convert.yaml").write_text("min_top1_agreement: 1.5\n")  # impossible: convert must fail
    with pytest.raises(StrataError, match="(?s)stage convert failed.*fidelity check failed"):
        run_all(settings, levels=(1, 2), train_overrides=QUICK, progress=False, echo=lambda _: None)
    assert settings.model_path.read_bytes() == model_bytes
    (presets / "convert.yaml").write_text("# defaults\n")
    third = run_all(settings, levels=(1, 2), train_overrides=QUICK, progress=False, echo=lambda _: None)
    statuses = _statuses(third)
    assert statuses.pop("convert") == "ok"
    assert set(statuses.values()) == {"skipped"}
