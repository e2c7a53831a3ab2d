"""`strata build index`: every chunk of train.jsonl and val.jsonl into the store, fingerprinted by dataset + base
(+ embedder), replacing the old index only once the new one is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from strata.files import now_iso
from strata.index.records import Meta, dataset_fingerprint, read_chunks
from strata.index.store import INDEX_FILE, is_postgres, open_store
from strata.index.terms import words
from strata.settings import Settings

Echo = Callable[[str], None]


def default_index(settings: Settings) -> Path:
    return settings.workspace / INDEX_FILE


def build_index(settings: Settings, index: str | Path | None = None, *, embedding_model: str | Path | None = None,
                base: str | None = None, progress: bool = True, echo: Echo = print) -> dict[str, Any]:
    """Build the evidence index at `index` (default WORKSPACE/index.sqlite, or a postgresql:// URL); returns a
    summary (where, chunks, fingerprints, mode)."""
    from tqdm import tqdm

    target = str(index) if index is not None and is_postgres(index) else Path(index or default_index(settings))
    chunks = read_chunks(settings.train_jsonl, settings.val_jsonl)
    indexed = [" ".join(words(f"{c.heading}\n{c.text}")) for c in chunks]
    meta = Meta(dataset=dataset_fingerprint(settings.train_jsonl, settings.val_jsonl),
                base=base if base is not None else base_fingerprint(settings), n_chunks=len(chunks),
                avg_len=sum(len(w.split()) for w in indexed) / len(chunks), created=now_iso())
    vectors, embedder = None, None
    if embedding_model:
        from strata.index.embedder import GgufEmbedder

        embedder = GgufEmbedder(Path(embedding_model), settings.n_threads)
        meta.embedder, meta.dims = embedder.fingerprint, embedder.dims

        def vectors(i: int) -> list[float]:  # computed while the temp file is written: one pass, one bar
            return embedder.embed([f"{chunks[i].heading}\n{chunks[i].text}"])[0]
    store = open_store(target, create=True)
    try:
        label = "index + embed" if vectors is not None else "index"
        with tqdm(total=len(chunks), desc=label, unit="chunk", disable=None if progress else True) as bar:
            store.write(meta, chunks, indexed, vectors, bar.update)
    finally:
        store.close()
        if embedder is not None:
            embedder.close()
    mode = "lexical+dense" if vectors is not None else "lexical only (no --embedding-model)"
    echo(f"evidence index: {len(chunks)} chunks from {len({c.source for c in chunks})} PDFs at {store.where}; "
         f"{meta.fingerprint()}; {mode}")
    return {"index": store.where, "chunks": len(chunks), "dataset": meta.dataset, "base": meta.base,
            "embedder": meta.embedder, "mode": "lexical+dense" if vectors is not None else "lexical"}


def base_fingerprint(settings: Settings) -> str | None:
    """The HF base the dataset was chunked for (its merge record's base, else BASE_MODEL's fingerprint), or None."""
    from strata.index.fingerprints import recorded_base

    recorded = recorded_base(settings)
    if recorded:
        return recorded
    folder = Path(settings.base_model)
    if (folder / "config.json").is_file():
        from strata.modelfolder import fingerprint  # plain hashing, but build-side: never imported when serving

        return fingerprint(folder)
    return None
