"""Retrieval: the store's full-text search pools candidates, one shared BM25 orders them (so SQLite and Postgres
agree on scores), and a GGUF embedder, when the index has vectors, reranks the pool by cosine."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from strata.errors import StrataError
from strata.index.records import Hit, Meta
from strata.index.store import Store
from strata.index.terms import bm25, query_terms

POOL_MIN, POOL_FACTOR = 64, 8  # candidates read per query: max(64, 8 x top_k)
RERANK_MIN, RERANK_FACTOR = 16, 4  # of those, the BM25 best max(16, 4 x top_k) are reranked by cosine
Embed = Callable[[Sequence[str]], list[list[float]]]


@dataclass
class Searcher:
    """Search one store; `embed` (texts -> unit vectors) turns on the dense rerank when the index has vectors."""

    store: Store
    embed: Embed | None = None

    def __post_init__(self) -> None:
        self.meta: Meta = self.store.meta()
        self._topics = set(self.store.topics())
        self._documents = set(self.store.documents())

    @property
    def mode(self) -> str:
        """"lexical+dense" when reranking, else "lexical" (and why not dense)."""
        return "lexical+dense" if self.dense else "lexical"

    @property
    def dense(self) -> bool:
        return self.embed is not None and self.meta.embedder is not None

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def documents(self) -> list[str]:
        return sorted(self._documents)

    def check_filter(self, topic: str | None, document: str | None) -> None:
        """StrataError (KeyError-like, the caller maps it to 404) naming the known values of a bad filter."""
        if topic is not None and topic not in self._topics:
            raise UnknownFilter("topic", topic, self.topics())
        if document is not None and document not in self._documents:
            raise UnknownFilter("document", document, self.documents())

    def search(self, query: str, top_k: int, topic: str | None = None, document: str | None = None) -> list[Hit]:
        """The top_k chunks for `query` (filtered by topic and/or document), best first."""
        self.check_filter(topic, document)
        terms = query_terms(query)
        rows = self.store.candidates(terms, topic, document, max(POOL_MIN, POOL_FACTOR * top_k))
        df = self.store.df(terms)
        scored = [(bm25(terms, Counter(r.words.split()), len(r.words.split()), self.meta.n_chunks,
                        self.meta.avg_len, df), r) for r in rows]
        scored.sort(key=lambda pair: (-pair[0], pair[1].rid))
        if not self.dense or not scored:
            return [Hit(r.chunk, s) for s, r in scored[:top_k]]
        # rerank the BM25 best of the pool only: each store pools by its own rank function, BM25 agrees on the top
        scored = scored[:max(RERANK_MIN, RERANK_FACTOR * top_k)]
        vector = self.embed([query])[0]
        cosines = self.store.rerank([r.rid for _, r in scored], vector)
        # rounded: the stores sum in a different order, so near-ties break by chunk order in both
        reranked = sorted(scored, key=lambda pair: (-round(cosines.get(pair[1].rid, -2.0), 9), pair[1].rid))
        return [Hit(r.chunk, s, cosines.get(r.rid)) for s, r in reranked[:top_k]]


class UnknownFilter(StrataError):
    """A topic or document the index does not hold."""

    def __init__(self, kind: str, value: str, known: list[str]) -> None:
        shown = ", ".join(known[:50]) + (" ..." if len(known) > 50 else "")
        super().__init__(f"unknown {kind} {value!r}: the evidence index holds {len(known)} {kind}s: {shown}.")
        self.kind, self.value, self.known = kind, value, known
