"""PDF text with PyMuPDF: per-page quality stats, and clean sections (no running headers/footers/page numbers,
hyphenation fixed, paragraphs kept, headings from font size/bold spans and the PDF outline)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNREADABLE = re.compile("[\ufffd\ue000-\uf8ff]")  # replacement char + private-use glyphs with no Unicode mapping
PAGE_NUMBER = re.compile(r"^\s*(?:page\s*)?\d{1,5}(?:\s*(?:of|/)\s*\d+)?\s*$|^\s*[-\u2013]\s*\d+\s*[-\u2013]\s*$", re.I)
SENTENCE_END = re.compile(r"[.!?:;\"'\u201d)\]]$")
BOLD_FLAG = 16
MARGIN_BAND = 0.1  # top/bottom share of the page where running headers and footers live


@dataclass
class Line:
    text: str
    page: int  # 1-based
    y0: float
    y1: float
    x1: float
    size: float
    bold: bool
    band: bool  # inside the top/bottom margin band


@dataclass
class Paragraph:
    text: str
    pages: list[int]


@dataclass
class Section:
    heading: str
    paragraphs: list[Paragraph] = field(default_factory=list)


def page_stats(page: Any) -> dict[str, float | int]:
    """Text characters, unreadable share, alphanumeric and whitespace ratios, and image coverage of one page."""
    text = page.get_text("text")
    visible = [c for c in text if not c.isspace()]
    area = abs(page.rect) or 1.0
    covered = 0.0
    for info in page.get_image_info():
        covered += abs(page.rect & info["bbox"])
    return {
        "page": page.number + 1,
        "text_chars": len(visible),
        "unreadable_share": round(len(UNREADABLE.findall(text)) / max(1, len(visible)), 4),
        "alnum_ratio": round(sum(c.isalnum() for c in visible) / max(1, len(visible)), 4),
        "whitespace_ratio": round(sum(c.isspace() for c in text) / max(1, len(text)), 4),
        "image_coverage": round(min(1.0, covered / area), 4),
    }


def _lines(doc: Any) -> list[Line]:
    out = []
    for page in doc:
        height = page.rect.height or 1.0
        for block in page.get_text("dict", flags=0)["blocks"]:
            for raw in block.get("lines", []):
                spans = [s for s in raw["spans"] if s["text"].strip()]
                text = " ".join("".join(s["text"] for s in raw["spans"]).split())
                if not spans or not text:
                    continue
                size = max(s["size"] for s in spans)
                bold = all(s["flags"] & BOLD_FLAG or "bold" in s["font"].lower() for s in spans)
                y0, y1 = raw["bbox"][1], raw["bbox"][3]
                band = y1 < height * MARGIN_BAND or y0 > height * (1 - MARGIN_BAND)
                out.append(Line(text, page.number + 1, y0, y1, raw["bbox"][2], round(size, 1), bool(bold), band))
    return out


def _normalized(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower()).strip()


def drop_running_lines(lines: list[Line], n_pages: int, repeat_share: float = 0.5) -> list[Line]:
    """Remove page numbers anywhere, and margin-band lines repeated (digits ignored) on >= repeat_share of the pages."""
    pages_with: dict[str, set[int]] = {}
    for line in lines:
        if line.band:
            pages_with.setdefault(_normalized(line.text), set()).add(line.page)
    need = max(2, round(repeat_share * n_pages))
    running = {text for text, pages in pages_with.items() if len(pages) >= need}
    return [ln for ln in lines if not PAGE_NUMBER.match(ln.text) and not (ln.band and _normalized(ln.text) in running)]


def join_lines(lines: list[str], vocabulary: set[str]) -> str:
    """Join wrapped lines; a word split at a line-end hyphen is rejoined, keeping the hyphen only for compounds."""
    text = ""
    for line in lines:
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and line[:1].isalpha():
            head = re.search(r"[\w-]+-$", text).group(0)[:-1]
            tail = re.match(r"[\w-]+", line).group(0)
            soft = (head + tail).lower() in vocabulary and f"{head}-{tail}".lower() not in vocabulary
            text = (text[:-1] if soft else text) + line
        else:
            text = f"{text} {line}" if text else line
    return text.replace("\u00ad", "")


def _vocabulary(lines: list[Line]) -> set[str]:
    """Words that occur whole inside a line: evidence for whether a hyphen at a line end is soft."""
    return {w.lower() for ln in lines for w in re.findall(r"[\w-]+", ln.text[:-1] if ln.text.endswith("-") else ln.text)}


def _headings_from_outline(doc: Any) -> set[tuple[int, str]]:
    return {(page, " ".join(title.split()).lower()) for _, title, page, *_ in doc.get_toc(simple=True) if title.strip()}


def _is_heading(line: Line, body_size: float, outline: set[tuple[int, str]]) -> bool:
    if (line.page, line.text.lower()) in outline:
        return True
    short = len(line.text) <= 120 and not SENTENCE_END.search(line.text)
    return short and (line.size >= body_size * 1.15 or (line.bold and line.size >= body_size * 0.95))


def sections_from_pdf(path: Path, repeat_share: float = 0.5) -> list[Section]:
    """Clean text of a PDF as sections of paragraphs. Paragraph breaks come from vertical gaps between lines."""
    import pymupdf

    with pymupdf.open(path) as doc:
        lines = drop_running_lines(_lines(doc), doc.page_count, repeat_share)
        outline = _headings_from_outline(doc)
    if not lines:
        return []
    sizes = Counter()
    for ln in lines:
        sizes[ln.size] += len(ln.text)
    body_size = sizes.most_common(1)[0][0]
    steps = [b.y0 - a.y0 for a, b in zip(lines, lines[1:]) if a.page == b.page and a.size == b.size == body_size and b.y0 > a.y0]
    step = statistics.median(steps) if steps else body_size * 1.3
    right = statistics.quantiles([ln.x1 for ln in lines if ln.size == body_size], n=10)[-1] if len(lines) > 1 else 0.0
    vocabulary = _vocabulary(lines)
    sections: list[Section] = []
    current: list[Line] = []

    def flush() -> None:
        if current:
            if not sections:
                sections.append(Section(""))
            text = join_lines([c.text for c in current], vocabulary)
            sections[-1].paragraphs.append(Paragraph(text, sorted({c.page for c in current})))
            current.clear()

    last_heading: Line | None = None
    for line in lines:
        if _is_heading(line, body_size, outline):
            flush()
            wrapped = (last_heading is not None and last_heading.size == line.size and last_heading.page == line.page
                       and 0 < line.y0 - last_heading.y0 <= line.size * 1.6)
            if sections and not sections[-1].paragraphs and wrapped:
                sections[-1].heading += " " + line.text  # a heading wrapped onto a second line
            elif sections and not sections[-1].paragraphs:
                sections[-1].heading = line.text  # a title straight above a section heading: the section wins
            else:
                sections.append(Section(line.text))
            last_heading = line
            continue
        last_heading = None
        if current:
            prev = current[-1]
            if line.page != prev.page:
                # a paragraph runs on over the page break if its sentence, or its full-width last line, is cut there
                new_paragraph = bool(SENTENCE_END.search(prev.text)) and prev.x1 < 0.9 * right
            else:
                new_paragraph = (line.y0 - prev.y0) > step * 1.25 or line.y0 < prev.y0
            if new_paragraph:
                flush()
        current.append(line)
    flush()
    return [s for s in sections if s.paragraphs]
