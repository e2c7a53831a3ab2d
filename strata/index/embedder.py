"""A GGUF sentence embedder run by llama.cpp (a BERT-family model converted with llama.cpp's converter, or any
GGUF, mean-pooled): unit vectors for chunks at build time and for questions at serve time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from strata.errors import StrataError
from strata.files import sha256_file

MAX_TOKENS = 512  # a chunk is at most a few hundred tokens; longer text is cut, not refused


def fingerprint(path: Path) -> str:
    """The embedder's identity in the index meta: file name and sha256 (vectors of another model mean nothing)."""
    path = Path(path)
    return f"{path.name}:{sha256_file(path)[:16]}"


class GgufEmbedder:
    """One llama.cpp context in embedding mode, used by one thread at a time."""

    def __init__(self, path: Path, n_threads: int = 2) -> None:
        path = Path(path)
        if not path.is_file():
            raise StrataError(f"embedding model {path} not found: pass a GGUF sentence embedder (e.g. the one "
                              "`strata kit embedder` writes, or `strata build convert --embedding HF_DIR`).")
        import llama_cpp

        self.path = path
        self.fingerprint = fingerprint(path)
        self._lock = threading.Lock()
        try:
            self._llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=MAX_TOKENS, n_batch=MAX_TOKENS,
                                        n_ubatch=MAX_TOKENS, n_threads=n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise StrataError(f"cannot load embedding model {path}: {exc}") from None

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32 unit vectors, one text at a time (mean-pooled when the model does not pool)."""
        out = []
        with self._lock:
            for text in texts:
                value = np.asarray(self._llm.embed(text or " ", truncate=True), dtype=np.float32)
                vector = value.mean(axis=0) if value.ndim == 2 else value
                out.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
        return np.stack(out)

    @property
    def dims(self) -> int:
        return int(self._llm.n_embd())

    def close(self) -> None:
        with self._lock:
            self._llm.close()
