"""Settings precedence: flag > env > default, with paths anchored at WORKSPACE."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.settings import Settings


def test_defaults_follow_seed_layout(tmp_path):
    s = Settings.resolve(env={"WORKSPACE": str(tmp_path)})
    assert s.workspace == tmp_path
    assert Path(s.base_model) == tmp_path / "models" / "hf_base"
    assert s.model_path == tmp_path / "models" / "strata.Q4_K_M.gguf"
    assert s.pdf_archive == tmp_path / "data" / "archive"
    assert s.pretest_json == tmp_path / "data" / "processed" / "pdf_pretest.json"
    assert s.train_jsonl.name == "train.jsonl" and s.merged == tmp_path / "peft" / "merged"
    assert s.n_ctx == 2048 and s.n_threads >= 1


def test_env_beats_default_and_flag_beats_env(tmp_path):
    env = {"WORKSPACE": str(tmp_path / "env"), "N_CTX": "512", "MODEL_PATH": "/abs/m.gguf", "MODEL_NAME": "x"}
    s = Settings.resolve(env=env)
    assert s.workspace == tmp_path / "env" and s.n_ctx == 512 and s.model_path == Path("/abs/m.gguf")
    s = Settings.resolve(workspace=tmp_path / "flag", n_ctx=4096, model_path="rel.gguf", env=env)
    assert s.workspace == tmp_path / "flag" and s.n_ctx == 4096
    assert s.model_path == tmp_path / "flag" / "rel.gguf"


def test_model_name_shapes_default_model_path(tmp_path):
    s = Settings.resolve(env={"WORKSPACE": str(tmp_path), "MODEL_NAME": "mistral-7b"})
    assert s.model_path.name == "mistral-7b.Q4_K_M.gguf"


def test_empty_env_value_falls_back_to_default(tmp_path):
    assert Settings.resolve(env={"WORKSPACE": str(tmp_path), "N_CTX": " "}).n_ctx == 2048


def test_hub_id_stays_a_string_local_path_is_anchored(tmp_path):
    assert Settings.resolve(env={"WORKSPACE": str(tmp_path), "BASE_MODEL": "mistralai/Mistral-7B-v0.1"}).base_model == "mistralai/Mistral-7B-v0.1"
    assert Settings.resolve(env={"WORKSPACE": str(tmp_path), "BASE_MODEL": "models/hf_x"}).base_model == str(tmp_path / "models" / "hf_x")


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_bad_numbers_name_the_variable(tmp_path, value):
    with pytest.raises(ValueError, match="N_THREADS"):
        Settings.resolve(env={"WORKSPACE": str(tmp_path), "N_THREADS": value})


def test_autouse_fixture_isolates_workspace(workspace, tmp_path):
    assert workspace.workspace == tmp_path / "ws"
    assert (workspace.workspace / "data" / "raw_pdfs").is_dir()
