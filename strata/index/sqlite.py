"""The embedded store: one SQLite file with an FTS5 table, built under a temporary name and renamed when complete."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from strata.errors import StrataError
from strata.index.records import Chunk, Meta
from strata.index.store import BATCH, Row, chunk_from

COLUMNS = "c.chunk_id, c.topic, c.source, c.pages, c.heading, c.text, c.split"
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (rid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
                     source TEXT NOT NULL, pages TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
                     split TEXT NOT NULL, words TEXT NOT NULL, n_words INTEGER NOT NULL, vector BLOB);
CREATE INDEX chunks_topic ON chunks (topic);
CREATE INDEX chunks_source ON chunks (source);
CREATE TABLE terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE fts USING fts5 (words, content='chunks', content_rowid='rid', tokenize='unicode61');
"""


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class SqliteStore:
    """An index.sqlite file: read through one read-only connection (guarded by a lock), written by `write`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                db.execute("SELECT count(*) FROM meta").fetchone()
            except sqlite3.DatabaseError as exc:
                raise StrataError(f"{self.path} is not a readable evidence index ({exc}); rebuild it with "
                                  "`strata build index`.") from None
            self._db = db
        return self._db

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, params).fetchall()

    def meta(self) -> Meta:
        return Meta.from_rows(self._all("SELECT key, value FROM meta"), self.where)

    def candidates(self, terms: Sequence[str], topic: str | None, source: str | None, limit: int) -> list[Row]:
        if not terms:
            return []
        where, params = ["fts MATCH ?"], [" OR ".join(_quote(t) for t in terms)]
        for column, value in (("topic", topic), ("source", source)):
            if value is not None:
                where.append(f"c.{column} = ?")
                params.append(value)
        rows = self._all(f"SELECT c.rid, {COLUMNS}, c.words, bm25(fts) FROM fts JOIN chunks c ON c.rid = fts.rowid "
                         f"WHERE {' AND '.join(where)} ORDER BY bm25(fts) LIMIT ?", [*params, limit])
        return [Row(r[0], chunk_from(r[1:8]), r[8], -r[9]) for r in rows]

    def df(self, terms: Sequence[str]) -> dict[str, int]:
        marks = ",".join("?" * len(terms))
        return dict(self._all(f"SELECT term, df FROM terms WHERE term IN ({marks})", list(terms))) if terms else {}

    def rerank(self, rids: Sequence[int], vector: Sequence[float]) -> dict[int, float]:
        if not rids:
            return {}
        marks = ",".join("?" * len(rids))
        rows = self._all(f"SELECT rid, vector FROM chunks WHERE rid IN ({marks}) AND vector IS NOT NULL", list(rids))
        query = np.asarray(vector, dtype=np.float32).astype(np.float64)
        return {rid: float(np.frombuffer(blob, dtype=np.float32).astype(np.float64) @ query) for rid, blob in rows}

    def topics(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT topic FROM chunks ORDER BY topic")]

    def documents(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT source FROM chunks ORDER BY source")]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- building ---------------------------------------------------------------------------------------------
    def write(self, meta: Meta, chunks: Sequence[Chunk], words: Sequence[str], vectors: Callable[[int], Any] | None,
              tick: Callable[[int], None]) -> None:
        """Build the whole index in `<name>.tmp-<pid>` beside the target and rename it over the target when
        complete: readers (and a kill -9 mid-build) only ever see the old file or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.path)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(SCHEMA)
            counts: dict[str, int] = {}
            step = 64 if vectors is not None else BATCH  # embedding is slow: tick the bar often
            for start in range(0, len(chunks), step):
                part = range(start, min(start + step, len(chunks)))
                rows = []
                for i in part:
                    c, w = chunks[i], words[i]
                    for term in set(w.split()):
                        counts[term] = counts.get(term, 0) + 1
                    blob = None if vectors is None else np.asarray(vectors(i), dtype=np.float32).tobytes()
                    rows.append((i + 1, c.chunk_id, c.topic, c.source, _pages(c), c.heading, c.text, c.split, w,
                                 len(w.split()), blob))
                db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                tick(len(rows))
            db.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
            db.executemany("INSERT INTO terms VALUES (?, ?)", sorted(counts.items()))
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.to_rows())
            db.commit()
        except BaseException:
            db.close()
            tmp.unlink(missing_ok=True)
            raise
        db.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _pages(chunk: Chunk) -> str:
    return json.dumps(list(chunk.pages))


def _remove_stale(path: Path) -> None:
    """Temporary files of builds that died (kill -9): their process is gone, so nobody will finish them."""
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
