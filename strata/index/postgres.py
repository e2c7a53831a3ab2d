"""The shared store for replicas: the same tables in Postgres, matched with tsvector @@ tsquery and pooled by
ts_rank_cd, vectors as real[] arrays reranked in the query (no pgvector). A build replaces the tables in one
transaction, so every replica sees the old index or the new one."""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Sequence

from strata.errors import StrataError
from strata.index.records import Chunk, Meta
from strata.index.store import BATCH, Row, chunk_from

CONNECT_TIMEOUT_S = 5
TABLES = ("strata_meta", "strata_chunks", "strata_terms")
COLUMNS = "chunk_id, topic, source, pages, heading, text, split"
SCHEMA = """
CREATE TABLE {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE {chunks} (rid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
                       source TEXT NOT NULL, pages TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
                       split TEXT NOT NULL, words TEXT NOT NULL, n_words INTEGER NOT NULL,
                       tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', words)) STORED,
                       vector real[]);
CREATE TABLE {terms} (term TEXT PRIMARY KEY, df INTEGER NOT NULL);
"""
INDEXES = """
CREATE INDEX {chunks}_tsv ON {chunks} USING GIN (tsv);
CREATE INDEX {chunks}_topic ON {chunks} (topic);
CREATE INDEX {chunks}_source ON {chunks} (source);
"""


def where_of(url: str) -> str:
    """host:port (or the socket dir) of a libpq URL, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a malformed URL is reported by connect()
        return "the given address"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"


def _names(suffix: str = "") -> dict[str, str]:
    return {"meta": f"strata_meta{suffix}", "chunks": f"strata_chunks{suffix}", "terms": f"strata_terms{suffix}"}


class PostgresStore:
    """One connection (autocommit for reads, guarded by a lock) to the database named by a postgresql:// URL."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.where = f"postgresql://{where_of(url)}"
        self._lock = threading.Lock()
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StrataError(f"cannot reach the Postgres evidence index at {where_of(url)}: {first}") from None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        import psycopg

        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except psycopg.errors.UndefinedTable:
                raise StrataError(f"{self.where} holds no evidence index (no strata_* tables): build one with "
                                  f"`strata build index --index {self.where}/DBNAME`.") from None

    def meta(self) -> Meta:
        return Meta.from_rows(self._all("SELECT key, value FROM strata_meta"), self.where)

    def candidates(self, terms: Sequence[str], topic: str | None, source: str | None, limit: int) -> list[Row]:
        if not terms:
            return []
        query = " | ".join("'" + t.replace("'", "''").replace("\\", "\\\\") + "'" for t in terms)
        where, params = ["tsv @@ q"], [query]
        for column, value in (("topic", topic), ("source", source)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        rows = self._all(f"SELECT rid, {COLUMNS}, words, ts_rank_cd(tsv, q, 1) AS r FROM strata_chunks, "
                         f"to_tsquery('simple', %s) q WHERE {' AND '.join(where)} ORDER BY r DESC, rid LIMIT %s",
                         [*params, limit])
        return [Row(r[0], chunk_from(r[1:8]), r[8], float(r[9])) for r in rows]

    def df(self, terms: Sequence[str]) -> dict[str, int]:
        return dict(self._all("SELECT term, df FROM strata_terms WHERE term = ANY(%s)", [list(terms)])) if terms else {}

    def rerank(self, rids: Sequence[int], vector: Sequence[float]) -> dict[int, float]:
        """Dot products (vectors are unit length: cosines) computed by Postgres over the candidates' arrays."""
        if not rids:
            return {}
        rows = self._all("SELECT rid, (SELECT sum(a::float8 * b::float8) FROM unnest(vector, %s::real[]) AS t(a, b)) "
                         "FROM strata_chunks WHERE rid = ANY(%s) AND vector IS NOT NULL",
                         [[float(v) for v in vector], list(rids)])
        return {rid: float(score) for rid, score in rows}

    def topics(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT topic FROM strata_chunks ORDER BY topic")]

    def documents(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT source FROM strata_chunks ORDER BY source")]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, meta: Meta, chunks: Sequence[Chunk], words: Sequence[str], vectors: Callable[[int], Any] | None,
              tick: Callable[[int], None]) -> None:
        """Fill strata_*_new tables, then drop the old tables and rename the new ones, all in one transaction."""
        new = _names("_new")
        with self._lock, self._db.transaction():
            cur = self._db.cursor()
            for table in new.values():
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(SCHEMA.format(**new))
            counts: dict[str, int] = {}
            step = 64 if vectors is not None else BATCH  # embedding is slow: tick the bar often
            for start in range(0, len(chunks), step):
                rows = []
                for i in range(start, min(start + step, len(chunks))):
                    c, w = chunks[i], words[i]
                    for term in set(w.split()):
                        counts[term] = counts.get(term, 0) + 1
                    vector = None if vectors is None else [float(v) for v in vectors(i)]
                    rows.append((i + 1, c.chunk_id, c.topic, c.source, json.dumps(list(c.pages)), c.heading, c.text,
                                 c.split, w, len(w.split()), vector))
                with cur.copy(f"COPY {new['chunks']} (rid, chunk_id, topic, source, pages, heading, text, split, "
                              "words, n_words, vector) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                tick(len(rows))
            cur.executemany(f"INSERT INTO {new['terms']} VALUES (%s, %s)", sorted(counts.items()))
            cur.executemany(f"INSERT INTO {new['meta']} VALUES (%s, %s)", meta.to_rows())
            cur.execute(INDEXES.format(**new))
            old = _names()
            for key, table in old.items():
                cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute(f"ALTER TABLE {new[key]} RENAME TO {table}")
            for key in ("chunks",):
                for suffix in ("tsv", "topic", "source"):
                    cur.execute(f"ALTER INDEX {new[key]}_{suffix} RENAME TO {old[key]}_{suffix}")
