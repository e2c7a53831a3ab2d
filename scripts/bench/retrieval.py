"""`make bench` (retrieval part): evidence-index search latency p50/p95 on SQLite and Postgres for corpora of kit
PDFs scaled to N chunks (more kit-like PDFs are generated, nothing is downloaded), stores interleaved per round.
Sizes from --direct-from up skip the PDFs: chunks are composed straight from the kit's paragraphs (rendering and
extracting ~12k PDFs costs about 0.6 s each here, hours for 100k chunks; the index only sees chunk rows)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def make_corpus(raw: Path, n_pdfs: int, seed: int = 0) -> None:
    """`n_pdfs` kit-like PDFs: each draws its sections from the whole kit corpus, with paragraphs picked and
    ordered at random, under its own topic name, so no two PDFs (and few chunks) repeat."""
    from strata.kit.pdfs import Document, load_corpus, write_document

    rng = random.Random(seed)
    corpus = list(load_corpus().values())
    pool = [(h, p) for doc in corpus for h, body in doc.sections for p in body.split("\n\n")]
    for i in range(n_pdfs):
        sections = []
        for _ in range(6):
            heading = rng.choice(pool)[0]
            sections.append((f"{heading} {rng.randrange(1000)}", "\n\n".join(p for _, p in rng.sample(pool, 4))))
        write_document(Document(f"Topic_{i:05d}", f"Generated standard {i}", tuple(sections)), raw)


def chunk_corpus(settings, target: int) -> int:
    """train.jsonl rows from the generated PDFs with the dataset step's own extraction and chunker (tokens counted
    as words: the bench needs volume, not the base tokenizer), no dedup; val.jsonl empty."""
    from strata.data.chunking import chunk_section
    from strata.data.pdftext import sections_from_pdf
    from strata.files import atomic_write_jsonl

    rows = []
    for pdf in sorted(settings.raw_pdfs.rglob("*.pdf")):
        source = pdf.relative_to(settings.raw_pdfs).as_posix()
        for section in sections_from_pdf(pdf):
            for n, chunk in enumerate(chunk_section(section, lambda t: len(t.split()), 200, 24, 260, 20)):
                rows.append({"id": f"{source}-{len(rows)}", "text": chunk.text, "topic": pdf.parent.name,
                             "source": source, "pages": chunk.pages, "heading": chunk.heading or pdf.stem})
        if len(rows) >= target:
            break
    atomic_write_jsonl(settings.train_jsonl, rows[:target])
    atomic_write_jsonl(settings.val_jsonl, [])
    return len(rows[:target])


def direct_corpus(settings, target: int, seed: int = 0) -> int:
    """train.jsonl rows composed from the kit's paragraphs (2-3 per chunk, ~200 words, 8 chunks per generated PDF
    name, as chunk_corpus makes them), no PDF rendered; val.jsonl empty."""
    from strata.files import atomic_write_jsonl
    from strata.kit.pdfs import load_corpus

    rng = random.Random(seed)
    pool = [(h, p) for doc in load_corpus().values() for h, body in doc.sections for p in body.split("\n\n")]
    rows = []
    for i in range(target):
        heading, _ = rng.choice(pool)
        text = " ".join(" ".join(p for _, p in rng.sample(pool, 3)).split()[:200])
        topic = f"Topic_{i // 8:05d}"
        rows.append({"id": f"{topic}-{i}", "text": text, "topic": topic, "source": f"{topic}/{topic}.pdf",
                     "pages": [1 + i % 8 // 3], "heading": f"{heading} {rng.randrange(1000)}"})
    atomic_write_jsonl(settings.train_jsonl, rows)
    atomic_write_jsonl(settings.val_jsonl, [])
    return target


def build(workspace: Path, chunks: int, postgres: str | None, direct: bool = False) -> dict:
    from strata.index.builder import build_index
    from strata.settings import Settings

    settings = Settings.resolve(workspace=workspace, env={})
    settings.ensure_skeleton()
    timings = {}
    if not settings.train_jsonl.is_file() and direct:
        started = time.perf_counter()
        direct_corpus(settings, chunks)
        timings["chunking_s"] = time.perf_counter() - started
    elif not settings.train_jsonl.is_file():
        started = time.perf_counter()
        make_corpus(settings.raw_pdfs, max(1, chunks // 8))
        timings["pdfs_s"] = time.perf_counter() - started
        started = time.perf_counter()
        chunk_corpus(settings, chunks)
        timings["chunking_s"] = time.perf_counter() - started
    started = time.perf_counter()
    build_index(settings, progress=True, echo=print, base="bench")
    timings["sqlite_build_s"] = time.perf_counter() - started
    if postgres:
        started = time.perf_counter()
        build_index(settings, postgres, progress=True, echo=print, base="bench")
        timings["postgres_build_s"] = time.perf_counter() - started
    return {"settings": settings, **timings}


def latencies(searchers: dict, questions: list[str], rounds: int, top_k: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in searchers}
    for _ in range(rounds):
        for question in questions:
            for name, searcher in searchers.items():  # interleaved: every store answers each question in turn
                started = time.perf_counter()
                searcher.search(question, top_k)
                out[name].append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--chunks", default="1000,100000", help="corpus sizes in chunks (comma list)")
    p.add_argument("--postgres", default=None, help="postgresql:// URL of a scratch database (tables replaced)")
    p.add_argument("--root", default=str(REPO / "workspace" / "runs" / "bench-retrieval"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--direct-from", type=int, default=20000,
                   help="corpus sizes from this many chunks up are composed from the kit's paragraphs, no PDFs")
    args = p.parse_args(argv)
    from strata.index.records import read_chunks
    from strata.index.search import Searcher
    from strata.index.store import open_store

    results = []
    for size in [int(s) for s in args.chunks.split(",")]:
        direct = size >= args.direct_from
        built = build(Path(args.root) / f"c{size}{'-direct' if direct else ''}", size, args.postgres, direct)
        settings = built["settings"]
        chunks = read_chunks(settings.train_jsonl, settings.val_jsonl)
        rng = random.Random(1)
        questions = [f"What does the standard say about {c.heading.lower()}?" for c in rng.sample(chunks, 50)]
        searchers = {"sqlite": Searcher(open_store(settings.workspace / "index.sqlite"))}
        if args.postgres:
            searchers["postgres"] = Searcher(open_store(args.postgres))
        measured = latencies(searchers, questions, args.rounds, args.top_k)
        row = {"chunks": len(chunks), "corpus": "kit paragraphs, no PDFs" if direct else "generated PDFs", **{k: round(v, 1) for k, v in built.items() if k.endswith("_s")}}
        for name, values in measured.items():
            row[f"{name}_p50_ms"] = round(statistics.median(values), 2)
            row[f"{name}_p95_ms"] = round(pct(values, 0.95), 2)
            row[f"{name}_n"] = len(values)
        print(json.dumps(row))
        results.append(row)
    out = Path(args.root) / f"results-{datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
