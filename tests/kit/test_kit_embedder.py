"""all-MiniLM-L6-v2 from its wheel, converted by llama.cpp: same cosine ranking as sentence-transformers' recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.real_model

QUERY = "How does a lessee account for a lease at the commencement date?"
CANDIDATES = [
    "At commencement, a lessee recognises a right-of-use asset and a lease liability.",
    "The lease liability is measured at the present value of the lease payments not yet paid.",
    "Revenue is recognised when control of a promised good or service transfers to the customer.",
    "Goodwill acquired in a business combination is tested for impairment at least annually.",
    "The Eiffel Tower was built from 1887 to 1889 for the World's Fair in Paris.",
    "Preheat the oven to 200 degrees and bake the bread for forty minutes.",
]


def reference_embeddings(hf: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2 recipe with plain transformers: BERT, mean pooling, L2 normalise."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(hf), AutoModel.from_pretrained(hf).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def llama_embeddings(gguf: Path, texts: list[str]) -> np.ndarray:
    from strata.export.gguf_load import open_model

    llm = open_model(gguf, embedding=True, n_ctx=512, n_threads=2)
    try:
        vectors = np.array([llm.embed(text) for text in texts], dtype=np.float64)
    finally:
        llm.close()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_minilm_gguf_ranks_like_sentence_transformers(real_cache: Path, tmp_path: Path) -> None:
    from strata.cli import main
    from strata.kit.embedder import EMBEDDER_GGUF, default_embedder, embedder_hf

    assert default_embedder() is None or default_embedder() == real_cache / EMBEDDER_GGUF
    result = CliRunner().invoke(main, ["kit", "embedder", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    copy = Path(result.output.strip().splitlines()[-1])
    assert copy == tmp_path / "models" / "all-MiniLM-L6-v2-f16.gguf" and copy.is_file()
    assert default_embedder() == real_cache / EMBEDDER_GGUF
    assert 40e6 < copy.stat().st_size < 60e6  # F16: 22.7 M parameters

    texts = [QUERY, *CANDIDATES]
    want = reference_embeddings(embedder_hf(echo=lambda _: None), texts)
    got = llama_embeddings(copy, texts)
    want_cos, got_cos = want[1:] @ want[0], got[1:] @ got[0]
    print("\ncosine to the query (transformers / llama.cpp):",
          ", ".join(f"{w:.3f}/{g:.3f}" for w, g in zip(want_cos, got_cos)))
    assert list(np.argsort(-got_cos)) == list(np.argsort(-want_cos))
    assert np.abs(got_cos - want_cos).max() < 0.01
    assert np.abs((got * want).sum(axis=1) - 1).max() < 1e-3  # the same vectors, not only the same order



def test_build_convert_embedding_writes_a_gguf_llama_cpp_embeds_with(real_cache: Path, workspace, tmp_path: Path):
    """`strata build convert --embedding HF_DIR` (the command the index's errors name) converts MiniLM's folder and
    checks llama.cpp embeds with it; a folder that is no model leaves nothing behind."""
    from strata.cli import main
    from strata.kit.embedder import embedder_hf

    hf = embedder_hf(echo=lambda _: None)
    out = tmp_path / "minilm.gguf"
    result = CliRunner().invoke(main, ["build", "convert", "--embedding", str(hf), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "384 dims" in result.output and 40e6 < out.stat().st_size < 60e6
    got = llama_embeddings(out, [QUERY, *CANDIDATES])
    assert np.argmax(got[1:] @ got[0]) == 0  # the relevant candidate ranks first, as sentence-transformers has it

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = CliRunner().invoke(main, ["build", "convert", "--embedding", str(empty), "--out", str(tmp_path / "x.gguf")])
    assert result.exit_code == 1 and "holds no readable config.json" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("gguf") or ".partial" in p.name) == ["minilm.gguf"]
