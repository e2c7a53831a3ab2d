"""Releases carry soft prompts: published from WORKSPACE/soft_prompts/, listed in the manifest, pulled, and served
by name with `strata serve --release ... --soft-prompt NAME`."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from strata.release.manifest import Manifest
from strata.serve.config import parse_argv
from strata.serve.server import serve_in_thread

pytestmark = pytest.mark.slow


def test_a_release_carries_and_serves_its_soft_prompts(build_pod, soft_prompts, cli, tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    shutil.copytree(build_pod.workspace, pod, ignore=shutil.ignore_patterns("checkpoints", "releases"))
    shutil.copytree(soft_prompts["lessee"], pod / "soft_prompts" / "lessee",
                    ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    store = str(tmp_path / "store")
    result = cli("release", "publish", "--store", store, "--workspace", pod, "--quiet", "--no-qa", "--version", "v1")
    assert result.exit_code == 0, result.output
    assert "1 soft prompts" in result.output
    config = parse_argv(["--release", "strata@v1", "--store", store, "--workspace", str(tmp_path / "serving"),
                         "--soft-prompt", "lessee", "--n_ctx", "512", "--n_threads", "1", "--n_batch", "128"], env={})
    root = config.release["path"]
    manifest = Manifest.from_bytes((Path(root) / "manifest.json").read_bytes(), "manifest")
    assert [s["name"] for s in manifest.soft_prompts] == ["lessee"]
    assert manifest.soft_prompts[0]["fidelity"]["passed"] is True
    assert (Path(root) / "soft_prompts" / "lessee" / "softprompt.gguf").is_file()
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=120) as client:
        state = client.get("/soft-prompts").json()
        assert state["enabled"] and state["default"] == "lessee" and state["available"] == ["lessee"]
        assert state["soft_prompts"][0]["file"].startswith(root)
        body = {"prompt": "What is a lease?", "max_tokens": 8, "temperature": 0}
        with_default = client.post("/v1/completions", json=body)
        assert with_default.headers["x-strata-soft-prompt"] == "lessee"
        plain = client.post("/v1/completions", json=body | {"soft_prompt": False})
        assert with_default.json()["choices"][0]["text"] != plain.json()["choices"][0]["text"]
