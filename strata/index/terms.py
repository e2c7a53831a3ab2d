"""Words as the index sees them (one tokenizer for every store) and the BM25 score both stores share."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

K1, B = 1.2, 0.75  # FTS5's bm25() defaults: SQLite's own ranking and this one agree
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Short English function words: they match nearly every chunk and would let an off-topic question find "evidence".
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers him his how i
if in into is it its itself just me more most my no nor not now of off on once only or other our out over own same
she should so some such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
""".split())


def words(text: str) -> list[str]:
    """Lower-cased letter/digit runs, stopwords dropped: the indexed form of a chunk and of a question."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


def query_terms(text: str, limit: int = 64) -> list[str]:
    """A question's distinct words in order (at most `limit`: longer questions add little but cost a lot)."""
    return list(dict.fromkeys(words(text)))[:limit]


def idf(n_docs: int, df: int) -> float:
    """FTS5's idf: log((N - n + 0.5) / (n + 0.5)), floored at 1e-6 for words in over half the chunks."""
    value = math.log((n_docs - df + 0.5) / (df + 0.5))
    return value if value > 0 else 1e-6


def bm25(query: Iterable[str], doc: Counter, length: int, n_docs: int, avg_len: float, df: dict[str, int]) -> float:
    """Okapi BM25 of one chunk (its word counts and length) for the query words."""
    score = 0.0
    norm = K1 * (1 - B + B * length / max(avg_len, 1e-9))
    for term in query:
        tf = doc.get(term, 0)
        if tf:
            score += idf(n_docs, df.get(term, 0)) * tf * (K1 + 1) / (tf + norm)
    return score
