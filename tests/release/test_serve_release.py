"""`strata serve --release`: pulled if needed, the release named by /health and /v1/models, its adapter paths
loadable; two replicas pulled from one S3 store answer alike; a pulled copy serves when the store is down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from strata.errors import StrataError
from strata.serve.config import parse_argv
from strata.serve.server import serve_in_thread

CHAT = {"messages": [{"role": "user", "content": "When does a contract contain a lease?"}], "max_tokens": 10,
        "temperature": 0.0, "seed": 0}
SMALL = ["--n_ctx", "512", "--n_threads", "1", "--n_batch", "128"]


def _reply(client: httpx.Client) -> str:
    answer = client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"]


def test_serve_a_release_by_tag(publish, store: str, cli, tmp_path: Path) -> None:
    publish(store, "--version", "v1")
    assert cli("release", "promote", "strata@v1", "--tag", "prod", "--store", store).exit_code == 0
    ws = tmp_path / "serving"
    config = parse_argv(["--release", "strata@prod", "--store", store, "--workspace", str(ws), "--lora", "level1",
                         *SMALL], env={})
    root = ws / "releases" / "strata" / "v1"
    assert config.model == root / "model" / "strata.Q4_K_M.gguf" and config.model.is_file()
    assert config.loras == [(str(root / "peft" / "level1"), 1.0)]
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=120) as client:
        health = client.get("/health").json()
        assert health["release"] == {"name": "strata", "version": "v1", "tag": "prod", "path": str(root),
                                     "adapters": str(root / "peft")}
        assert client.get("/v1/models").json()["release"]["version"] == "v1"
        with_level1 = _reply(client)
        body = {"adapters": [{"path": str(root / "peft" / "ASC_Leases"), "scale": 1.0}]}  # the seed's body shape
        switched = client.post("/lora-adapters", json=body)
        assert switched.status_code == 200, switched.text
        assert [a["path"] for a in client.get("/lora-adapters").json() if a["active"]] == [body["adapters"][0]["path"]]
        assert _reply(client) != with_level1


def test_two_replicas_from_one_s3_store_answer_alike(publish, s3_store: str, cli, tmp_path: Path) -> None:
    publish(s3_store, "--version", "v1")
    assert cli("release", "promote", "strata@v1", "--tag", "prod", "--store", s3_store).exit_code == 0
    configs = [parse_argv(["--release", "strata@prod", "--store", s3_store, "--workspace", str(tmp_path / name),
                           *SMALL], env={}) for name in ("replica-a", "replica-b")]
    assert configs[0].model != configs[1].model  # each replica keeps its own verified copy
    with serve_in_thread(configs[0]) as url_a, serve_in_thread(configs[1]) as url_b, \
            httpx.Client(base_url=url_a, timeout=120) as a, httpx.Client(base_url=url_b, timeout=120) as b:
        bare = _reply(a)
        replies = []
        for client, config in ((a, configs[0]), (b, configs[1])):
            path = f"{config.release['adapters']}/ASC_Leases"
            assert client.post("/lora-adapters", json={"adapters": [{"path": path, "scale": 1.0}]}).status_code == 200
            assert client.get("/health").json()["release"]["version"] == "v1"
            replies.append(_reply(client))
    assert replies[0] == replies[1] != bare


def test_a_pulled_release_serves_when_the_store_is_down(publish, store: str, cli, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    publish(store, "--version", "v1")
    assert cli("release", "promote", "strata@v1", "--tag", "prod", "--store", store).exit_code == 0
    ws = str(tmp_path / "serving")
    first = parse_argv(["--release", "strata@prod", "--store", store, "--workspace", ws], env={})
    Path(store).rename(tmp_path / "store-offline")  # the volume is gone
    again = parse_argv(["--release", "strata@prod", "--store", store, "--workspace", ws], env={})
    assert (again.model, again.release["version"]) == (first.model, "v1")
    assert "does not exist" in capsys.readouterr().err
    offline = parse_argv(["--release", "strata@v1", "--workspace", ws], env={})  # no store configured at all
    assert offline.model == first.model
    with pytest.raises(StrataError, match="is not in .* and no store is set"):
        parse_argv(["--release", "strata@canary", "--workspace", ws], env={})


def test_serve_release_bad_input(store: str, publish, tmp_path: Path) -> None:
    publish(store, "--version", "v1")
    with pytest.raises(StrataError, match="no release named 'other'"):
        parse_argv(["--release", "other@prod", "--store", store, "--workspace", str(tmp_path)], env={})
    with pytest.raises(StrataError, match="has no version or tag 'prod'.*strata release promote strata@v1"):
        parse_argv(["--release", "strata@prod", "--store", store, "--workspace", str(tmp_path)], env={})
    with pytest.raises(StrataError, match="either --release NAME@TAG or --model"):
        parse_argv(["--release", "strata@v1", "--model", "m.gguf", "--store", store], env={})


def test_the_serving_side_imports_no_boto3_or_build_stack() -> None:
    code = ("import sys, strata.serve.app, strata.serve.server, strata.serve.config, strata.release.serving, "
            "strata.release.stores; print(sorted(m for m in ('torch', 'transformers', 'peft', 'boto3', 'botocore', "
            "'strata.data', 'strata.train', 'strata.export', 'strata.pipeline', 'strata.qa') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
