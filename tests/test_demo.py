"""`strata demo` end to end on a shrunken tiny model: every stage runs for real and the QA report exists."""

from __future__ import annotations

from pathlib import Path

from strata.demo import DemoOptions, run_demo, stages_for

QUICK = DemoOptions(base_size="test", pretrain_steps=20, qa_max_tokens=8,
                    training={"max_steps": 4, "max_seq_len": 128, "batch_size": 4, "grad_accum": 1, "lr": 1e-3},
                    topic_training={"max_steps": 4})


def test_demo_runs_every_stage_and_leaves_pod_paths_alone(tmp_path, monkeypatch):
    pod_model = tmp_path / "pod" / "served.gguf"
    pod_model.parent.mkdir()
    pod_model.write_bytes(b"the pod's real model")
    monkeypatch.setenv("MODEL_PATH", str(pod_model))  # a demo must never overwrite what a pod serves
    monkeypatch.setenv("PDF_ARCHIVE_PATH", str(tmp_path / "pod" / "archive"))
    lines: list[str] = []
    rows = run_demo(tmp_path / "demo", echo=lines.append, options=QUICK)

    assert [name for name, _ in rows] == [stage.name for stage in stages_for(QUICK)]
    report = Path(rows[-1][1].removeprefix("QA report: ").split(" (")[0])
    assert report.is_file() and report.parent.parent == tmp_path / "demo" / "runs"
    assert "ASC_Leases" in report.read_text()  # a topic layer was compared
    assert "F16 vs HF rel err" in rows[2][1] and "embedder" not in " ".join(n for n, _ in rows)
    assert (tmp_path / "demo" / "models" / "strata.Q4_K_M.gguf").is_file()
    assert pod_model.read_bytes() == b"the pod's real model"
    assert not (tmp_path / "pod" / "archive").exists()
    assert any(line.startswith("[5/5]") for line in lines)
    assert "citations from" in rows[3][1] and "ASC_Leases/ASC_Leases.pdf" in rows[3][1], rows[3]
    assert any("ASC_Leases/ASC_Leases.pdf p." in line for line in lines)  # strata ask printed its citations
    assert any("general ppl / ppl|q / drift" in line for line in lines)  # the gate's per-topic matrix was printed


def test_the_real_demo_keeps_its_own_rates():
    """`strata demo --real` trains SmolLM2 at its presets' 2e-4: the tiny base's 2e-3 topic rate and 100 steps (which a
    4M-parameter model needs to learn its pairs) would wreck a real model and cost an hour on 2 cores."""
    from strata.demo import options_for

    real, tiny = options_for("real"), options_for("tiny")
    assert real.base == "real" and real.training["lr"] == 2e-4 and "lr" not in real.topic_training
    assert real.topic_training["max_steps"] == 40
    assert tiny.base == "tiny" and tiny.topic_training["lr"] == 2e-3 and tiny.topic_training["min_steps"] == 100
