"""Report rendering on a hand-made results dict: best marks, diffs against the base, unprintable output."""

from __future__ import annotations

import json

from strata.qa.report import render_markdown, write_report


def results() -> dict:
    def layer(name, kind, f1, ppl):
        summary = {"exact_match": 0.0, "f1": f1, "rouge_l": f1, "bleu": 10 * f1, "perplexity": ppl, "ttft_s": 0.1,
                   "latency_s": 0.5, "tokens_per_s": 20.0, "prompts": 1, "errors": 0}
        return {"name": name, "kind": kind, "adapters": [], "status": "ok", "error": None, "summary": summary}

    def row(name, output, f1):
        return {"layer": name, "prompt_id": "q", "output": output, "error": None,
                "metrics": {"exact_match": 0.0, "f1": f1, "rouge_l": f1, "bleu": 0.0}}

    return {
        "target": {"server": "http://x"}, "generation": {"temperature": 0.0, "seed": 0, "max_tokens": 8},
        "prompt_set": {"name": "t", "source": "t.yaml", "count": 1}, "perplexity_source": "t", "perplexity_texts": 1,
        "layers": [layer("base", "base", 0.1, 50.0), layer("lvl", "layer", 0.4, 20.0),
                   {"name": "bad", "kind": "layer", "adapters": [], "status": "failed", "error": "404: gone",
                    "summary": {}}],
        "prompts": [{"id": "q", "prompt": "Q?", "reference": "lease liability", "topic": "ASC_Leases", "tags": []}],
        "rows": [row("base", "the asset", 0.1), row("lvl", "the lease\x00 liability", 0.4)],
        "topics": {"f1": {"base": {"ASC_Leases": 0.1}, "lvl": {"ASC_Leases": 0.4}}}, "gates": [],
    }


def test_markdown_marks_best_diffs_and_escapes_control_characters():
    md = render_markdown(results())
    summary = next(line for line in md.splitlines() if line.startswith("| lvl | layer"))
    assert "| **0.4** |" in summary and "| **20** |" in summary  # best F1 and lowest perplexity
    assert "| 0 |" in summary  # EM ties at 0 for everyone: nothing marked
    assert "| bad | layer | FAILED: 404: gone |" in md
    assert "-the asset\n+the lease\\x00 liability" in md and "\x00" not in md
    assert "| lvl | **0.4** |" in md  # topic table: lvl wins ASC_Leases


def test_write_report_is_atomic_and_complete(tmp_path):
    folder = write_report(results(), tmp_path / "runs")
    assert sorted(p.name for p in folder.iterdir()) == ["plots", "report.html", "report.md", "results.json"]
    assert json.loads((folder / "results.json").read_text())["report_dir"] == str(folder)
    assert write_report(results(), tmp_path / "runs") != folder  # a second run in the same second gets its own
    assert not list((tmp_path / "runs").glob(".*"))
