"""`make bench` (retrieval part): evidence-index search latency p50/p95 on SQLite and Postgres for corpora of kit
PDFs scaled to N chunks (more kit-like PDFs are generated, nothing is downloaded), stores interleaved per round."""

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


def make_corpus(raw: Path, chunks_wanted: int, per_doc: int, seed: int = 0) -> int:
    """Kit documents re-written under new topic names with their paragraphs reshuffled, until about
    `chunks_wanted` chunks (each kit document makes about `per_doc`)."""
    from strata.kit.pdfs import Document, load_corpus, write_document

    rng = random.Random(seed)
    corpus = list(load_corpus().values())
    count = max(1, chunks_wanted // per_doc)
    for i in range(count):
        doc = corpus[i % len(corpus)]
        sections = []
        for heading, body in doc.sections:
            paragraphs = body.split("\n\n")
            rng.shuffle(paragraphs)
            sections.append((heading, "\n\n".join(paragraphs)))
        rng.shuffle(sections)
        write_document(Document(f"{doc.topic}_{i:05d}", f"{doc.title} ({i})", tuple(sections)), raw)
    return count


def build(workspace: Path, chunks: int, tokenizer: Path, postgres: str | None) -> dict:
    from strata.build.dataset import build_dataset
    from strata.build.pretest import run_pretest
    from strata.index.builder import build_index
    from strata.settings import Settings

    settings = Settings.resolve(workspace=workspace, base_model=str(tokenizer), env={})
    settings.ensure_skeleton()
    timings = {}
    if not settings.train_jsonl.is_file():
        started = time.perf_counter()
        make_corpus(settings.raw_pdfs, chunks, per_doc=20)
        run_pretest(settings)
        build_dataset(settings)
        timings["dataset_s"] = time.perf_counter() - started
    started = time.perf_counter()
    build_index(settings, progress=True, echo=print)
    timings["sqlite_build_s"] = time.perf_counter() - started
    if postgres:
        started = time.perf_counter()
        build_index(settings, postgres, progress=True, echo=print)
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
    p.add_argument("--tokenizer", required=True, help="HF model dir whose tokenizer chunks the PDFs (the kit's "
                   "tiny base: `strata kit tiny-base`)")
    p.add_argument("--root", default=str(REPO / "workspace" / "runs" / "bench-retrieval"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--top-k", type=int, default=4)
    args = p.parse_args(argv)
    from strata.index.records import read_chunks
    from strata.index.search import Searcher
    from strata.index.store import open_store

    results = []
    for size in [int(s) for s in args.chunks.split(",")]:
        built = build(Path(args.root) / f"c{size}", size, Path(args.tokenizer), args.postgres)
        settings = built["settings"]
        chunks = read_chunks(settings.train_jsonl, settings.val_jsonl)
        rng = random.Random(1)
        questions = [f"What does the standard say about {c.heading.lower()}?" for c in rng.sample(chunks, 50)]
        searchers = {"sqlite": Searcher(open_store(settings.workspace / "index.sqlite"))}
        if args.postgres:
            searchers["postgres"] = Searcher(open_store(args.postgres))
        measured = latencies(searchers, questions, args.rounds, args.top_k)
        row = {"chunks": len(chunks), **{k: round(v, 1) for k, v in built.items() if k.endswith("_s")}}
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
