"""Plain text of a corpus folder (.md, .txt, or text extracted from .pdf), for tokenizer and pre-training."""

from __future__ import annotations

import re
from pathlib import Path

from strata.errors import StrataError

CORPUS_DIR = Path(__file__).parent / "corpus"


def corpus_texts(corpus: Path | None = None) -> list[str]:
    """One string per document under `corpus` (default: the kit's own corpus), in sorted path order."""
    root = Path(corpus) if corpus is not None else CORPUS_DIR
    if not root.is_dir():
        raise StrataError(f"corpus folder {root} does not exist; pass a folder of PDFs or .md/.txt files")
    texts = [_read(path) for path in sorted(root.rglob("*")) if path.suffix.lower() in {".md", ".txt", ".pdf"}]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise StrataError(f"no readable .pdf, .md or .txt text under {root}")
    return texts


def _read(path: Path) -> str:
    if path.suffix.lower() != ".pdf":
        return re.sub(r"^#+\s*", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    import pymupdf

    try:
        with pymupdf.open(path) as doc:
            return "" if doc.needs_pass else "\n".join(page.get_text() for page in doc)
    except Exception:  # a broken PDF contributes no text; the pretest is where it gets a verdict
        return ""
