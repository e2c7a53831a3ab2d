"""`pdf_pretest`: score every PDF under raw_pdfs (per-page stats, encrypted/corrupt/duplicate checks) into pdf_pretest.json."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from strata.data.datafiles import pdfs_by_topic
from strata.data.pdftext import page_stats
from strata.errors import StrataError
from strata.files import atomic_write_json, now_iso, sha256_file
from strata.presets import load_preset
from strata.settings import Settings


@dataclass(frozen=True)
class PretestPreset:
    """Thresholds for judging a PDF; presets/pretest.yaml holds the values in use."""

    min_text_chars: int = 200  # a page with fewer visible characters is "low text"
    max_unreadable_share: float = 0.02  # share of U+FFFD / unmapped glyphs above which a page is garbled
    min_alnum_ratio: float = 0.6  # letters+digits among visible characters
    max_whitespace_ratio: float = 0.5  # whitespace among all extracted characters
    scanned_image_coverage: float = 0.5  # a low-text page with at least this image cover is scanned
    max_bad_page_share: float = 0.34  # reject a document when more of its pages than this are bad
    min_score: float = 0.6  # reject a document scoring below this
    min_pages: int = 1


def _page_verdict(stats: dict[str, Any], t: PretestPreset) -> tuple[float, str | None]:
    """(score 0..1, problem or None) for one page's stats."""
    if stats["text_chars"] < t.min_text_chars and stats["image_coverage"] >= t.scanned_image_coverage:
        return 0.0, "scanned"
    if stats["text_chars"] == 0:
        return 0.0, "empty"
    parts = {
        "low text": min(1.0, stats["text_chars"] / t.min_text_chars),
        "garbled": max(0.0, 1.0 - stats["unreadable_share"] / t.max_unreadable_share / 2),
        "low alphanumeric": min(1.0, stats["alnum_ratio"] / t.min_alnum_ratio),
        "mostly whitespace": min(1.0, (1.0 - stats["whitespace_ratio"]) / (1.0 - t.max_whitespace_ratio)),
    }
    score = 1.0
    for value in parts.values():
        score *= value
    # a short page (a chapter end) only lowers the score; the other problems make the page bad
    problem = next((name for name, value in parts.items() if name != "low text" and value < (0.5 if name == "garbled" else 1.0)), None)
    return round(score, 4), problem


def _open_problem(data_head: bytes, data_tail: bytes, size: int) -> tuple[str, str] | None:
    """(kind, reason) when the file is not a PDF we can read at all, else None."""
    if size == 0:
        return "empty", "empty file (0 bytes): re-export or re-download it"
    if b"%PDF-" not in data_head:
        return "not_pdf", "not a PDF (no %PDF header): convert it to PDF or remove it"
    if b"%%EOF" not in data_tail:
        return "truncated", "truncated or corrupt: no %%EOF trailer (incomplete download/copy); get a complete copy"
    return None


def _text_hash(doc: Any) -> str | None:
    text = " ".join(" ".join(page.get_text("text").split()) for page in doc)
    return hashlib.sha256(text.encode()).hexdigest() if len(text) > 200 else None


def score_pdf(path: Path, thresholds: PretestPreset) -> dict[str, Any]:
    """One document's entry (without path/topic/duplicate fields); never raises on a bad file."""
    import pymupdf

    entry: dict[str, Any] = {"pages": 0, "encrypted": False, "corrupt": False, "error": None, "score": 0.0,
                             "recommended": False, "verdict": "corrupt", "reasons": [], "page_stats": [],
                             "text_sha256": None}
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(1024)
        handle.seek(max(0, size - 2048))
        tail = handle.read()
    problem = _open_problem(head, tail, size)
    if problem and problem[0] != "truncated":
        entry.update(corrupt=True, error=problem[1], reasons=[problem[1]], verdict=problem[0])
        return entry
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # any parser failure is a verdict, not a crash
        reason = f"corrupt: PyMuPDF cannot open it ({exc}); re-export the PDF"
        entry.update(corrupt=True, error=str(exc), reasons=[reason])
        return entry
    with doc:
        entry["pages"] = doc.page_count
        if doc.needs_pass:
            entry.update(encrypted=True, verdict="encrypted", reasons=["encrypted: needs a password; decrypt it (e.g. `qpdf --decrypt`) and add it again"])
            return entry
        if problem or doc.is_repaired:
            error = problem[1] if problem else "damaged: PyMuPDF had to repair its cross-reference table; re-export the PDF"
            entry.update(corrupt=True, error=error, reasons=[error], verdict=problem[0] if problem else "corrupt")
        try:
            entry["page_stats"] = [page_stats(page) for page in doc]
            entry["text_sha256"] = _text_hash(doc)
        except Exception as exc:
            entry.update(corrupt=True, error=str(exc), reasons=entry["reasons"] + [f"corrupt: text extraction failed ({exc})"])
            return entry
    _judge(entry, thresholds)
    return entry


def _judge(entry: dict[str, Any], t: PretestPreset) -> None:
    verdicts = [_page_verdict(stats, t) for stats in entry["page_stats"]]
    for stats, (score, problem) in zip(entry["page_stats"], verdicts):
        stats.update(score=score, problem=problem)
    n = len(verdicts)
    entry["score"] = round(sum(s for s, _ in verdicts) / n, 4) if n else 0.0
    bad = [(stats["page"], p) for stats, (_, p) in zip(entry["page_stats"], verdicts) if p]
    reasons = entry["reasons"]
    scanned = [page for page, p in bad if p == "scanned"]
    if scanned:
        reasons.append(f"scanned: {len(scanned)} of {n} pages are images with no text layer; needs OCR (e.g. `ocrmypdf`)")
    if n < t.min_pages:
        reasons.append(f"too short: {n} pages, need at least {t.min_pages}")
    elif len(bad) / n > t.max_bad_page_share and len(scanned) < len(bad):
        kinds = sorted({p for _, p in bad if p != "scanned"})
        reasons.append(f"{len(bad)} of {n} pages are bad ({', '.join(kinds)}; pages {', '.join(str(p) for p, _ in bad[:8])})")
    if entry["score"] < t.min_score and not reasons:
        reasons.append(f"low text quality: score {entry['score']:.2f} < {t.min_score}")
    entry["recommended"] = not reasons and not entry["corrupt"]
    if not entry["corrupt"]:
        entry["verdict"] = "ok" if entry["recommended"] else ("scanned" if scanned else "low_quality")


def _mark_duplicates(documents: list[dict[str, Any]]) -> None:
    """The first of identical files (by bytes, or by extracted text) stays; later ones point at it."""
    seen: dict[str, str] = {}
    for doc in documents:
        keys = [k for k in (doc["sha256"], doc.get("text_sha256")) if k]
        original = next((seen[k] for k in keys if k in seen), None)
        if original:
            doc.update(duplicate_of=original, recommended=False, verdict="duplicate")
            doc["reasons"].insert(0, f"duplicate of {original}")
        else:
            for k in keys:
                seen.setdefault(k, doc["path"])


def run_pretest(settings: Settings, preset: str = "pretest") -> dict[str, Any]:
    """Score every PDF under settings.raw_pdfs, write settings.pretest_json atomically, and return the report."""
    from tqdm import tqdm

    thresholds = load_preset(PretestPreset, preset)
    found = pdfs_by_topic(settings.raw_pdfs)
    if not found:
        raise StrataError(f"no PDFs under {settings.raw_pdfs}: put them in data/raw_pdfs/<topic>/ "
                          "(or run `strata kit sample-pdfs --with-bad`)")
    documents = []
    for topic, path in tqdm(found, desc="pretest", unit="pdf", disable=None):
        entry = {"path": path.relative_to(settings.raw_pdfs).as_posix(), "topic": topic,
                 "sha256": sha256_file(path), "duplicate_of": None}
        entry.update(score_pdf(path, thresholds))
        documents.append(entry)
    _mark_duplicates(documents)
    report = {"documents": documents, "thresholds": asdict(thresholds), "created": now_iso()}
    atomic_write_json(settings.pretest_json, report)
    return report

