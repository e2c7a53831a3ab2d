"""pdf_pretest on the kit's real PDFs: verdicts and reasons for every good and bad file, preset thresholds."""

from __future__ import annotations

import json
import shutil

import pytest

from strata.data.pretest import run_pretest
from strata.errors import StrataError
from strata.kit.pdfs import BAD_KINDS, load_corpus

GOOD = sorted(load_corpus())
BAD = {  # kit file -> (verdict, words its reason must contain)
    "scanned.pdf": ("scanned", "needs OCR"),
    "encrypted.pdf": ("encrypted", "password"),
    "truncated.pdf": ("truncated", "truncated"),
    "empty.pdf": ("empty", "empty file"),
    "not_a_pdf.pdf": ("not_pdf", "not a PDF"),
    "duplicate.pdf": ("duplicate", "duplicate of ASC_Financial_Accounting/ASC_Financial_Accounting.pdf"),
}


def by_path(report):
    return {d["path"]: d for d in report["documents"]}


def test_every_file_gets_a_verdict_and_reason(pretested):
    report = json.loads(pretested.pretest_json.read_text())
    docs = by_path(report)
    assert set(BAD) == set(BAD_KINDS)
    assert set(docs) == {f"{t}/{t}.pdf" for t in GOOD} | {f"_bad/{n}" for n in BAD}
    for topic in GOOD:
        doc = docs[f"{topic}/{topic}.pdf"]
        assert doc["topic"] == topic and doc["recommended"] and doc["verdict"] == "ok", doc["reasons"]
        assert doc["score"] >= 0.9 and doc["reasons"] == [] and 3 <= doc["pages"] == len(doc["page_stats"])
        assert not doc["encrypted"] and not doc["corrupt"] and doc["duplicate_of"] is None
    for name, (verdict, words) in BAD.items():
        doc = docs[f"_bad/{name}"]
        assert doc["topic"] == "_bad" and not doc["recommended"] and doc["verdict"] == verdict
        assert any(words in reason for reason in doc["reasons"]), (name, doc["reasons"])
    assert docs["_bad/encrypted.pdf"]["encrypted"] and docs["_bad/encrypted.pdf"]["score"] == 0.0
    for name in ("truncated.pdf", "empty.pdf", "not_a_pdf.pdf"):
        assert docs[f"_bad/{name}"]["corrupt"] and docs[f"_bad/{name}"]["error"]
    assert docs["_bad/duplicate.pdf"]["duplicate_of"] == "ASC_Financial_Accounting/ASC_Financial_Accounting.pdf"
    assert docs["_bad/duplicate.pdf"]["sha256"] == docs["ASC_Financial_Accounting/ASC_Financial_Accounting.pdf"]["sha256"]


def test_page_stats_tell_text_from_scans(pretested):
    docs = by_path(json.loads(pretested.pretest_json.read_text()))
    good = docs["ASC_Leases/ASC_Leases.pdf"]["page_stats"]
    assert [s["page"] for s in good] == list(range(1, len(good) + 1))
    for stats in good:
        assert stats["text_chars"] > 500 and stats["image_coverage"] == 0.0 and stats["unreadable_share"] == 0.0
        assert 0.9 < stats["alnum_ratio"] <= 1.0 and 0.05 < stats["whitespace_ratio"] < 0.3
    (scan,) = docs["_bad/scanned.pdf"]["page_stats"]
    assert scan["text_chars"] == 0 and scan["image_coverage"] > 0.95 and scan["problem"] == "scanned"
    truncated = docs["_bad/truncated.pdf"]["page_stats"]
    assert any(s["text_chars"] == 0 for s in truncated) and docs["_bad/truncated.pdf"]["score"] < 1.0


def test_report_file_is_what_run_returns_and_thresholds_come_from_the_preset(workspace, sample_pdfs, tmp_path):
    shutil.copytree(sample_pdfs / "ASC_Leases", workspace.raw_pdfs / "ASC_Leases")
    shutil.copy(sample_pdfs / "ASC_Leases" / "ASC_Leases.pdf", workspace.raw_pdfs / "loose.pdf")
    report = run_pretest(workspace)
    assert json.loads(workspace.pretest_json.read_text()) == report
    assert report["thresholds"]["min_text_chars"] == 200
    assert by_path(report)["loose.pdf"]["topic"] == "general"  # settings.DEFAULT_TOPIC, as training uses
    assert by_path(report)["loose.pdf"]["duplicate_of"] == "ASC_Leases/ASC_Leases.pdf"

    strict = tmp_path / "strict.yaml"
    strict.write_text("min_text_chars: 100000\n")
    doc = by_path(run_pretest(workspace, str(strict)))["ASC_Leases/ASC_Leases.pdf"]
    assert not doc["recommended"] and doc["verdict"] == "low_quality" and "score" in doc["reasons"][0]


def test_no_pdfs_and_bad_presets_are_clear_errors(workspace, tmp_path):
    with pytest.raises(StrataError, match="no PDFs under .*strata kit sample-pdfs"):
        run_pretest(workspace)
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_txt_chars: 5\n")
    with pytest.raises(StrataError, match="min_txt_chars"):
        run_pretest(workspace, str(bad))
