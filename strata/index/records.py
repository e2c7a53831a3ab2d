"""What the index holds: chunks (from train.jsonl and the held-out val.jsonl), hits, and the fingerprints that tie
an index to its dataset, base model and embedder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strata.errors import StrataError

FORMAT = 1
DATASET_HINT = "run `strata build dataset` first"


@dataclass(frozen=True)
class Chunk:
    """One chunk of one recommended PDF, as the dataset step wrote it."""

    chunk_id: str
    topic: str
    source: str  # the PDF's path under data/raw_pdfs (topic/file.pdf)
    pages: tuple[int, ...]
    heading: str
    text: str
    split: str  # "train" or "val" (held out from training, still evidence)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk: its BM25 score (the same scale in every store) and, when reranked, its cosine."""

    chunk: Chunk
    score: float
    dense: float | None = None

    def citation(self, n: int) -> dict[str, Any]:
        """The reply's citation entry [n]."""
        c = self.chunk
        entry = {"n": n, "source": c.source, "pages": list(c.pages), "heading": c.heading, "chunk_id": c.chunk_id,
                 "topic": c.topic, "score": round(self.score, 4), "text": c.text}
        if self.dense is not None:
            entry["dense"] = round(self.dense, 4)
        return entry


@dataclass
class Meta:
    """The index's identity: what it was built from, and with which embedder (None: lexical only)."""

    dataset: str
    base: str | None
    embedder: str | None = None
    dims: int | None = None
    n_chunks: int = 0
    avg_len: float = 0.0
    created: str = ""
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_rows(self) -> list[tuple[str, str]]:
        return [(k, json.dumps(v)) for k, v in asdict(self).items()]

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str]], where: str) -> "Meta":
        values = {k: json.loads(v) for k, v in rows}
        if values.get("format") != FORMAT:
            raise StrataError(f"{where} is an evidence index of format {values.get('format')!r}; this strata reads "
                              f"format {FORMAT}: rebuild it with `strata build index`.")
        try:
            return cls(**values)
        except TypeError as exc:
            raise StrataError(f"{where} has a malformed meta table ({exc}); rebuild it with `strata build index`.") \
                from None

    def fingerprint(self) -> str:
        return f"dataset {self.dataset}, base {self.base or 'unknown'}"


def dataset_fingerprint(train: Path, val: Path) -> str:
    """sha256 over train.jsonl then val.jsonl (the chunks the index is built from), 16 hex digits."""
    digest = hashlib.sha256()
    for path in (train, val):
        if not path.is_file():
            raise StrataError(f"{path} does not exist: the evidence index is built from the dataset; {DATASET_HINT}.")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def read_chunks(train: Path, val: Path) -> list[Chunk]:
    """Every chunk of both splits (the held-out ones are evidence too), in file order."""
    chunks: list[Chunk] = []
    for split, path in (("train", train), ("val", val)):
        if not path.is_file():
            raise StrataError(f"{path} does not exist: the evidence index is built from the dataset; {DATASET_HINT}.")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row["text"] if "text" in row else row["messages"][-1]["content"]
                chunks.append(Chunk(chunk_id=str(row["id"]), topic=str(row["topic"]), source=str(row["source"]),
                                    pages=tuple(int(p) for p in row.get("pages") or ()),
                                    heading=str(row.get("heading") or ""), text=str(text), split=split))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise StrataError(f"{path}:{number} is not a dataset row ({type(exc).__name__}: {exc}); rebuild the "
                                  "dataset with `strata build dataset`.") from None
    if not chunks:
        raise StrataError(f"{train} and {val} hold no chunks; {DATASET_HINT}.")
    return chunks
