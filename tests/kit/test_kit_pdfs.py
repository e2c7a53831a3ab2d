"""Tests for the kit sample corpus and the PDFs rendered from it."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest

from strata.kit.pdfs import (  # noqa: E402
    BAD_KINDS,
    BAD_TOPIC,
    CORPUS_DIR,
    ENCRYPTED_PASSWORD,
    HEADER_PREFIX,
    Document,
    load_corpus,
    write_sample_pdfs,
)

CORPUS = load_corpus()
TOPICS = sorted(CORPUS)
BODY_SIZE = 11.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("kit")
    write_sample_pdfs(dest, with_bad=True)
    return dest


def _pdf(sample: Path, topic: str) -> Path:
    return sample / topic / f"{topic}.pdf"


def _body_clip(page: pymupdf.Page) -> pymupdf.Rect:
    """The page minus the running header and footer bands."""
    return page.rect + (0, 60, 0, -60)


def _paragraphs(doc: Document) -> list[str]:
    return [p for _, body in doc.sections for p in body.split("\n\n")]


def test_corpus_shape() -> None:
    assert {"ASC_Leases", "ASC_Revenue_Recognition", "ASC_Intangibles"} <= set(CORPUS)
    assert {p.stem for p in CORPUS_DIR.glob("*.md")} == set(CORPUS)
    assert len({d.title for d in CORPUS.values()}) == len(CORPUS)
    for topic, doc in CORPUS.items():
        assert doc.topic == topic and doc.title
        assert 6 <= len(doc.sections) <= 10, topic
        for heading, body in doc.sections:
            assert 2 <= len(body.split("\n\n")) <= 4, (topic, heading)
        words = sum(len(p.split()) for p in _paragraphs(doc))
        assert 1800 <= words <= 2500, (topic, words)
        markup = re.search(r"[*_`|#]|^\s*(?:[-+]|\d+\.)\s", "\n".join(_paragraphs(doc)), re.M)
        assert markup is None, topic


def test_write_without_bad_returns_one_pdf_per_topic(tmp_path: Path) -> None:
    written = write_sample_pdfs(tmp_path)
    assert written == [_pdf(tmp_path, t) for t in TOPICS]
    assert not (tmp_path / BAD_TOPIC).exists()


def test_write_with_bad_returns_every_path(tmp_path: Path) -> None:
    written = write_sample_pdfs(tmp_path, with_bad=True)
    bad = tmp_path / BAD_TOPIC
    assert written == [_pdf(tmp_path, t) for t in TOPICS] + [bad / name for name in BAD_KINDS]
    assert sorted(p.name for p in bad.iterdir()) == sorted(BAD_KINDS)
    assert all(isinstance(v, str) and v for v in BAD_KINDS.values())


def test_good_pdfs_are_deterministic(sample: Path, tmp_path: Path) -> None:
    for again in write_sample_pdfs(tmp_path):
        assert again.read_bytes() == _pdf(sample, again.stem).read_bytes()


@pytest.mark.parametrize("topic", TOPICS)
def test_good_pdf_pages_metadata_and_toc(sample: Path, topic: str) -> None:
    doc, corpus = pymupdf.open(_pdf(sample, topic)), CORPUS[topic]
    assert doc.is_pdf and not doc.needs_pass and not doc.is_repaired
    assert 3 <= doc.page_count <= 6
    assert doc.metadata["title"] == corpus.title
    toc = doc.get_toc()
    headings = [[2, heading] for heading, _ in corpus.sections]
    assert [entry[:2] for entry in toc] == [[1, corpus.title], *headings]
    pages = [entry[2] for entry in toc]
    assert pages == sorted(pages) and pages[0] == 1 and pages[-1] <= doc.page_count
    for _, heading, page_no in toc:
        assert heading in " ".join(doc[page_no - 1].get_text().split())


@pytest.mark.parametrize("topic", TOPICS)
def test_every_page_has_running_header_and_page_number(sample: Path, topic: str) -> None:
    doc = pymupdf.open(_pdf(sample, topic))
    for number, page in enumerate(doc, 1):
        lines = page.get_text().splitlines()
        assert lines[0] == HEADER_PREFIX + CORPUS[topic].title
        assert f"Page {number} of {doc.page_count}" in lines


def _body_text(path: Path) -> str:
    return "".join(page.get_text(clip=_body_clip(page)) for page in pymupdf.open(path))


@pytest.mark.parametrize("topic", TOPICS)
def test_all_text_is_present_in_order(sample: Path, topic: str) -> None:
    corpus = CORPUS[topic]
    # lines only ever break at spaces or right after a hyphen that is part of the source text
    extracted = _body_text(_pdf(sample, topic)).replace("-\n", "-").split()
    expected = " ".join([corpus.title] + [f"{h} {b}" for h, b in corpus.sections]).split()
    assert extracted == expected


def test_some_lines_end_inside_a_hyphenated_word(sample: Path) -> None:
    assert any(re.search(r"[a-z]-\n[a-z]", _body_text(_pdf(sample, t))) for t in TOPICS)


@pytest.mark.parametrize("topic", TOPICS)
def test_title_and_headings_are_bold_and_larger(sample: Path, topic: str) -> None:
    corpus = CORPUS[topic]
    bold, regular = [], []
    for page in pymupdf.open(_pdf(sample, topic)):
        for block in page.get_text("dict", clip=_body_clip(page))["blocks"]:
            for span in (s for line in block["lines"] for s in line["spans"]):
                is_bold = bool(span["flags"] & pymupdf.TEXT_FONT_BOLD)
                assert is_bold == span["font"].endswith("-Bold")
                (bold if is_bold else regular).append(span)
    headings = [heading for heading, _ in corpus.sections]
    assert " ".join(s["text"] for s in bold) == " ".join([corpus.title, *headings])
    assert all(s["size"] >= BODY_SIZE + 2 for s in bold)
    assert {s["size"] for s in regular} == {BODY_SIZE}


def test_scanned_has_no_text_and_one_full_page_image(sample: Path) -> None:
    doc = pymupdf.open(sample / BAD_TOPIC / "scanned.pdf")
    assert doc.page_count == 1
    page = doc[0]
    assert page.get_text().strip() == ""
    (image,) = page.get_image_info()
    assert pymupdf.Rect(image["bbox"]).get_area() >= 0.95 * page.rect.get_area()


def test_encrypted_needs_password(sample: Path) -> None:
    doc = pymupdf.open(sample / BAD_TOPIC / "encrypted.pdf")
    assert doc.needs_pass and doc.is_encrypted
    assert doc.metadata is None  # nothing is readable before authentication
    with pytest.raises(ValueError, match="encrypted"):
        doc.load_page(0)
    assert doc.authenticate("wrong") == 0
    assert doc.authenticate(ENCRYPTED_PASSWORD) > 0
    # Do not query doc.needs_pass from here on: in PyMuPDF 2.0 it re-tries the empty
    # password and silently drops the authenticated key (pages then extract as "").
    assert "256-bit AES" in doc.metadata["encryption"]
    assert doc[0].get_text().startswith(HEADER_PREFIX)


def test_truncated_opens_only_after_repair_and_loses_content(sample: Path) -> None:
    path = sample / BAD_TOPIC / "truncated.pdf"
    original = _pdf(sample, TOPICS[0]).read_bytes()
    assert original.startswith(path.read_bytes())
    assert path.stat().st_size == len(original) * 2 // 5
    pymupdf.TOOLS.mupdf_warnings(reset=True)
    doc = pymupdf.open(path)  # PyMuPDF does not raise: MuPDF rebuilds the xref from what is left
    assert doc.is_repaired
    assert "repair" in pymupdf.TOOLS.mupdf_warnings()
    assert doc.get_toc() == [] and doc.metadata["title"] == ""
    # the page objects survive, so the page count still looks right; the later pages are blank
    assert doc.page_count == pymupdf.open(stream=original).page_count
    texts = [page.get_text() for page in doc]
    assert texts[-1] == ""
    assert CORPUS[TOPICS[0]].sections[-1][0] not in "".join(texts)


def test_empty_is_zero_bytes_and_refused(sample: Path) -> None:
    path = sample / BAD_TOPIC / "empty.pdf"
    assert path.stat().st_size == 0
    with pytest.raises(pymupdf.EmptyFileError):
        pymupdf.open(path)


def test_not_a_pdf_is_refused(sample: Path) -> None:
    path = sample / BAD_TOPIC / "not_a_pdf.pdf"
    assert path.stat().st_size > 0 and not path.read_bytes().startswith(b"%PDF")
    with pytest.raises(pymupdf.FileDataError, match="Failed to open file") as info:
        pymupdf.open(path)
    assert not isinstance(info.value, pymupdf.EmptyFileError)


def test_duplicate_is_byte_identical_to_a_good_pdf(sample: Path) -> None:
    duplicate = (sample / BAD_TOPIC / "duplicate.pdf").read_bytes()
    assert [t for t in TOPICS if _pdf(sample, t).read_bytes() == duplicate] == [TOPICS[0]]
