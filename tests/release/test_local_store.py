"""Local-folder store, end to end on the kit: publish -> list -> show -> promote -> pull -> QA of the release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from strata.files import sha256_file
from strata.modelfolder import fingerprint
from strata.settings import Settings


def test_publish_list_show_pull_and_qa_the_release(cli, publish, build_pod: Settings, store: str, workspace: Settings,
                                                   tiny_base: Path, small_prompts: Path) -> None:
    done = publish(store, "--version", "v1")
    assert done.exit_code == 0, done.output
    assert "published strata@v1" in done.output and "latest -> v1" in done.output

    listed = cli("release", "list", "--store", store)
    assert listed.exit_code == 0, listed.output
    assert listed.output.split()[0] == "strata@v1" and "QA passed" in listed.output and "latest" in listed.output
    assert "pulled" not in listed.output and "not pulled into" in cli("release", "show", "strata", "--store", store).output

    shown = cli("release", "show", "strata@latest", "--store", store, "--json")
    manifest = json.loads(shown.output)
    assert (manifest["name"], manifest["version"]) == ("strata", "v1")
    base_fp = fingerprint(tiny_base)
    assert manifest["base_fingerprint"] == base_fp
    files = {f["path"]: f for f in manifest["files"]}
    local = {"model/strata.Q4_K_M.gguf": build_pod.model_path,
             "model/strata.Q4_K_M.fidelity.json": build_pod.models / "strata.Q4_K_M.fidelity.json",
             "peft/level1/adapter.gguf": build_pod.peft / "level1" / "adapter.gguf",
             "peft/ASC_Leases/training_summary.json": build_pod.peft / "ASC_Leases" / "training_summary.json"}
    for path, source in local.items():
        assert files[path]["sha256"] == sha256_file(source) and files[path]["size"] == source.stat().st_size
    roles = {f["role"] for f in manifest["files"]}
    assert {"model", "fidelity", "adapter", "adapter-config", "training-summary", "qa-results", "qa-report"} <= roles
    assert not any(f["path"].endswith("adapter_model.safetensors") for f in manifest["files"])  # only --with-peft
    adapters = {a["name"]: a for a in manifest["adapters"]}
    assert adapters["ASC_Leases"]["topic"] == "ASC_Leases" and adapters["ASC_Leases"]["level"] == 2
    assert adapters["ASC_Leases"]["levels_below"] == ["level1"] and adapters["level1"]["levels_below"] == []
    assert adapters["level1"]["base_fingerprint"] == base_fp
    assert [g["passed"] for g in manifest["qa"]["gates"]] == [True] and manifest["fidelity"]["passed"] is True

    promoted = cli("release", "promote", "strata@v1", "--tag", "prod", "--store", store)
    assert promoted.exit_code == 0 and "strata@prod -> v1" in promoted.output, promoted.output

    pulled = cli("release", "pull", "strata@prod", "--store", store, "--quiet")
    assert pulled.exit_code == 0, pulled.output
    root = workspace.workspace / "releases" / "strata" / "v1"
    assert f"model: {root / 'model' / 'strata.Q4_K_M.gguf'}" in pulled.output
    for entry in manifest["files"]:
        assert sha256_file(root / entry["path"]) == entry["sha256"]
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert json.loads(cli("release", "list", "--store", store, "--json").output)[0]["pulled"] is True
    assert f"local copy: {root}" in cli("release", "show", "strata@prod", "--store", store).output

    again = cli("release", "pull", "strata@v1", "--store", store, "--quiet")
    assert "already in" in again.output and "nothing to pull" in again.output

    # A separate process, as on a pod (in-process, absl's log handler would close pytest's captured stderr).
    qa = subprocess.run([sys.executable, "-m", "strata", "qa", "--release", "strata@prod", "--store", store,
                         "--prompts", str(small_prompts), "--max-tokens", "6", "--fail-under", "f1=0", "--quiet"],
                        capture_output=True, text=True, timeout=600)
    assert qa.returncode == 0, qa.stdout + qa.stderr
    results = json.loads(next(workspace.runs.glob("qa-*/results.json")).read_text())
    assert results["target"]["model"] == str(root / "model" / "strata.Q4_K_M.gguf")
    assert results["target"]["release"]["version"] == "v1" and results["target"]["release"]["tag"] == "prod"
    assert {(layer["name"], layer["status"]) for layer in results["layers"]} == {
        ("base", "ok"), ("level1", "ok"), ("ASC_Leases", "ok")}


def test_versions_are_immutable(publish, store: str, cli, one_line_error) -> None:
    publish(store, "--version", "v1")
    same = publish(store, "--version", "v1")
    assert same.exit_code == 0 and "already published" in same.output and "identical files" in same.output
    other = publish(store, "--version", "v1", "--adapter", "level1", ok=False)
    error = one_line_error(other)
    assert "strata@v1 is already published" in error and "peft/ASC_Leases" in error and "new --version" in error
    assert "ASC_Leases" in cli("release", "show", "strata@v1", "--store", store).output  # unchanged


def test_latest_follows_publish_and_unchanged_files_are_not_uploaded_again(publish, store: str, cli) -> None:
    publish(store, "--version", "v1")
    second = publish(store, "--version", "v2", "--with-peft")
    assert second.exit_code == 0 and "already in" in second.output and "latest -> v2" in second.output
    listed = cli("release", "list", "--store", store, "--json")
    rows = {r["version"]: r for r in json.loads(listed.output)}
    assert rows["v2"]["tags"] == ["latest"] and rows["v1"]["tags"] == []
    manifest = json.loads(cli("release", "show", "strata", "--store", store, "--json").output)
    assert manifest["version"] == "v2"
    assert any(f["path"] == "peft/level1/adapter_model.safetensors" and f["role"] == "peft" for f in manifest["files"])


def test_promote_is_gated_by_qa(publish, store: str, cli, one_line_error, build_pod: Settings,
                                small_prompts: Path, tmp_path: Path) -> None:
    from strata.qa.harness import run_qa

    failing = run_qa(Settings.resolve(workspace=tmp_path / "qa", model_path=str(build_pod.model_path), n_threads=2,
                                      n_ctx=512, env={}),
                     layers=[], prompts=small_prompts, max_tokens=4, fail_under=["f1=2"], progress=False,
                     echo=lambda line: None)
    publish(store, "--version", "bad", "--qa", failing["report_dir"])
    publish(store, "--version", "none", "--no-qa")

    refused = one_line_error(cli("release", "promote", "strata@bad", "--tag", "prod", "--store", store))
    assert "refusing to promote strata@bad" in refused and "QA gate f1>=2 failed" in refused and "--force" in refused
    no_qa = one_line_error(cli("release", "promote", "strata@none", "--tag", "prod", "--store", store))
    assert "carries no QA results" in no_qa
    assert "prod" not in cli("release", "list", "--store", store).output

    forced = cli("release", "promote", "strata@bad", "--tag", "prod", "--force", "--store", store)
    assert forced.exit_code == 0 and "warning (--force): QA gate f1>=2 failed" in forced.output
    assert json.loads(cli("release", "show", "strata@prod", "--store", store, "--json").output)["version"] == "bad"
