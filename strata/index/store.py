"""The store interface both backends implement, and `open_store`: a path is SQLite, postgresql://... is Postgres."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from strata.errors import StrataError
from strata.index.records import Chunk, Meta

INDEX_FILE = "index.sqlite"
BATCH = 2000  # rows per insert batch while building


@dataclass(frozen=True)
class Row:
    """A candidate from the store's full-text search: its chunk, its indexed words and the store's own rank."""

    rid: int
    chunk: Chunk
    words: str
    native: float


class Store(Protocol):
    """What search and build need from a backend."""

    where: str

    def meta(self) -> Meta: ...
    def candidates(self, terms: Sequence[str], topic: str | None, source: str | None, limit: int) -> list[Row]: ...
    def df(self, terms: Sequence[str]) -> dict[str, int]: ...
    def rerank(self, rids: Sequence[int], vector: Sequence[float]) -> dict[int, float]: ...
    def topics(self) -> list[str]: ...
    def documents(self) -> list[str]: ...
    def write(self, meta: Meta, chunks: Sequence[Chunk], words: Sequence[str], vectors: Callable[[int], Any] | None,
              tick: Callable[[int], None]) -> None: ...
    def close(self) -> None: ...


def chunk_from(values: Sequence[Any]) -> Chunk:
    """A Chunk from the columns (chunk_id, topic, source, pages-json, heading, text, split)."""
    chunk_id, topic, source, pages, heading, text, split = values
    return Chunk(chunk_id, topic, source, tuple(json.loads(pages)), heading, text, split)


def is_postgres(spec: str | Path) -> bool:
    return str(spec).startswith(("postgresql://", "postgres://"))


def open_store(spec: str | Path, *, create: bool = False) -> Store:
    """The store at `spec`: a SQLite file path (must exist unless `create`) or a postgresql:// URL (connected now:
    an unreachable server is a one-line StrataError naming host and port)."""
    if is_postgres(spec):
        from strata.index.postgres import PostgresStore

        return PostgresStore(str(spec))
    from strata.index.sqlite import SqliteStore

    path = Path(spec)
    if not create and not path.is_file():
        raise StrataError(f"no evidence index at {path}: build it with `strata build index` (it reads the dataset "
                          "under data/processed), or pass --index PATH|postgresql://...")
    return SqliteStore(path)
