"""The shared store: Debian's PostgreSQL (started on a private socket) gives the same top-k, scores and pages as
SQLite for the same queries, lexical and dense, and a rebuild swaps the tables in one transaction."""

from __future__ import annotations

import pytest

from strata.index.builder import build_index
from strata.index.search import Searcher
from strata.index.store import open_store

QUESTIONS = [
    ("When does a contract contain a lease?", None),
    ("What is a performance obligation?", None),
    ("How is goodwill tested for impairment?", None),
    ("DER encoding of ASN.1 structures", None),
    ("glob patterns of MIME types", None),
    ("measurement of the lease liability", "ASC_Leases"),
    ("vendor payment terms", None),
]


@pytest.fixture(scope="module")
def both(evidence_ws, postgres):
    summary = build_index(evidence_ws, postgres, progress=False, echo=lambda _: None)
    assert summary["index"].startswith("postgresql://") and "@" not in summary["index"]  # no user in logs
    lite, pg = open_store(evidence_ws.workspace / "index.sqlite"), open_store(postgres)
    yield Searcher(lite), Searcher(pg)
    lite.close()
    pg.close()


def test_postgres_and_sqlite_give_the_same_top_k(both):
    lite, pg = both
    assert pg.meta.dataset == lite.meta.dataset and pg.meta.n_chunks == lite.meta.n_chunks
    assert pg.topics() == lite.topics() and pg.documents() == lite.documents()
    for question, topic in QUESTIONS:
        for k in (1, 5, 10):
            a, b = lite.search(question, k, topic=topic), pg.search(question, k, topic=topic)
            assert a, question
            assert [h.chunk for h in a] == [h.chunk for h in b], (question, k)
            assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-9)


def test_dense_rerank_agrees_between_stores(evidence_ws, postgres, embedder_gguf, base_gguf, tmp_path):
    """Vectors from a GGUF embedder (here the tiny base, mean-pooled): Postgres reranks them in SQL over real[]
    arrays, SQLite in numpy; the reranked top-k is the same."""
    import shutil

    from strata.index.embedder import GgufEmbedder
    from strata.settings import Settings

    shutil.copytree(evidence_ws.workspace, tmp_path / "copy")
    settings = Settings.resolve(workspace=tmp_path / "copy", base_model=evidence_ws.base_model, env={})
    build_index(settings, embedding_model=embedder_gguf, progress=False, echo=lambda _: None)
    build_index(settings, postgres, embedding_model=embedder_gguf, progress=False, echo=lambda _: None)
    embed = GgufEmbedder(embedder_gguf)
    try:
        lite = Searcher(open_store(settings.workspace / "index.sqlite"), embed)
        pg = Searcher(open_store(postgres), embed)
        assert lite.mode == pg.mode == "lexical+dense" and lite.meta.dims == embed.dims
        changed = 0
        for question, topic in QUESTIONS:
            a, b = lite.search(question, 5, topic=topic), pg.search(question, 5, topic=topic)
            assert [h.chunk.chunk_id for h in a] == [h.chunk.chunk_id for h in b], question
            assert [h.dense for h in a] == pytest.approx([h.dense for h in b], abs=1e-4)
            lexical = Searcher(open_store(settings.workspace / "index.sqlite")).search(question, 5, topic=topic)
            changed += [h.chunk.chunk_id for h in lexical] != [h.chunk.chunk_id for h in a]
        assert changed, "the rerank never changed an order: it is not applied"
    finally:
        embed.close()
    from strata.errors import StrataError
    from strata.serve.config import ServeConfig
    from strata.serve.evidence import open_evidence

    served = open_evidence(ServeConfig(model=base_gguf, workspace=settings.workspace, embedding_model=embedder_gguf))
    assert "lexical+dense" in served.note
    served.close()
    other = tmp_path / "other.gguf"
    other.write_bytes(embedder_gguf.read_bytes() + b"\0")  # another file: other vectors
    with pytest.raises(StrataError, match="holds vectors of embedder"):
        open_evidence(ServeConfig(model=base_gguf, workspace=settings.workspace, embedding_model=other))
    build_index(evidence_ws, postgres, progress=False, echo=lambda _: None)  # leave the lexical index for others

