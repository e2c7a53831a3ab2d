"""Question/answer synthesis on the kit's real PDFs: extractive pairs cite real pages, filters reject with reasons,
the llm generator runs on the real engine with constrained JSON, survives bad replies, and resumes after a kill."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pymupdf
import pytest

from strata.data import synthesis as syn
from strata.data.extractive import UNANSWERABLE, Draft
from strata.data.teacher import parse_reply
from strata.errors import StrataError
from strata.files import read_jsonl
from strata.settings import Settings

pytestmark = pytest.mark.timeout(2400)  # llm tests serve a GGUF and ask it per chunk: slow on a shared box


def _copy(built: Settings, root: Path) -> Settings:
    settings = Settings.resolve(workspace=root, base_model=built.base_model, env={})
    settings.ensure_skeleton()
    for name in ("train.jsonl", "val.jsonl", "dataset_summary.json"):
        shutil.copy(built.processed / name, settings.processed / name)
    shutil.copytree(built.raw_pdfs, settings.raw_pdfs, dirs_exist_ok=True)
    return settings


def _norm(text: str) -> str:
    """Letters and digits only: PDF line breaks, hyphenation and spacing do not matter."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _preset(tmp_path: Path, **values) -> str:
    import yaml

    path = tmp_path / "synthesis.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_extractive_pairs_cite_real_pages_of_real_pdfs(built, tmp_path):
    settings = _copy(built, tmp_path / "ws")
    summary = syn.synthesize(settings, generator="extractive", progress=False)
    train, val = read_jsonl(settings.pairs_train_jsonl, ""), read_jsonl(settings.pairs_val_jsonl, "")
    chunks = {c["id"]: c for c in syn.chunks_of(settings)}
    assert summary["pairs"] == len(train) + len(val) and summary["generator"] == "extractive"
    assert set(summary["per_type"]) >= {"definition", "summary", "rule", "scenario", "list", "unanswerable"}
    for pair in train + val:
        assert set(pair) >= {"question", "answer", "type", "chunk_id", "topic", "section", "source", "pages"}
        chunk = chunks[pair["chunk_id"]]
        assert (pair["topic"], pair["section"], pair["source"]) == (chunk["topic"], chunk["heading"], chunk["source"])
        assert pair["pages"] and set(pair["pages"]) <= set(chunk["pages"])
        if pair["type"] == "unanswerable":
            assert pair["answer"] == UNANSWERABLE
            continue
        with pymupdf.open(settings.raw_pdfs / pair["source"]) as doc:  # the answer is on the pages it cites
            cited = _norm(" ".join(doc[p - 1].get_text() for p in pair["pages"]))
        answer = _norm(pair["answer"])  # its start and its end (a sentence may run over a page break and footer)
        assert answer[:24] in cited and answer[-24:] in cited, pair
    questions = [p["question"] for p in train + val]
    assert len(questions) == len(set(questions))
    # held out: pairs, not sections; every section of the dataset still trains
    sections = {(c["source"], c["heading"]) for c in chunks.values()}
    assert {(p["source"], p["section"]) for p in train} == sections
    assert {p["topic"] for p in val} == {c["topic"] for c in chunks.values()}
    assert sum(n["val"] for n in summary["per_topic"].values()) == len(val)
    on_disk = json.loads(settings.synthesis_summary.read_text())
    assert on_disk["per_topic"] == summary["per_topic"] and on_disk["rejected"] == summary["rejected"]


def test_filters_reject_with_a_reason(built, tmp_path):
    settings = _copy(built, tmp_path / "ws")
    chunk = syn.chunks_of(settings)[0]
    preset = syn.SynthesisPreset()
    sentence = chunk["text"].split(". ")[0] + "."
    rejected: Counter = Counter()
    drafts = [Draft("What is the lease payment schedule for a spaceship?", "Spaceships orbit Jupiter on Tuesdays "
                    "and pay rent in moon rocks.", "definition"),  # not in the chunk
              Draft("What does this passage say first?", sentence, "summary"),
              Draft("What, then, does this passage say first?", sentence, "summary"),  # near-duplicate question
              Draft("What is said briefly here?", "Yes.", "definition"),
              Draft("What is the topic here?", "x " * 200, "list"),
              Draft("Why?", sentence, "summary"),
              Draft("What income tax rate applies to spaceships?", "Twelve percent.", "unanswerable")]
    kept = syn.select(chunk, drafts, [], preset, rejected, "test")
    assert [p["type"] for p in kept] == ["summary", "unanswerable"]
    assert kept[1]["answer"] == UNANSWERABLE  # an unanswerable question is answered "the document does not say"
    assert rejected == {"unsupported_answer": 1, "duplicate_question": 1, "answer_too_short": 1,
                        "answer_too_long": 1, "question_too_short": 1}
    # the support threshold decides either way: a half-supported answer passes just below its support, fails above
    half = Draft("What does the passage and the moon say?", " ".join(sentence.split()[:6]) +
                 " moon rocks orbit quietly tonight forever", "summary")
    words = syn.content_words(half.answer)
    support = sum(w in set(syn.content_words(chunk["text"])) for w in words) / len(words)
    assert syn.check_draft(half, chunk, syn.SynthesisPreset(min_support=support - 0.05)) is None
    assert syn.check_draft(half, chunk, syn.SynthesisPreset(min_support=support + 0.05)) == "unsupported_answer"


@pytest.mark.parametrize("content, reason", [(None, "teacher_empty_reply"), ("   ", "teacher_empty_reply"),
                                             ('{"pairs": [{"question": "What', "teacher_malformed_json"),
                                             ('["a list"]', "teacher_wrong_shape"),
                                             ('{"pairs": [], "paraphrase": ""}', "teacher_no_pairs")])
def test_bad_teacher_replies_become_reasons(content, reason):
    assert parse_reply(content) == ([], "", reason)


def test_llm_generator_on_the_real_engine(built, base_gguf, tmp_path):
    """The in-process teacher (strata's engine on the base GGUF) answers schema-constrained JSON: every reply parses;
    replies cut short by a tiny max_tokens are dropped with a reason (no crash) and asked again on the next run."""
    settings = _copy(built, tmp_path / "ws")
    teacher = syn.Teacher(gguf=str(base_gguf))
    with pytest.raises(StrataError, match="teacher_malformed_json"):  # every reply truncated: nothing kept, a reason
        syn.synthesize(settings, preset=_preset(tmp_path, teacher_max_tokens=6, teacher_pairs=2), generator="llm",
                       teacher=teacher, limit=3, progress=False)
    assert not list((settings.processed / "synthesis_cache").glob("*.json"))  # failures are not cached
    good = _preset(tmp_path, teacher_max_tokens=900, teacher_pairs=2, min_support=0.0, min_answer_words=1,
                   min_question_words=1)
    summary = syn.synthesize(settings, preset=good, generator="llm", teacher=teacher, limit=3, progress=False)
    assert summary["requests"]["requested"] == 3 and summary["requests"]["cached"] == 0
    cached = [json.loads(p.read_text()) for p in (settings.processed / "synthesis_cache").glob("*.json")]
    assert len(cached) == 3 and all(c["reason"] is None for c in cached)
    for record in cached:  # the grammar held: each raw reply is JSON of the schema's shape
        reply = json.loads(record["content"])
        assert set(reply) == {"pairs", "paraphrase"} and 1 <= len(reply["pairs"]) <= 2
    pairs = read_jsonl(settings.pairs_train_jsonl, "") + read_jsonl(settings.pairs_val_jsonl, "")
    chunk_ids = {c["id"] for c in syn.chunks_of(settings)[:3]}
    assert pairs and all(p["generator"] == "llm" and p["chunk_id"] in chunk_ids and p["pages"] for p in pairs)
    assert summary["teacher"]["gguf"] == str(base_gguf) and summary["pairs_per_s"] > 0
    assert settings.paraphrases_jsonl.is_file() or summary["paraphrases"] == 0


def test_killed_llm_synthesis_resumes_without_duplicates(built, base_gguf, tmp_path):
    settings = _copy(built, tmp_path / "ws")
    preset = _preset(tmp_path, teacher_max_tokens=900, teacher_pairs=2, min_support=0.0, min_answer_words=1,
                     min_question_words=1, teacher_concurrency=2)
    cache = settings.processed / "synthesis_cache"
    argv = [sys.executable, "-m", "strata", "build", "synthesize", "--generator", "llm", "--teacher-model",
            str(base_gguf), "--preset", preset, "--limit", "8", "--workspace", str(settings.workspace)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while len(list(cache.glob("*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-run: some replies cached, the rest in flight
    finally:
        proc.wait()
    before = len(list(cache.glob("*.json")))
    assert 2 <= before < 8, f"kill landed after {before} of 8 replies; stderr: {proc.stderr.read()[-500:]!r}"
    assert not settings.pairs_train_jsonl.exists()  # nothing half-written where training reads
    summary = syn.synthesize(settings, preset=preset, generator="llm", teacher=syn.Teacher(gguf=str(base_gguf)),
                             limit=8, progress=False)
    assert summary["requests"]["cached"] == before and summary["requests"]["requested"] == 8 - before
    pairs = read_jsonl(settings.pairs_train_jsonl, "") + read_jsonl(settings.pairs_val_jsonl, "")
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert len({(p["chunk_id"], p["question"]) for p in pairs}) == len(pairs)
    assert len(list(cache.glob("*.json"))) == 8


def test_synthesize_is_a_train_all_stage_skipped_when_unchanged(built, tmp_path):
    from strata.pipeline import Options, default_stages, run_stages

    settings = _copy(built, tmp_path / "ws")
    stages = [s for s in default_stages(Options()) if s.name in ("pretest", "dataset", "synthesize")]
    options = Options()
    first = run_stages(settings, stages, options, echo=lambda _: None)
    assert [s["status"] for s in first["stages"]] == ["ok", "ok", "ok"]
    assert first["stages"][2]["result"]["generator"] == "extractive" and settings.pairs_val_jsonl.is_file()
    again = run_stages(settings, stages, options, echo=lambda _: None)
    assert [s["status"] for s in again["stages"]] == ["skipped", "skipped", "skipped"]
    changed = Options(train=options.train, synthesis={"generator": "extractive", "teacher_url": None})
    third = run_stages(settings, stages, changed, echo=lambda _: None)  # a synthesis option changed: it reruns
    assert [s["status"] for s in third["stages"]] == ["skipped", "skipped", "ok"]


def test_cli_data_prep_alias_writes_pairs(built, tmp_path):
    from click.testing import CliRunner

    from strata.cli import main as cli

    settings = _copy(built, tmp_path / "ws")
    result = CliRunner().invoke(cli, ["build", "data_prep", "--generator", "extractive", "--workspace",
                                      str(settings.workspace)])
    assert result.exit_code == 0, result.output
    assert "held-out pairs" in result.output and "rejected:" in result.output
    assert read_jsonl(settings.pairs_train_jsonl, "") and settings.synthesis_summary.is_file()
    missing = CliRunner().invoke(cli, ["build", "synthesize", "--workspace", str(tmp_path / "empty")])
    assert missing.exit_code != 0 and "strata build dataset" in missing.output
