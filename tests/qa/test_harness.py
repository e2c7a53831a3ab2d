"""A real QA run: in-process server on the tiny GGUF, two real LoRA layers, a blend and a broken layer."""

from __future__ import annotations

import json
import math
from pathlib import Path


def by_layer(results: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in results["layers"]}


def outputs(results: dict, layer: str) -> dict[str, str]:
    return {r["prompt_id"]: r["output"] for r in results["rows"] if r["layer"] == layer}


def test_visits_base_each_layer_and_the_blend(qa_run, lora_dirs):
    layers = by_layer(qa_run)
    assert list(layers) == ["base", "alpha", "beta", "broken", "mix"]
    assert [layers[n]["kind"] for n in layers] == ["base", "layer", "layer", "layer", "blend"]
    for name in ("base", "alpha", "beta", "mix"):
        assert layers[name]["status"] == "ok"
        assert sorted(outputs(qa_run, name)) == ["empty", "lease", "revenue"]
    # the server's own /lora-adapters state after each switch: exactly the planned active set
    active = {n: {(Path(a["path"]).name, a["scale"]) for a in layers[n]["server_state"] if a["active"]}
              for n in ("base", "alpha", "beta", "mix")}
    assert active == {"base": set(), "alpha": {("alpha", 1.0)}, "beta": {("beta", 1.0)},
                      "mix": {("alpha", 0.6), ("beta", 0.4)}}


def test_outputs_differ_where_the_adapters_differ(qa_run):
    base, alpha, beta, mix = (outputs(qa_run, n) for n in ("base", "alpha", "beta", "mix"))
    assert any(alpha[p] != base[p] for p in base)
    assert any(beta[p] != base[p] for p in base)
    assert any(alpha[p] != beta[p] for p in base)
    assert any(mix[p] not in (alpha[p], beta[p]) for p in base)


def test_rows_carry_latency_and_reference_metrics(qa_run):
    for row in qa_run["rows"]:
        assert row["error"] is None and row["output"] is not None
        assert row["latency_s"] > 0 and (row["completion_tokens"] > 0) == bool(row["output"])
        if row["prompt_id"] == "empty":
            assert row["metrics"] is None  # no reference, no reference metrics
        else:
            assert set(row["metrics"]) == {"exact_match", "f1", "rouge_l", "bleu"}
            assert all(0.0 <= row["metrics"][k] <= 1.0 for k in ("exact_match", "f1", "rouge_l"))
    assert all(r["ttft_s"] is not None and r["ttft_s"] <= r["latency_s"] for r in qa_run["rows"] if r["output"])


def test_perplexity_is_finite_and_differs_between_layers(qa_run):
    layers = by_layer(qa_run)
    values = {n: layers[n]["summary"]["perplexity"] for n in ("base", "alpha", "beta", "mix")}
    assert all(v is not None and math.isfinite(v) and v > 1.0 for v in values.values()), values
    assert len({round(v, 6) for v in values.values()}) == 4, values


def test_broken_layer_is_reported_and_the_run_goes_on(qa_run):
    broken = by_layer(qa_run)["broken"]
    assert broken["status"] == "failed" and broken["error"]
    assert not [r for r in qa_run["rows"] if r["layer"] == "broken"]
    report = Path(qa_run["report_dir"])
    assert "FAILED" in (report / "report.md").read_text() and "broken" in (report / "report.html").read_text()


def test_report_files_contain_every_layer_and_plots(qa_run):
    report = Path(qa_run["report_dir"])
    assert report.parent.name == "runs" and report.name.startswith("qa-")
    saved = json.loads((report / "results.json").read_text())
    assert saved["report_dir"] == str(report) and len(saved["rows"]) == len(qa_run["rows"])
    md, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    for name in ("base", "alpha", "beta", "broken", "mix"):
        assert f"| {name} |" in md and f"<td class=\"\">{name}</td>" in page
    assert "```diff" in md and "--- base" in md  # a unified diff against the base
    assert "## Token F1 by topic" in md and "ASC_Leases" in md
    for plot in ("quality.png", "latency.png", "perplexity.png", "topics.png"):
        path = report / "plots" / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{plot}" in page
    assert not list(report.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_gates_are_recorded(qa_run):
    gates = {g["spec"]: g for g in qa_run["gates"]}
    assert gates["f1>=0"]["passed"] and gates["f1>=0"]["layer"] in ("alpha", "beta", "mix")
    failed = gates["bleu@alpha>=1000"]
    assert not failed["passed"] and "bleu of layer alpha" in failed["message"] and "fails 1000" in failed["message"]
