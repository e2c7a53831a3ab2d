"""`strata qa --grounded` on the real engine and the kit corpus's evidence index: the base and a layer each answer
held-out questions with evidence (/gen/ask) and without (plain chat), scored by F1, citation accuracy and recall@k."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from strata.cli import main


def test_qa_grounded_scores_every_layer_with_and_without_evidence(evidence_ws, base_gguf, lora_dirs, tmp_path):
    from strata.qa.grounded import held_out

    workspace = tmp_path / "grounded"
    shutil.copytree(evidence_ws.workspace, workspace)
    result = CliRunner().invoke(main, [
        "qa", "--grounded", "--workspace", str(workspace), "--model", str(base_gguf), "--layers",
        str(lora_dirs["alpha"]), "--questions", "6", "--top-k", "3", "--max-tokens", "8", "--quiet"],
        env={"BASE_MODEL": evidence_ws.base_model, "N_THREADS": "2"})
    assert result.exit_code == 0, result.output
    report = Path(result.output.strip().splitlines()[-1].removeprefix("grounded QA: "))
    summary = json.loads(report.read_text())
    assert (report.parent / "report.md").read_text() in result.output  # the table printed is the one written
    assert [layer["name"] for layer in summary["layers"]] == ["base", "alpha"] and summary["questions"] == 6
    questions = {q.id: q for q in held_out(evidence_ws, 6)}
    for layer in summary["layers"]:
        assert len(layer["rows"]) == 6
        for row in layer["rows"]:
            assert row["id"] in questions and row["source_rank"] in (None, 1, 2, 3)
            assert 0.0 <= row["f1_grounded"] <= 1.0 and 0.0 <= row["f1_ungrounded"] <= 1.0
        ranks = [r["source_rank"] for r in layer["rows"]]
        assert layer["citation_accuracy"] == sum(r is not None for r in ranks) / 6
        assert layer["recall_at"]["1"] <= layer["recall_at"]["3"] == layer["citation_accuracy"]
    # retrieval does not depend on the adapters: both layers cite the same source chunks at the same ranks
    base, alpha = summary["layers"]
    assert [r["source_rank"] for r in base["rows"]] == [r["source_rank"] for r in alpha["rows"]]
    # the held-out question names its section's heading, so BM25 finds its chunk for most questions
    assert base["citation_accuracy"] >= 0.5, base["rows"]
    # and the two layers answer differently without evidence (alpha changes greedy output)
    assert [r["ungrounded"] for r in base["rows"]] != [r["ungrounded"] for r in alpha["rows"]]
