"""Arena in Chromium on the real engine: 6 blind votes (names shown only after each), kept across a reload in
console.sqlite (WAL), a per-topic leaderboard with intervals and counts, and an export TRL's DPOTrainer trains on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

VOTES = [("A", "leases"), ("B", "leases"), ("A", "revenue"), ("tie", "revenue"), ("B", "leases"), ("bad", "revenue")]
BUTTONS = {"A": "A is better", "B": "B is better", "tie": "Tie", "bad": "Both bad"}


def test_arena_six_votes_reload_leaderboard_and_dpo_export(page, served, console_root: Path, tiny_base: Path,
                                                             tmp_path: Path):
    page.goto(f"{served}/arena")
    page.get_by_label("alpha", exact=True).wait_for()
    page.get_by_label("max_tokens").fill("24")
    page.get_by_label("temperature").fill("0.9")
    for number, (vote, topic) in enumerate(VOTES, 1):
        page.get_by_label("Prompt").fill(f"Question {number}: when is revenue recognized?")
        page.get_by_label("Topic").fill(topic)
        page.get_by_role("button", name="Get two answers").click()
        page.get_by_text("Vote: the names are shown after.").wait_for(timeout=120_000)
        assert page.locator("#name-a").inner_text() == "" and page.locator("#name-b").inner_text() == ""
        page.get_by_role("button", name=BUTTONS[vote]).click()
        page.get_by_text(f"Vote recorded: {vote}.").wait_for()
        assert page.locator("#name-a").inner_text().startswith("(")
        assert page.get_by_role("button", name="Tie").is_disabled()
    page.reload()
    page.locator("#vote-count").filter(has_text="6").wait_for()
    captions = page.locator("#board caption").all_inner_texts()
    assert captions == ["all topics", "leases", "revenue"]
    all_topics = page.locator("#board table").first
    votes = [int(v) for v in all_topics.locator("tbody tr td:nth-child(5)").all_inner_texts()]
    assert sum(votes) == 12  # every vote counts for both contenders
    interval = all_topics.locator("tbody tr td:nth-child(4)").first.inner_text()
    low, high = (float(x) for x in interval.split(" – "))
    assert low <= float(all_topics.locator("tbody tr td:nth-child(3)").first.inner_text()) <= high

    db = sqlite3.connect(console_root / "console.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM matches WHERE vote IS NOT NULL").fetchone()[0] >= 6
    db.close()

    exported = page.request.get(f"{served}/api/console/arena/export")
    assert exported.ok
    rows = [json.loads(line) for line in exported.text().splitlines()]
    assert len(rows) >= 4 and all({"prompt", "chosen", "rejected", "topic"} <= set(r) for r in rows)
    path = tmp_path / "prefs.jsonl"
    path.write_text(exported.text())
    _dpo_trains_on(path, tiny_base, tmp_path)


def _dpo_trains_on(path: Path, tiny_base: Path, tmp_path: Path) -> None:
    """TRL's own data path: load_dataset("json") -> DPOTrainer (which tokenizes it) -> one real optimizer step."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=str(path), split="train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     max_length=128, save_strategy="no", logging_steps=1, use_cpu=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(dataset)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    loss = trainer.train().training_loss
    assert loss == pytest.approx(loss) and 0 < loss < 10  # finite (NaN != NaN) and sane
