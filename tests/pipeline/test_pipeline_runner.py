"""The train_all runner on small real stage functions: manifest, skip when unchanged, resume after a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.pipeline import Options, Stage, run_stages
from strata.runmanifest import manifests, path_identity


def _copy_upper(src_key: str, dest: str, calls: list[str]):
    def run(settings, options, echo):
        calls.append(dest)
        if (settings.peft / "FAIL").exists() and dest == "b":
            raise StrataError("injected failure in b")
        source = settings.train_jsonl if src_key == "train" else settings.peft / src_key / "out.txt"
        folder = settings.peft / dest
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out.txt").write_text(source.read_text().upper() + options.quant)
        echo(f"{dest}: wrote {folder}")
        return [str(folder)]
    return run


@pytest.fixture
def chain(workspace):
    calls: list[str] = []
    stages = [Stage("a", _copy_upper("train", "a", calls), ("train",), ("peft:a",)),
              Stage("b", _copy_upper("a", "b", calls), ("peft:a", "opt:quant"), ("peft:b",)),
              Stage("c", _copy_upper("b", "c", calls), ("peft:b",), ("peft:c",))]
    workspace.train_jsonl.write_text('{"text": "one"}\n')
    return workspace, stages, calls


def _statuses(record):
    return [s["status"] for s in record["stages"]]


def test_second_run_skips_everything_and_manifest_records_each_stage(chain):
    settings, stages, calls = chain
    lines: list[str] = []
    first = run_stages(settings, stages, Options(), echo=lines.append)
    assert _statuses(first) == ["ok", "ok", "ok"] and calls == ["a", "b", "c"]
    assert any(line.startswith("a: wrote") for line in lines)  # each stage's own output is passed through
    second = run_stages(settings, stages, Options(), echo=lines.append)
    assert _statuses(second) == ["skipped"] * 3 and calls == ["a", "b", "c"]
    saved = json.loads(Path(second["manifest"]).read_text())
    assert saved["status"] == "ok" and len(manifests(settings.runs)) == 2
    entry = saved["stages"][0]
    assert entry["inputs"]["train"]["hash"] == path_identity(settings.train_jsonl)
    assert entry["inputs"]["train"]["path"] == str(settings.train_jsonl)
    assert entry["outputs"] == [str(settings.peft / "a")] and entry["from_run"] == first["run_id"]
    assert all("duration_s" in s and s["error"] is None for s in saved["stages"])


def test_failure_is_recorded_and_rerun_continues_from_the_failed_stage(chain):
    settings, stages, calls = chain
    run_stages(settings, stages, Options(), echo=lambda _: None)
    (settings.peft / "FAIL").touch()
    settings.train_jsonl.write_text('{"text": "two"}\n')
    with pytest.raises(StrataError, match="(?s)stage b failed.*continues from b"):
        run_stages(settings, stages, Options(), echo=lambda _: None)
    failed = json.loads(manifests(settings.runs)[-1].read_text())
    assert failed["status"] == "failed" and _statuses(failed) == ["ok", "failed", "not run"]
    assert "injected failure" in failed["stages"][1]["error"]
    calls.clear()
    (settings.peft / "FAIL").unlink()
    again = run_stages(settings, stages, Options(), echo=lambda _: None)
    assert _statuses(again) == ["skipped", "ok", "ok"] and calls == ["b", "c"]
    assert (settings.peft / "c" / "out.txt").read_text().startswith('{"TEXT": "TWO"}')


def test_changed_option_missing_output_and_force(chain):
    settings, stages, calls = chain
    run_stages(settings, stages, Options(), echo=lambda _: None)
    calls.clear()
    assert _statuses(run_stages(settings, stages, Options(quant="Q8_0"), echo=lambda _: None)) == ["skipped", "ok", "ok"]
    import shutil

    shutil.rmtree(settings.peft / "c")
    calls.clear()
    assert _statuses(run_stages(settings, stages, Options(quant="Q8_0"), echo=lambda _: None)) == ["skipped", "skipped", "ok"]
    assert _statuses(run_stages(settings, stages, Options(quant="Q8_0"), force=True, echo=lambda _: None)) == ["ok"] * 3


def test_moving_files_between_pooled_roots_keeps_identity(tmp_path):
    raw, archive = tmp_path / "raw", tmp_path / "archive"
    (raw / "T").mkdir(parents=True)
    archive.mkdir()
    (raw / "T" / "a.pdf").write_bytes(b"%PDF-1.7 a")
    before = path_identity(raw, archive)
    (archive / "T").mkdir()
    (raw / "T" / "a.pdf").rename(archive / "T" / "a.pdf")
    assert path_identity(raw, archive) == before
    (raw / "T" / "b.pdf").write_bytes(b"%PDF-1.7 b")
    assert path_identity(raw, archive) != before


def test_train_all_under_a_launcher_says_to_use_nproc(workspace, monkeypatch):
    """torchrun / accelerate launch set WORLD_SIZE; `build all` runs its stages once and starts trainers itself."""
    from strata.pipeline import run_all

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StrataError, match=r"without torchrun / accelerate launch, as `strata build all --nproc N`"):
        run_all(workspace, levels=(1,), echo=lambda _: None)
    assert not list(workspace.runs.iterdir())


def test_switching_the_base_between_hub_ids_reruns_what_reads_it(workspace, monkeypatch):
    """A hub id is never a path: the base is hashed as the id plus its models/<name> folder, so another id (or the
    same id's folder replaced) re-runs the stages that read the base; --base-model counts like BASE_MODEL."""
    from strata.settings import Settings

    for name in ("model-a", "model-b"):
        (workspace.models / name).mkdir()
        (workspace.models / name / "config.json").write_text(json.dumps({"name": name}))
    calls: list[str] = []
    stages = [Stage("reads-base", lambda settings, options, echo: calls.append(settings.base_model), ("base",))]

    def run(base: str, options: Options = Options()) -> list[str]:
        monkeypatch.setenv("BASE_MODEL", base)
        return _statuses(run_stages(Settings.resolve(), stages, options, echo=lambda _: None))

    assert run("org-one/model-a") == ["ok"]
    assert run("org-one/model-a") == ["skipped"]
    assert run("org-two/model-b") == ["ok"] and calls == ["org-one/model-a", "org-two/model-b"]
    (workspace.models / "model-b" / "config.json").write_text(json.dumps({"name": "model-b", "revision": 2}))
    assert run("org-two/model-b") == ["ok"]
    assert run("org-two/model-b", Options(train={"base_model": "org-one/model-a"})) == ["ok"]
    assert run("org-two/model-b", Options(train={"base_model": "org-one/model-a"})) == ["skipped"]
