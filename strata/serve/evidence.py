"""The server's evidence: the index (opened and checked at start), the optional query embedder and the adapter
bindings, joined for /gen/ask and /adapters/bindings. Reads the store only; the index is built by the build stage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from strata.errors import StrataError
from strata.index.fingerprints import check_meta, recorded_base, release_index, workspace_dataset
from strata.index.search import Searcher
from strata.index.store import INDEX_FILE, open_store
from strata.serve.bindings import Bindings
from strata.serve.config import ServeConfig
from strata.settings import Settings


@dataclass
class Evidence:
    """What /gen/ask retrieves from (None searcher: no index, /gen/ask answers 503 saying how to build one)."""

    searcher: Searcher | None
    bindings: Bindings
    note: str  # how retrieval runs, for /health and the log

    def close(self) -> None:
        if self.searcher is not None:
            if self.searcher.embed is not None:
                self.searcher.embed.close()
            self.searcher.store.close()


def _where(config: ServeConfig) -> str | None:
    if config.index:
        return config.index
    if config.release:
        found = release_index(Path(config.release["path"]))
        return str(found) if found else None
    default = Path(config.workspace or Settings.resolve().workspace) / INDEX_FILE
    return str(default) if default.is_file() else None


def open_evidence(config: ServeConfig) -> Evidence:
    """Open and check the index at start: a missing named index, an unreachable Postgres, or an index built for
    another dataset, base or embedder is a StrataError (the server does not start)."""
    workspace = Path(config.workspace or Settings.resolve().workspace)
    release_root = Path(config.release["path"]) if config.release else None
    bindings = Bindings(workspace / "bindings.json", seed=release_root / "bindings.json" if release_root else None,
                        roots=[p for p in (release_root / "peft" if release_root else None, workspace / "peft") if p])
    where = _where(config)
    if where is None:
        if config.embedding_model:
            raise StrataError(f"--embedding-model is set but there is no evidence index ({workspace / INDEX_FILE} "
                              "does not exist): build one with `strata build index`, or pass --index.")
        return Evidence(None, bindings, f"no evidence index ({workspace / INDEX_FILE} does not exist; build it "
                                        "with `strata build index`): /gen/ask answers 503")
    store = open_store(where)
    try:
        meta = store.meta()
        embed = None
        model = config.embedding_model or _default_embedder(meta.embedder)
        if model:
            from strata.index.embedder import GgufEmbedder, fingerprint

            check_meta(meta, store.where, None, None, fingerprint(model))
            embed = GgufEmbedder(model, max(1, config.n_threads // 2))
        settings = Settings.resolve(workspace=workspace)
        if config.release:
            base = _release_base(release_root)
            dataset = None  # the release carries its own index: its dataset is the one it was built from
        else:
            base, dataset = recorded_base(settings), workspace_dataset(settings)
        check_meta(meta, store.where, dataset, base, None)
        searcher = Searcher(store, embed)
    except BaseException:
        store.close()
        raise
    why = "" if searcher.dense else (" (no --embedding-model)" if meta.embedder else
                                     " (the index holds no vectors: built without --embedding-model)")
    note = f"evidence index {store.where}: {meta.n_chunks} chunks, {meta.fingerprint()}; {searcher.mode}{why}"
    return Evidence(searcher, bindings, note)


def _default_embedder(recorded: str | None) -> Path | None:
    """The kit's MiniLM GGUF (`strata kit embedder`) when the index holds its vectors and none was named."""
    from strata.index.embedder import fingerprint
    from strata.kit.embedder import default_embedder

    path = default_embedder() if recorded else None
    return path if path is not None and fingerprint(path) == recorded else None


def _release_base(root: Path) -> str | None:
    """The base fingerprint a pulled release's manifest records."""
    try:
        return json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("base_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
