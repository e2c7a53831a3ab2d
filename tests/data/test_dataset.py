"""build_dataset on the kit's real PDFs with the tiny base's tokenizer: budget, cleaning, headings, dedup, split."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from strata.data.chunking import dedup
from strata.data.dataset import build_dataset
from strata.data.pdftext import join_lines, sections_from_pdf
from strata.errors import StrataError
from strata.kit.pdfs import HEADER_PREFIX, load_corpus
from strata.settings import Settings

CORPUS = load_corpus()


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def train(built):
    return records(built.train_jsonl)


@pytest.fixture(scope="module")
def val(built):
    return records(built.val_jsonl)


def test_clean_sections_reproduce_the_source_text(sample_pdfs):
    """Headers, footers and page numbers gone; line-end hyphens rejoined; paragraphs and headings as written."""
    for topic, doc in CORPUS.items():
        sections = sections_from_pdf(sample_pdfs / topic / f"{topic}.pdf")
        assert [(s.heading, [p.text for p in s.paragraphs]) for s in sections] == \
            [(h, body.split("\n\n")) for h, body in doc.sections]


def test_soft_hyphens_are_dropped_and_compound_hyphens_kept():
    vocabulary = {"recognizes", "asset", "based"}
    lines = ["The lessee recog-", "nizes an asset-", "based measure."]
    assert join_lines(lines, vocabulary) == "The lessee recognizes an asset-based measure."


def test_records_have_both_forms_and_stay_within_the_token_budget(built, train, val, tokenizer):
    preset = json.loads((built.processed / "dataset_summary.json").read_text())["preset"]
    assert (preset["target_tokens"], preset["overlap_tokens"], preset["max_tokens"]) == (256, 32, 320)
    everything = train + val
    assert len({r["id"] for r in everything}) == len(everything) > 20
    for r in everything:
        n = len(tokenizer(r["text"], add_special_tokens=False)["input_ids"])
        assert r["n_tokens"] == n <= preset["max_tokens"]
        assert r["topic"] in CORPUS and r["source"] == f"{r['topic']}/{r['topic']}.pdf"
        assert r["pages"] and all(isinstance(p, int) and p >= 1 for p in r["pages"])
        assert r["messages"] == [{"role": "user", "content": f"Explain {r['heading']} ({r['topic']})."},
                                 {"role": "assistant", "content": r["text"]}]


def test_chunks_are_clean_and_never_straddle_sections(train, val):
    texts = " ".join(r["text"] for r in train + val)
    assert HEADER_PREFIX.strip(" |") not in texts and not re.search(r"Page \d+ of \d+", texts)
    for word in ("asset-based", "long-lived", "Sales-based"):
        assert word in texts
    assert not re.search(r"\w- \w", texts)
    assert any("\n\n" in r["text"] for r in train), "paragraph breaks kept inside chunks"
    for r in train + val:
        bodies = dict(CORPUS[r["topic"]].sections)
        assert r["text"] in bodies[r["heading"]], (r["heading"], r["text"][:80])


def test_val_is_held_out_by_section_and_covers_every_topic(built, train, val):
    sections = lambda rs: {(r["source"], r["heading"]) for r in rs}  # noqa: E731
    assert val and sections(train).isdisjoint(sections(val))
    assert {r["topic"] for r in val} == {r["topic"] for r in train} == set(CORPUS)
    summary = json.loads((built.processed / "dataset_summary.json").read_text())
    for topic in CORPUS:
        for split, rs in (("train", train), ("val", val)):
            mine = [r for r in rs if r["topic"] == topic]
            assert summary["counts"][topic][split] == len(mine)
            assert summary["tokens"][topic][split] == sum(r["n_tokens"] for r in mine)


def test_duplicate_and_rejected_pdfs_add_no_chunks(built, train, val):
    summary = json.loads((built.processed / "dataset_summary.json").read_text())
    assert sorted(s["path"] for s in summary["sources"]) == sorted(f"{t}/{t}.pdf" for t in CORPUS)
    assert not any(r["source"].startswith("_bad/") for r in train + val)
    assert summary["dropped_duplicates"] == {"exact": 0, "near": 0}


def test_injected_exact_and_near_duplicate_chunks_are_dropped(train):
    texts = [r["text"] for r in train[:12]]
    words = texts[3].split()
    words[len(words) // 2] = "notably"
    near = " ".join(words)
    exact = "  " + texts[5].upper().replace(" ", "   ")
    keep, dropped = dedup(texts + [near, exact])
    assert keep == list(range(len(texts))) and dropped == {"exact": 1, "near": 1}


def test_rebuild_is_deterministic_and_small_presets_overlap(built, tiny_base, workspace, tmp_path, tokenizer):
    for name in ("pdf_pretest.json",):
        shutil.copy(built.processed / name, workspace.processed / name)
    shutil.copytree(built.raw_pdfs, workspace.raw_pdfs, dirs_exist_ok=True)
    build_dataset(workspace, tokenizer_dir=tiny_base)
    assert workspace.train_jsonl.read_bytes() == built.train_jsonl.read_bytes()
    assert workspace.val_jsonl.read_bytes() == built.val_jsonl.read_bytes()

    small = tmp_path / "small.yaml"
    small.write_text("target_tokens: 128\noverlap_tokens: 24\nmax_tokens: 144\nformats: [chat]\n")
    build_dataset(workspace, str(small), tokenizer_dir=tiny_base)
    rs = records(workspace.train_jsonl) + records(workspace.val_jsonl)
    assert all("text" not in r and r["n_tokens"] <= 144 for r in rs)
    bodies = [r["messages"][1]["content"] for r in rs]
    assert all(len(tokenizer(b, add_special_tokens=False)["input_ids"]) <= 144 for b in bodies)
    pairs = [(a, b) for a, b in zip(rs, rs[1:]) if (a["source"], a["heading"]) == (b["source"], b["heading"])]
    head = lambda r: " ".join(r["messages"][1]["content"].split()[:3])  # noqa: E731
    overlapping = [b for a, b in pairs if head(b) in a["messages"][1]["content"]]
    assert len(overlapping) >= 0.9 * len(pairs) > 0


def test_missing_inputs_are_clear_errors(workspace, pretested, tmp_path):
    with pytest.raises(StrataError, match="run `strata build pdf-pretest` first"):
        build_dataset(workspace)
    shutil.copy(pretested.pretest_json, workspace.pretest_json)
    shutil.copytree(pretested.raw_pdfs, workspace.raw_pdfs, dirs_exist_ok=True)
    with pytest.raises(StrataError, match="BASE_MODEL.*strata kit tiny-base"):
        build_dataset(workspace, tokenizer_dir=tmp_path / "no-model")


def test_a_hub_id_base_placed_under_models_gives_the_tokenizer_offline(workspace, built, tiny_base, monkeypatch):
    """BASE_MODEL=org/name with the model placed at models/<name> (as the error tells users to do offline): the
    dataset measures chunks with that folder's tokenizer, as training loads the base, instead of asking the hub."""
    shutil.copy(built.pretest_json, workspace.pretest_json)
    shutil.copytree(built.raw_pdfs, workspace.raw_pdfs, dirs_exist_ok=True)
    shutil.copytree(tiny_base, workspace.models / "tiny-llama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = Settings.resolve(workspace=workspace.workspace, base_model="kit/tiny-llama")
    summary = build_dataset(settings)
    assert sum(n["train"] for n in summary["counts"].values()) > 0
    assert workspace.train_jsonl.read_text() == built.train_jsonl.read_text()  # the same tokenizer: tiny_base's
