"""The release round trip: `release publish` packs the evidence index (role index) and the bindings, and a fresh
replica's `serve --release` answers /gen/ask from them, under the bound adapter."""

from __future__ import annotations

import json
import shutil

import httpx

from strata.release.publish import publish
from strata.release.stores import open_store as open_release_store
from strata.serve.config import parse_argv
from strata.serve.server import serve_in_thread
from strata.settings import Settings


def test_release_round_trip_with_the_index(evidence_ws, base_gguf, lora_dirs, tmp_path):
    pod = Settings.resolve(workspace=tmp_path / "pod", base_model=evidence_ws.base_model, env={})
    shutil.copytree(evidence_ws.workspace, pod.workspace)
    pod.model_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(base_gguf, pod.model_path)
    shutil.copytree(lora_dirs["alpha"], pod.peft / "ASC_Leases")
    (pod.workspace / "bindings.json").write_text(json.dumps(
        {"format": 1, "topics": {"ASC_Leases": [{"name": "ASC_Leases", "scale": 1.0}]}, "documents": {}}))
    store = str(tmp_path / "store")
    manifest, created = publish(pod, open_release_store(store), name="evid", version="v1", no_qa=True,
                                progress=False, echo=lambda _: None)
    roles = {f.path: f.role for f in manifest.files}
    assert created and roles["index/index.sqlite"] == "index" and roles["bindings.json"] == "bindings"

    replica = tmp_path / "replica"
    config = parse_argv(["--release", "evid@v1", "--store", store, "--n_ctx", "2048", "--n_threads", "2"],
                        env={"WORKSPACE": str(replica)})
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=300) as client:
        health = client.get("/health").json()
        assert str(replica / "releases" / "evid" / "v1" / "index" / "index.sqlite") in health["evidence"]
        reply = client.post("/gen/ask", json={"prompt": "When does a contract contain a lease?",
                                              "topic": "ASC_Leases", "max_tokens": 4})
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Strata-Adapters"] == "ASC_Leases@1"  # the release's binding, its adapter
        assert reply.json()["citations"][0]["source"] == "ASC_Leases/ASC_Leases.pdf"
        assert client.get("/adapters/bindings").json()["topics"]["ASC_Leases"] == [{"name": "ASC_Leases",
                                                                                   "scale": 1.0}]
