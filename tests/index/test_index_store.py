"""The SQLite evidence index on real PDFs: every chunk (held-out too) with true pages, atomic rebuilds that survive
kill -9, fingerprints refused at start, and clear errors for bad stores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymupdf
import pytest

from strata.errors import StrataError
from strata.index.records import dataset_fingerprint
from strata.index.search import Searcher, UnknownFilter
from strata.index.store import chunk_from, open_store

QUERIES = {  # question -> the PDF that must come first
    "When does a contract contain a lease?": "ASC_Leases/ASC_Leases.pdf",
    "What is a performance obligation?": "ASC_Revenue_Recognition/ASC_Revenue_Recognition.pdf",
    "DER encoding of ASN.1 structures": "Debian_Docs/libtasn1.pdf",
    "glob patterns of MIME types": "Debian_Docs/shared-mime-info-spec.pdf",
}
REPO = Path(__file__).resolve().parents[2]


def _letters(text: str) -> str:
    """Letters and digits only: line-end hyphenation and spacing differ between a page and its chunk."""
    return re.sub(r"[\W_]+", "", text.lower())


def page_text(doc: pymupdf.Document, number: int) -> str:
    """A page's text line by line in PyMuPDF's block order (tables read row by row, as the dataset step reads),
    bare numbers left out (the dataset drops them as page numbers, wherever they stand)."""
    blocks = doc[number - 1].get_text("dict", flags=0)["blocks"]
    lines = ("".join(span["text"] for span in line["spans"]) for b in blocks for line in b.get("lines", []))
    return " ".join(line for line in lines if not line.strip().isdigit())


def test_citations_point_to_pages_that_contain_the_cited_text(evidence_ws):
    searcher = Searcher(open_store(evidence_ws.workspace / "index.sqlite"))
    checked = 0
    for question, pdf in QUERIES.items():
        hits = searcher.search(question, 5)
        assert hits and hits[0].chunk.source == pdf, (question, [h.chunk.source for h in hits])
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for hit in hits:
            with pymupdf.open(evidence_ws.raw_pdfs / hit.chunk.source) as doc:
                pages = _letters(" ".join(page_text(doc, p) for p in hit.chunk.pages))
            words = hit.chunk.text.split()
            for start in (len(words) // 3, 2 * len(words) // 3):  # two 8-word runs from inside the chunk
                run = words[start:start + 8]
                whole = _letters(" ".join(run)) in pages
                broken = any(_letters(" ".join(run[:j])) in pages and _letters(" ".join(run[j:])) in pages
                             for j in range(1, 8))  # across a page break (footer and header in between)
                assert whole or (broken and len(hit.chunk.pages) > 1), (hit.chunk.source, hit.chunk.pages, run)
            checked += 1
    assert checked >= 12
    everything = [chunk_from(r) for r in searcher.store._all(
        "SELECT chunk_id, topic, source, pages, heading, text, split FROM chunks")]
    for chunk in everything:  # every chunk of the index, not only those retrieved
        with pymupdf.open(evidence_ws.raw_pdfs / chunk.source) as doc:
            pages = _letters(" ".join(page_text(doc, p) for p in chunk.pages))
        words = chunk.text.split()
        assert _letters(" ".join(words[len(words) // 2:len(words) // 2 + 6])) in pages or len(chunk.pages) > 1, chunk


def test_every_chunk_is_indexed_held_out_ones_too(evidence_ws):
    store = open_store(evidence_ws.workspace / "index.sqlite")
    ids = {json.loads(line)["id"]: split for split, path in (("train", evidence_ws.train_jsonl),
                                                            ("val", evidence_ws.val_jsonl))
           for line in path.read_text().splitlines()}
    meta = store.meta()
    assert meta.n_chunks == len(ids) and "val" in ids.values()
    assert meta.dataset == dataset_fingerprint(evidence_ws.train_jsonl, evidence_ws.val_jsonl)
    assert meta.base and meta.embedder is None
    assert {"ASC_Leases", "Debian_Docs", "Vendor_Notes"} <= set(store.topics())
    searcher = Searcher(store)
    held_out = [i for i, split in ids.items() if split == "val"]
    rows = store._all("SELECT chunk_id, split FROM chunks")
    assert dict(rows) == ids and held_out


def test_topic_and_document_filters_and_unknown_ones(evidence_ws):
    searcher = Searcher(open_store(evidence_ws.workspace / "index.sqlite"))
    hits = searcher.search("measurement of the liability", 6, topic="ASC_Leases")
    assert hits and {h.chunk.topic for h in hits} == {"ASC_Leases"}
    hits = searcher.search("encoding", 3, document="Debian_Docs/libtasn1.pdf")
    assert hits and {h.chunk.source for h in hits} == {"Debian_Docs/libtasn1.pdf"}
    with pytest.raises(UnknownFilter, match="unknown topic 'ASC_Nope'.*ASC_Leases"):
        searcher.search("lease", 3, topic="ASC_Nope")
    with pytest.raises(UnknownFilter, match="unknown document 'x.pdf'.*Debian_Docs/libtasn1.pdf"):
        searcher.search("lease", 3, document="x.pdf")
    assert searcher.search("zebra giraffe xylophone", 3) == []


def _copy_ws(evidence_ws, tmp_path: Path):
    import shutil

    from strata.settings import Settings

    shutil.copytree(evidence_ws.workspace, tmp_path / "copy")
    return Settings.resolve(workspace=tmp_path / "copy", base_model=evidence_ws.base_model, env={})


def test_index_survives_kill_9_mid_build(evidence_ws, base_gguf, tmp_path):
    """A build killed while writing leaves the old index serving; the next build clears the dead temp file."""
    settings = _copy_ws(evidence_ws, tmp_path)
    index = settings.workspace / "index.sqlite"
    before = index.read_bytes()
    old = Searcher(open_store(index))
    with settings.val_jsonl.open("a") as handle:  # a changed dataset: the new index would differ
        row = json.loads(settings.train_jsonl.read_text().splitlines()[0])
        handle.write(json.dumps({**row, "id": "extra-chunk"}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WORKSPACE": str(settings.workspace),
           "BASE_MODEL": settings.base_model}
    # with an embedder the build spends seconds embedding before and while it writes the temp file
    proc = subprocess.Popen([sys.executable, "-m", "strata", "build", "index", "--no-progress", "--embedding-model",
                             str(base_gguf)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(settings.workspace.glob("index.sqlite.tmp-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(settings.workspace.glob("index.sqlite.tmp-*")), "the build was killed before writing"
    assert index.read_bytes() == before
    assert old.search("When does a contract contain a lease?", 3)[0].chunk.source == "ASC_Leases/ASC_Leases.pdf"
    fresh = Searcher(open_store(index))
    assert fresh.meta.n_chunks == old.meta.n_chunks and fresh.meta.embedder is None

    from strata.index.builder import build_index

    summary = build_index(settings, progress=False, echo=lambda _: None)
    assert summary["chunks"] == old.meta.n_chunks + 1
    assert not list(settings.workspace.glob("index.sqlite.tmp-*"))  # the dead build's temp file is gone
    assert old.search("lease", 1)  # a reader that opened the old file keeps reading it


def test_a_mismatched_index_is_refused_at_start_with_both_fingerprints(evidence_ws, base_gguf, tmp_path):
    from strata.serve.config import ServeConfig
    from strata.serve.evidence import open_evidence

    settings = _copy_ws(evidence_ws, tmp_path)
    config = ServeConfig(model=base_gguf, workspace=settings.workspace)
    evidence = open_evidence(config)
    assert evidence.searcher is not None and "lexical" in evidence.note and "no vectors" in evidence.note
    evidence.close()
    built = open_store(settings.workspace / "index.sqlite").meta().dataset
    with settings.train_jsonl.open("a") as handle:
        handle.write(settings.val_jsonl.read_text().splitlines()[0] + "\n")
    now = dataset_fingerprint(settings.train_jsonl, settings.val_jsonl)
    with pytest.raises(StrataError, match=f"built for dataset {built}.*serves dataset {now}"):
        open_evidence(config)
    (settings.merged).mkdir(parents=True, exist_ok=True)
    (settings.merged / "merge_record.json").write_text(json.dumps({"base_fingerprint": "f" * 32}))
    with pytest.raises(StrataError, match=f"base {'f' * 32}"):
        open_evidence(config)


def test_bad_stores_get_clear_errors(tmp_path, base_gguf):
    with pytest.raises(StrataError, match="no evidence index at .*strata build index"):
        open_store(tmp_path / "missing.sqlite")
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # a half-written file
    with pytest.raises(StrataError, match="not a readable evidence index"):
        Searcher(open_store(broken))
    from strata.ports import free_port

    port = free_port()
    with pytest.raises(StrataError) as caught:
        open_store(f"postgresql://strata@127.0.0.1:{port}/evidence")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message, message
    # the same from `strata serve`: one line, exit code 1, before it listens
    result = subprocess.run([sys.executable, "-m", "strata", "serve", "--model", str(base_gguf), "--index",
                             f"postgresql://strata@127.0.0.1:{port}/evidence"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], result.stderr


def test_strata_build_index_cli(evidence_ws, tmp_path):
    from click.testing import CliRunner

    from strata.cli import main

    settings = _copy_ws(evidence_ws, tmp_path)
    (settings.workspace / "index.sqlite").unlink()
    result = CliRunner().invoke(main, ["build", "index", "--no-progress", "--workspace", str(settings.workspace)],
                                env={"BASE_MODEL": settings.base_model, "EMBEDDING_MODEL": "none"})
    assert result.exit_code == 0, result.output
    assert "lexical only (no --embedding-model)" in result.output and (settings.workspace / "index.sqlite").is_file()
    settings.val_jsonl.unlink()
    missing = CliRunner().invoke(main, ["build", "index", "--workspace", str(settings.workspace)])
    assert missing.exit_code == 1 and "strata build dataset" in missing.output
