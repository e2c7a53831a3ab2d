"""Sample corpus of accounting-standard PDFs, good and deliberately broken, for demos and tests."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pymupdf

from strata.kit.texts import CORPUS_DIR

BAD_TOPIC = "_bad"
ENCRYPTED_PASSWORD = "strata-user"
HEADER_PREFIX = "Strata Sample Corpus | "
BAD_KINDS: dict[str, str] = {
    "scanned.pdf": "image-only page (rendered text pasted as a picture): no extractable text",
    "encrypted.pdf": f"AES-256 encrypted; unreadable without user password {ENCRYPTED_PASSWORD!r}",
    "truncated.pdf": "a valid PDF cut to 40% of its bytes: no xref, outline or later pages",
    "empty.pdf": "zero-byte file",
    "not_a_pdf.pdf": "plain text with a .pdf extension, no PDF structure at all",
    "duplicate.pdf": "byte-identical copy of a good topic PDF",
}

PAGE = pymupdf.paper_rect("letter")
MARGIN, TOP, BOTTOM = 72.0, 72.0, PAGE.height - 72.0
REGULAR, BOLD = "helv", "hebo"
# kind -> (font, size, space before)
STYLES: dict[str, tuple[str, float, float]] = {
    "title": (BOLD, 16.0, 0.0),
    "heading": (BOLD, 13.0, 12.0),
    "body": (REGULAR, 11.0, 6.0),
}
LEADING = 1.3
GRAY = (0.35, 0.35, 0.35)


@dataclass(frozen=True)
class Document:
    """One corpus topic: body paragraphs in each section are separated by blank lines."""

    topic: str
    title: str
    sections: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Line:
    text: str
    kind: str
    baseline: float


def _parse(path: Path) -> Document:
    text = path.read_text(encoding="utf-8")
    blocks = [" ".join(b.split()) for b in text.split("\n\n") if b.strip()]
    if not blocks or not blocks[0].startswith("# "):
        raise ValueError(f"{path.name}: must start with a '# Title' line")
    sections: list[tuple[str, list[str]]] = []
    for block in blocks[1:]:
        if block.startswith("## "):
            sections.append((block[3:], []))
        elif sections and not block.startswith("#"):
            sections[-1][1].append(block)
        else:
            raise ValueError(f"{path.name}: unexpected block {block[:40]!r}")
    return Document(path.stem, blocks[0][2:], tuple((h, "\n\n".join(ps)) for h, ps in sections))


def load_corpus() -> dict[str, Document]:
    """Topic (file stem) -> parsed Markdown document, in file-name order."""
    return {p.stem: _parse(p) for p in sorted(CORPUS_DIR.glob("*.md"))}


@functools.cache
def _width(text: str, font: str, size: float) -> float:
    return pymupdf.get_text_length(text, font, size)


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Greedy word wrap that may also break right after a hyphen inside a compound word."""
    lines, line, used = [], "", 0.0
    for word in text.split():
        for i, piece in enumerate(re.split(r"(?<=-)(?=[A-Za-z])", word)):
            glue = " " if line and not i else ""
            extra = _width(glue + piece, font, size)
            if line and used + extra > width:
                lines.append(line)
                line, used = piece, _width(piece, font, size)
            else:
                line, used = line + glue + piece, used + extra
    return lines + [line] if line else lines


def _layout(doc: Document) -> tuple[list[list[_Line]], list[tuple[int, str, int]]]:
    """Flow title, headings and paragraphs onto pages; return the pages and a set_toc() list."""
    blocks = [("title", doc.title)] + [
        (kind, text)
        for heading, body in doc.sections
        for kind, text in [("heading", heading)] + [("body", p) for p in body.split("\n\n")]
    ]
    pages: list[list[_Line]] = [[]]
    toc: list[tuple[int, str, int]] = []
    y = TOP
    for kind, text in blocks:
        font, size, before = STYLES[kind]
        step = size * LEADING
        lines = _wrap(text, font, size, PAGE.width - 2 * MARGIN)
        y += before if pages[-1] else 0
        # keep a heading with what follows it, and never strand one paragraph line at a page foot
        keep = (len(lines) + 2) * step if kind != "body" else min(len(lines), 2) * step
        if pages[-1] and y + keep > BOTTOM:
            pages.append([])
            y = TOP
        if kind != "body":
            toc.append((1 if kind == "title" else 2, text, len(pages)))
        for line in lines:
            if y + step > BOTTOM:
                pages.append([])
                y = TOP
            pages[-1].append(_Line(line, kind, y + size))
            y += step
    return pages, toc


def _render(doc: Document) -> pymupdf.Document:
    pages, toc = _layout(doc)
    pdf = pymupdf.open()
    for number, lines in enumerate(pages, 1):
        page = pdf.new_page(width=PAGE.width, height=PAGE.height)
        shape = page.new_shape()
        header = HEADER_PREFIX + doc.title
        shape.insert_text((MARGIN, 44), header, fontname=REGULAR, fontsize=7.5, color=GRAY)
        footer = f"Page {number} of {len(pages)}"
        x = (PAGE.width - pymupdf.get_text_length(footer, REGULAR, 8)) / 2
        shape.insert_text((x, PAGE.height - 40), footer, fontname=REGULAR, fontsize=8, color=GRAY)
        for line in lines:
            font, size, _ = STYLES[line.kind]
            shape.insert_text((MARGIN, line.baseline), line.text, fontname=font, fontsize=size)
        shape.commit()
    pdf.set_toc(toc)
    pdf.set_metadata({"title": doc.title, "subject": doc.topic, "creator": __name__})
    return pdf


def _to_bytes(pdf: pymupdf.Document, **save_options: object) -> bytes:
    """Serialize without a random /ID, so output is byte-for-byte reproducible."""
    return pdf.tobytes(garbage=3, deflate=True, no_new_id=True, **save_options)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_bad(folder: Path, source: Path) -> list[Path]:
    good = source.read_bytes()
    with pymupdf.open(source) as original, pymupdf.open() as scanned:
        scanned.new_page(width=PAGE.width, height=PAGE.height).insert_image(
            PAGE, pixmap=original[0].get_pixmap(dpi=100, colorspace=pymupdf.csGRAY)
        )
        scanned_bytes = _to_bytes(scanned)
        encrypted = _to_bytes(
            original,
            encryption=pymupdf.PDF_ENCRYPT_AES_256,
            user_pw=ENCRYPTED_PASSWORD,
            owner_pw=ENCRYPTED_PASSWORD + "-owner",
        )
    contents = {
        "scanned.pdf": scanned_bytes,
        "encrypted.pdf": encrypted,
        "truncated.pdf": good[: len(good) * 2 // 5],
        "empty.pdf": b"",
        "not_a_pdf.pdf": b"Quarterly close checklist\n\nA plain-text note with a .pdf name.\n",
        "duplicate.pdf": good,
    }
    return [_write(folder / name, data) for name, data in contents.items()]


def write_sample_pdfs(dest: Path, with_bad: bool = False) -> list[Path]:
    """Write dest/<topic>/<topic>.pdf per topic, plus the BAD_KINDS files in dest/_bad/ if asked."""
    dest = Path(dest)
    written = [
        _write(dest / topic / f"{topic}.pdf", _to_bytes(_render(doc)))
        for topic, doc in load_corpus().items()
    ]
    return written + _write_bad(dest / BAD_TOPIC, written[0]) if with_bad else written


def write_document(doc: Document, dest: Path) -> Path:
    """Write one Document (topic, title, (heading, body) sections) as dest/<topic>/<topic>.pdf, laid out like the
    corpus: for extra topics made by benchmarks and tests."""
    return _write(Path(dest) / doc.topic / f"{doc.topic}.pdf", _to_bytes(_render(doc)))
