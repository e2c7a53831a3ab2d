"""The PDFs under a folder, by topic (the first subfolder)."""

from __future__ import annotations

from pathlib import Path

from strata.settings import DEFAULT_TOPIC


def pdfs_by_topic(root: Path) -> list[tuple[str, Path]]:
    """(topic, path) for every *.pdf under `root`, sorted; the topic is the first subfolder, DEFAULT_TOPIC at the top."""
    root = Path(root)
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())
    return [(topic_of(p.relative_to(root)), p) for p in found]


def topic_of(relative: Path | str) -> str:
    parts = Path(relative).parts
    return parts[0] if len(parts) > 1 else DEFAULT_TOPIC
