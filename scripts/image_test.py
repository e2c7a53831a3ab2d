"""`make image-test`: build the images for real and run them against kit-made models (docker, else buildah)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from strata.ports import free_port

REPO = Path(__file__).resolve().parents[1]
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
BASE_TAG = "localhost/strata-base:bookworm-py311"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3.11,python3-pip,python3-venv,ca-certificates"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
TOPICS = ("ASC_Financial_Accounting", "ASC_Intangibles")
MODEL = "/workspace/models/strata.Q4_K_M.gguf"
CHAT = {"messages": [{"role": "user", "content": "What is a lease?"}], "max_tokens": 12, "temperature": 0.0}
# Sized for 2 shared cores and the tiny model: a few steps at a high lr, so the adapters visibly change replies.
KIT_TRAINING = ["--max-steps", "6", "--lr", "3e-3", "--no-progress"]
KIT_BASE = ["--size", "test", "--pretrain-steps", "40"]
VERSIONS_PY = ("import torch, bitsandbytes, llama_cpp, transformers, peft; print(torch.__version__, "
               "bitsandbytes.__version__, llama_cpp.__version__, transformers.__version__, peft.__version__)")


class ImageTestError(RuntimeError):
    """A build, a container or a check failed; the message says which and where the log is."""


def log(message: str) -> None:
    print(f"[image-test] {message}", flush=True)


def run(cmd: list[str], logfile: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; with a log file, stream everything into it and put its tail in the error."""
    if logfile is None:
        done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
        if done.returncode != 0:
            raise ImageTestError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        raise ImageTestError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}); log {logfile}:\n{tail}")
    return done


def dockerfile_arg(name: str, dockerfile: str) -> str:
    """An ARG default from a Dockerfile: the pins the images build with are the ones the test uses."""
    found = re.search(rf"^ARG {name}=(\S+)$", (REPO / dockerfile).read_text(), re.M)
    if not found:
        raise ImageTestError(f"{dockerfile} has no `ARG {name}=...`")
    return found.group(1)


# --- engines -----------------------------------------------------------------------------------------------


@dataclass
class Container:
    """One running container: the engine's client process, its log file, and how to signal its main process."""

    proc: subprocess.Popen
    logfile: Path
    signal_main: Callable[[signal.Signals], None]
    cleanup: Callable[[], None]

    def output(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


class Docker:
    """A working docker daemon."""

    name = "docker"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0

    def has_image(self, tag: str) -> bool:
        return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0

    def pull(self, ref: str, logfile: Path) -> bool:
        try:
            run(["docker", "pull", ref], logfile)
            return True
        except ImageTestError:
            return False

    def import_rootfs(self, rootfs: Path, tag: str, env: list[str], cmd: list[str], logfile: Path) -> None:
        changes = [f"--change=ENV {item}" for item in env] + [f"--change=CMD {json.dumps(cmd)}"]
        tar = subprocess.Popen(_tar_rootfs(rootfs), stdout=subprocess.PIPE)
        run(["docker", "import", *changes, "-", tag], logfile, stdin=tar.stdout)
        if tar.wait() != 0:
            raise ImageTestError(f"tar of {rootfs} failed")

    def build(self, dockerfile: str, tag: str, args: dict[str, str], contexts: dict[str, Path], logfile: Path) -> None:
        cmd = ["docker", "build", "--progress=plain", "-f", str(REPO / dockerfile), "-t", tag]
        cmd += [f"--build-arg={k}={v}" for k, v in args.items()]
        cmd += [f"--build-context={k}={v}" for k, v in contexts.items()]
        run([*cmd, str(REPO)], logfile)

    def size_mb(self, tag: str) -> float:
        return int(run(["docker", "image", "inspect", "-f", "{{.Size}}", tag]).stdout) / 1e6

    def config(self, tag: str) -> dict:
        return json.loads(run(["docker", "image", "inspect", "-f", "{{json .Config}}", tag]).stdout)

    def start(self, tag: str, argv: list[str] | None, env: dict[str, str], workspace: Path, logfile: Path,
              entrypoint: str | None = None, fresh: bool = True) -> Container:
        name = f"strata-image-test-{os.getpid()}-{int(time.time() * 1000)}"
        cmd = ["docker", "run", "--name", name, "--network", "host", "-v", f"{workspace}:/workspace"]
        cmd += [f"--env={k}={v}" for k, v in env.items()]
        cmd += ["--entrypoint", entrypoint] if entrypoint else []
        cmd += [tag, *(argv or [])]
        out = logfile.open("w")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

        def signal_main(sig: signal.Signals) -> None:  # `docker stop` without its SIGKILL deadline
            run(["docker", "kill", f"--signal={sig.name}", name])

        def cleanup() -> None:
            out.close()
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)

        return Container(proc, logfile, signal_main, cleanup)

    def remove_image(self, tag: str) -> None:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)

    def close(self) -> None:
        pass


class Buildah:
    """buildah with the vfs driver and chroot isolation: works without a daemon, user namespaces or overlayfs."""

    name = "buildah"
    cli = ["buildah", "--storage-driver", "vfs"]

    def __init__(self) -> None:
        self.shared: dict[str, str] = {}  # tag -> a working container reused by one-shot commands (vfs copies the
        # whole image for every `buildah from`: 2 GB for the build image)

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("buildah"))

    def has_image(self, tag: str) -> bool:
        return subprocess.run([*self.cli, "inspect", "--type", "image", tag], capture_output=True).returncode == 0

    def pull(self, ref: str, logfile: Path) -> bool:
        try:
            run([*self.cli, "pull", ref], logfile)
            return True
        except ImageTestError:
            return False

    def import_rootfs(self, rootfs: Path, tag: str, env: list[str], cmd: list[str], logfile: Path) -> None:
        ctr = run([*self.cli, "from", "scratch"]).stdout.strip()
        try:
            mount = run([*self.cli, "mount", ctr]).stdout.strip()
            tar = subprocess.Popen(_tar_rootfs(rootfs), stdout=subprocess.PIPE)
            run(["tar", "-C", mount, "-xf", "-"], logfile, stdin=tar.stdout)
            if tar.wait() != 0:
                raise ImageTestError(f"tar of {rootfs} failed")
            run([*self.cli, "umount", ctr])
            run([*self.cli, "config", *[f"--env={item}" for item in env], f"--cmd={json.dumps(cmd)}", ctr])
            run([*self.cli, "commit", "--format", "docker", ctr, tag], logfile)
        finally:
            subprocess.run([*self.cli, "rm", ctr], capture_output=True)

    def build(self, dockerfile: str, tag: str, args: dict[str, str], contexts: dict[str, Path], logfile: Path) -> None:
        # --format docker keeps HEALTHCHECK; --layers=false commits one layer per stage (vfs copies every layer).
        cmd = [*self.cli, "bud", "--isolation", "chroot", "--network", "host", "--layers=false", "--force-rm",
               "--format", "docker", "-f", str(REPO / dockerfile), "-t", tag]
        cmd += [f"--build-arg={k}={v}" for k, v in args.items()]
        cmd += [f"--build-context={k}={v}" for k, v in contexts.items()]
        run([*cmd, str(REPO)], logfile)

    def size_mb(self, tag: str) -> float:
        human = json.loads(run([*self.cli, "images", "--json", tag]).stdout)[0]["size"]
        number, unit = human.split()
        return float(number) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]

    def config(self, tag: str) -> dict:
        data = json.loads(run([*self.cli, "inspect", "--type", "image", tag]).stdout)
        docker = data["Docker"]["config"]
        return {key: docker.get(key) for key in ("Cmd", "Entrypoint", "Healthcheck", "WorkingDir", "Env")}

    def start(self, tag: str, argv: list[str] | None, env: dict[str, str], workspace: Path, logfile: Path,
              entrypoint: str | None = None, fresh: bool = True) -> Container:
        """Run the image's ENTRYPOINT + argv (default its CMD); fresh=False reuses one container per image, like
        commands typed one after another in a pod's terminal."""
        config = self.config(tag)
        command = [entrypoint] if entrypoint else list(config["Entrypoint"] or [])
        command += argv if argv is not None else list(config["Cmd"] or [])
        ctr = None if fresh else self.shared.get(tag)
        if ctr is None:
            ctr = run([*self.cli, "from", tag]).stdout.strip()
            if not fresh:
                self.shared[tag] = ctr
        cmd = [*self.cli, "run", "--isolation", "chroot", "--network", "host", "-v", f"{workspace}:/workspace"]
        cmd += [f"--env={k}={v}" for k, v in env.items()]
        out = logfile.open("w")
        proc = subprocess.Popen([*cmd, ctr, "--", *command], stdout=out, stderr=subprocess.STDOUT)

        def signal_main(sig: signal.Signals) -> None:
            # buildah kills its child on a signal instead of forwarding it, and chroot isolation has no pid
            # namespace: signal the container's first process itself, as `docker stop` signals PID 1.
            pid = _container_process(proc.pid)
            if pid is None:
                raise ImageTestError(f"no container process under buildah (pid {proc.pid}) to send {sig.name}")
            os.kill(pid, sig)

        def cleanup() -> None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
            if fresh:
                subprocess.run([*self.cli, "rm", ctr], capture_output=True)

        return Container(proc, logfile, signal_main, cleanup)

    def remove_image(self, tag: str) -> None:
        subprocess.run([*self.cli, "rmi", "-f", tag], capture_output=True)

    def close(self) -> None:
        for ctr in self.shared.values():
            subprocess.run([*self.cli, "rm", ctr], capture_output=True)
        self.shared.clear()


def _tar_rootfs(rootfs: Path) -> list[str]:
    return ["tar", "-C", str(rootfs), "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-cf", "-", "."]


def _container_process(root: int) -> int | None:
    """The container's first process under buildah's pid `root`: the topmost descendant that runs chrooted and is
    not one of buildah's own chroot helpers (comm `memfd:buildah-...`)."""
    parents, inside = {}, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if os.readlink(entry / "root") != "/" and not (entry / "comm").read_text().startswith("memfd:"):
                    inside.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue

    def depth(pid: int) -> int | None:
        steps = 0
        while pid in parents and pid != root:
            pid, steps = parents[pid], steps + 1
        return steps if pid == root else None

    found = sorted((d, pid) for pid in inside if (d := depth(pid)))
    return found[0][1] if found else None


def pick_engine(install: bool) -> Docker | Buildah:
    if Docker.available():
        return Docker()
    if not Buildah.available() and install and os.geteuid() == 0 and shutil.which("apt-get"):
        log("no docker daemon and no buildah: installing buildah and debootstrap from Debian's packages")
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-y", "-q", "buildah", "debootstrap"],
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"})
    if Buildah.available():
        return Buildah()
    raise ImageTestError("no working docker daemon and no buildah: install one "
                         "(Debian: apt-get install buildah debootstrap)")


# --- the base image ----------------------------------------------------------------------------------------


def base_image(engine: Docker | Buildah, work: Path, rebuild: bool) -> str:
    """python:3.11-slim-bookworm when it can be pulled, else the same thing made locally with debootstrap."""
    if engine.pull(PYTHON_IMAGE, work / "logs" / "base.log"):
        return PYTHON_IMAGE
    if engine.has_image(BASE_TAG) and not rebuild:
        log(f"{PYTHON_IMAGE} cannot be pulled; reusing {BASE_TAG} (made by an earlier run; --rebuild-base redoes it)")
        return BASE_TAG
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        raise ImageTestError(f"{PYTHON_IMAGE} cannot be pulled, and making {BASE_TAG} needs root and debootstrap")
    log(f"{PYTHON_IMAGE} cannot be pulled; making {BASE_TAG} with debootstrap (bookworm + Python 3.11)")
    engine.remove_image(BASE_TAG)  # --rebuild-base: no untagged copy left behind
    rootfs = work / "rootfs"
    started = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs), DEBIAN_MIRROR],
            work / "logs" / "base.log")
        _slim_like(rootfs)
        engine.import_rootfs(rootfs, BASE_TAG, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                                "LANG=C.UTF-8"], ["python3"], work / "logs" / "base.log")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    log(f"made {BASE_TAG} in {time.monotonic() - started:.0f}s")
    return BASE_TAG


def _slim_like(rootfs: Path) -> None:
    """What python:3.11-slim-bookworm gives: `python`/`pip` on PATH, pip allowed as root, the security and
    updates suites, no apt lists. Local CAs (a TLS-inspecting proxy's) are trusted, as a site's base image would."""
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    for name, target in (("python", "python3"), ("pip", "pip3")):
        link = rootfs / "usr/bin" / name
        if not link.exists():
            link.symlink_to(target)
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {DEBIAN_MIRROR} bookworm main\ndeb {DEBIAN_MIRROR} bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n")
    for folder in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for item in (rootfs / folder).glob("*"):
            if item.is_file():
                item.unlink()
    cas = sorted(LOCAL_CAS.glob("**/*.crt")) if LOCAL_CAS.is_dir() else []
    if cas:
        for ca in cas:
            shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
        run(["chroot", str(rootfs), "update-ca-certificates"])
        log(f"base trusts this machine's local CAs too: {', '.join(ca.name for ca in cas)}")


# --- what the builds reuse from the host -------------------------------------------------------------------


def stage_prebuilt(dest: Path, llama_version: str | None, torch_wheel: Path | None) -> Path:
    """A `prebuilt` build context: the host's llama-cpp-python wheel and sdist (STRATA_CACHE layout; none when
    llama_version is None), and the CPU torch wheel, hard-linked (or copied) so nothing else from the cache is sent
    to the builder."""
    wheel = None
    if llama_version:
        found = subprocess.run(["bash", str(REPO / "scripts/llama_wheel.sh"), "--cached", llama_version],
                               env=os.environ | {"PYTHON": sys.executable}, capture_output=True, text=True)
        wheel = Path(found.stdout.strip()) if found.returncode == 0 else None
        if wheel is None:
            log("no llama-cpp-python wheel in the host cache: the builder stage compiles it")
    files = []
    if wheel:
        files.append((wheel, Path("wheels") / wheel.parent.name / wheel.name))
        sdist = wheel.parents[2] / "sdist" / f"llama_cpp_python-{llama_version}.tar.gz"
        if sdist.is_file():
            files.append((sdist, Path("sdist") / sdist.name))
    if torch_wheel:
        files.append((torch_wheel, Path("torch") / torch_wheel.name))
    for source, relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def cpu_torch_wheel(version: str) -> Path:
    """The CPU wheel that `pip install torch==VERSION` takes on this host: pip's find-links folders."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    folders = re.findall(r"find-links='([^']*)'", done.stdout) + [os.environ.get("PIP_FIND_LINKS", "")]
    for folder in " ".join(folders).split():
        for wheel in sorted(Path(folder.removeprefix("file://")).glob(f"torch-{version}+cpu-cp311-*.whl")):
            return wheel
    raise ImageTestError(f"no CPU torch {version} wheel in pip's find-links ({' '.join(folders) or 'none'}); "
                         "pass --torch-wheel PATH (inside the build, pip would otherwise fetch the CUDA build)")


# --- the kit workspace and the checks ----------------------------------------------------------------------


def kit_workspace(workspace: Path, logfile: Path) -> None:
    """A tiny base, two topic adapters trained on it, and its Q4_K_M GGUF: all made by strata on the host."""
    strata = [str(Path(sys.executable).parent / "strata")]
    ws = ["--workspace", str(workspace)]
    steps = [
        ["kit", "sample-pdfs", *ws],
        ["kit", "tiny-base", *ws, *KIT_BASE],
        ["build", "pdf-pretest", *ws],
        ["build", "dataset", *ws],
        ["build", "train", *ws, "--level", "1", "--per-topic", "--topics", ",".join(TOPICS), *KIT_TRAINING],
        ["build", "convert", *ws, "--hf", str(workspace / "models/hf_base")],
    ]
    for step in steps:
        log(f"kit: strata {' '.join(step[:2])}")
        run([*strata, *step], logfile)


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.TransportError:
        return False
    return True


def check(condition: bool, what: str, container: Container | None = None) -> None:
    if not condition:
        tail = "\n".join(container.output().splitlines()[-30:]) if container else ""
        raise ImageTestError(f"check failed: {what}" + (f"\ncontainer log tail:\n{tail}" if tail else ""))


def wait_health(url: str, container: Container, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        check(container.proc.poll() is None, f"the container exited ({container.proc.returncode}) before /health",
              container)
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise ImageTestError(f"/health not 200 after {timeout}s; log {container.logfile}")


def chat(url: str, container: Container) -> tuple[str, list[float]]:
    """One greedy chat completion: its text and per-token logprobs (these show an applied adapter even where the
    tiny model's greedy text does not change)."""
    body = {"model": "local", "logprobs": True, "top_logprobs": 1, **CHAT}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    check(reply.status_code == 200, f"chat completion answered {reply.status_code}: {reply.text[:300]}", container)
    choice = reply.json()["choices"][0]
    logprobs = [token["logprob"] for token in (choice.get("logprobs") or {}).get("content") or []]
    check(bool(logprobs), f"the chat completion generated no tokens (or no logprobs): {reply.text[:300]}", container)
    return choice["message"]["content"], logprobs


def same(a: tuple[str, list[float]], b: tuple[str, list[float]]) -> bool:
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(abs(x - y) < 1e-3 for x, y in zip(a[1], b[1]))


def set_adapters(url: str, adapters: list[dict], container: Container) -> dict[str, float]:
    """Seed 003's body: POST /lora-adapters; returns the active set GET /lora-adapters then lists."""
    reply = httpx.post(f"{url}/lora-adapters", json={"adapters": adapters}, timeout=60)
    check(reply.status_code == 200, f"POST /lora-adapters {adapters} answered {reply.status_code}: {reply.text[:300]}",
          container)
    listed = httpx.get(f"{url}/lora-adapters", timeout=10).json()
    return {item["path"]: item["scale"] for item in listed if item.get("active", True) and item["scale"] != 0}


def serve_checks(engine: Docker | Buildah, tag: str, workspace: Path, work: Path, ttyd: bool) -> dict:
    """The image's own CMD (/start.sh) on the workspace: health, chat, apply/switch/clear, SIGTERM."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "MODEL_PATH": MODEL, "N_CTX": "512", "N_THREADS": "2", "STOP_TIMEOUT": "30",
           "TTYD_PORT": str(free_port())}
    config = engine.config(tag)
    check(config["Cmd"] == ["/start.sh"] and bool(config.get("Healthcheck")), f"image config: {config}")
    container = engine.start(tag, None, env, workspace, work / "logs" / "serve.log")
    try:
        to_health = wait_health(url, container, timeout=600)
        log(f"/health 200 after {to_health:.1f}s from container start")
        bare = chat(url, container)
        paths = [f"/workspace/peft/{topic}" for topic in TOPICS]
        active = set_adapters(url, [{"path": paths[0], "scale": 1.0}], container)
        check(active == {paths[0]: 1.0}, f"apply: active adapters {active}", container)
        applied = chat(url, container)
        active = set_adapters(url, [{"path": paths[1], "scale": 1.0}], container)
        check(active == {paths[1]: 1.0}, f"switch: active adapters {active}", container)
        switched = chat(url, container)
        active = set_adapters(url, [], container)
        check(active == {}, f"clear: active adapters {active}", container)
        cleared = chat(url, container)
        check(same(cleared, bare), f"after clear the reply {cleared} differs from the bare model's {bare}", container)
        for name, reply in ((TOPICS[0], applied), (TOPICS[1], switched)):
            check(not same(reply, bare), f"{name} did not change the reply: {reply} vs bare {bare}", container)
        check(not same(applied, switched), f"both adapters gave the same reply {applied}", container)
        log("chat, apply, switch and clear: ok (each adapter changes the greedy reply's logprobs; clear restores them)")
        stop_started = time.monotonic()
        container.signal_main(signal.SIGTERM)
        rc = container.wait(timeout=60)
        stop_s = time.monotonic() - stop_started
        output = container.output()
        check(rc == 0, f"start.sh exited {rc} on SIGTERM", container)
        check("strata serve stopped cleanly on SIGTERM." in output, "no clean-stop line in the log", container)
        check(not _answers(url), f"{url} still answers after the stop", container)
        check("PUBLIC_KEY is not set; skipping SSH" in output, "sshd missing from the image", container)
        ttyd_line = "ttyd started on port" if ttyd else "ttyd is not installed; skipping the web terminal."
        check(ttyd_line in output, f"log lacks {ttyd_line!r}", container)
        log(f"SIGTERM: start.sh stopped strata serve cleanly in {stop_s:.1f}s (exit 0, nothing listens on the port)")
        return {"start_to_health_s": round(to_health, 1), "sigterm_to_exit_s": round(stop_s, 1),
                "replies": {"bare": bare[0], TOPICS[0]: applied[0], TOPICS[1]: switched[0]}}
    finally:
        container.cleanup()


def train_in_build_image(engine: Docker | Buildah, tag: str, workspace: Path, work: Path) -> dict:
    """`strata build train_all` on the kit corpus inside the build image (the ENTRYPOINT is strata)."""
    steps = [["kit", "sample-pdfs"], ["kit", "tiny-base", *KIT_BASE],
             ["build", "train_all", "--levels", "1", *KIT_TRAINING]]
    versions = _run_in(engine, tag, ["-c", VERSIONS_PY], workspace, work / "logs" / "build-run.log", "python")
    seconds = {}
    for step in steps:
        log(f"in the build image: strata {' '.join(step)}")
        started = time.monotonic()
        _run_in(engine, tag, step, workspace, work / "logs" / "build-run.log")
        seconds[" ".join(step[:2])] = round(time.monotonic() - started, 1)
    manifests = sorted((workspace / "runs").glob("*/manifest.json"))
    check(bool(manifests), "train_all wrote no runs/<id>/manifest.json")
    stages = {s["name"]: s["status"] for s in json.loads(manifests[-1].read_text())["stages"]}
    check(all(status in ("ok", "skipped") for status in stages.values()), f"train_all stages: {stages}")
    model = workspace / "models/strata.Q4_K_M.gguf"
    check(model.is_file() and model.read_bytes()[:4] == b"GGUF", f"{model} is not a GGUF")
    adapters = sorted(p.parent.name for p in (workspace / "peft").glob("*/adapter.gguf"))
    check({"level1", *TOPICS} <= set(adapters), f"adapters written: {adapters}")
    torch_v, bnb_v, llama_v, tf_v, peft_v = versions.split()[-5:]
    return {"train_all_s": seconds["build train_all"], "step_s": seconds, "stages": stages, "adapters": adapters,
            "torch": torch_v, "bitsandbytes": bnb_v, "llama_cpp_python": llama_v, "transformers": tf_v, "peft": peft_v}


def _run_in(engine: Docker | Buildah, tag: str, argv: list[str], workspace: Path, logfile: Path,
            entrypoint: str | None = None) -> str:
    before = logfile.read_text(errors="replace") if logfile.exists() else ""
    part = logfile.with_suffix(".part")
    container = engine.start(tag, argv, {}, workspace, part, entrypoint=entrypoint, fresh=False)
    try:
        rc = container.wait(timeout=3600)
        output = container.output()
    finally:
        container.cleanup()
    logfile.write_text(before + f"$ {entrypoint or 'strata'} {' '.join(argv)}\n" + output)
    part.unlink(missing_ok=True)
    if rc != 0:
        raise ImageTestError(f"`{' '.join(argv)}` in {tag} exited {rc}; log {logfile}:\n" +
                             "\n".join(output.splitlines()[-25:]))
    return output.strip()


# --- main ----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Where this run keeps its logs and workspaces, and what it measured."""

    work: Path
    engine: Docker | Buildah
    keep: bool
    tags: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def build(self, dockerfile: str, tag: str, args: dict[str, str], contexts: dict[str, Path], key: str) -> None:
        logfile = self.work / "logs" / f"build-{key}.log"
        log(f"building {dockerfile} as {tag} with {self.engine.name} (log {logfile}) ...")
        self.tags.append(tag)
        started = time.monotonic()
        self.engine.build(dockerfile, tag, args, contexts, logfile)
        seconds = time.monotonic() - started
        reused = "using the prebuilt wheel" in logfile.read_text(errors="replace")
        size = self.engine.size_mb(tag)
        self.results[key] = {"image": tag, "build_s": round(seconds, 1), "size_mb": round(size, 1),
                             "llama_wheel": "prebuilt (host cache)" if reused else "compiled in the builder"}
        log(f"built {tag} in {seconds:.0f}s; image size {size:.0f} MB; llama-cpp-python wheel "
            f"{self.results[key]['llama_wheel']}")

    def finish(self) -> None:
        self.engine.close()
        if not self.keep:
            for tag in self.tags:
                self.engine.remove_image(tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("images", nargs="?", choices=("cpu", "build", "all"), default="cpu",
                        help="cpu: Dockerfile.cpu served on a host-made kit workspace; build: Dockerfile.cuda's stages "
                             "on the bookworm base with the CPU torch wheel, running train_all; all: build, then serve "
                             "its workspace with the cpu image")
    parser.add_argument("--compile", action="store_true", help="do not reuse the host's llama-cpp-python wheel: "
                        "the builder stage compiles it, as a plain `docker build` does")
    parser.add_argument("--ttyd", default="", metavar="VERSION",
                        help="download ttyd VERSION in the cpu image (needs github.com; default: left out)")
    parser.add_argument("--torch-wheel", type=Path, default=None, help="CPU torch wheel for the build image "
                        "(default: the one pip's find-links hold)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="logs and workspaces (default runs/image-test-<time>)")
    parser.add_argument("--workspace", type=Path, default=None,
                        help=f"cpu: serve this workspace (models/strata.Q4_K_M.gguf and peft/{{{','.join(TOPICS)}}}/) "
                             "instead of making one with the kit")
    parser.add_argument("--rebuild-base", action="store_true", help="make the debootstrap base again")
    parser.add_argument("--keep", action="store_true", help="keep the built images (default: removed at the end)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install buildah/debootstrap")
    args = parser.parse_args(argv)

    work = (args.workdir or REPO / "runs" / f"image-test-{time.strftime('%Y%m%dT%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    engine = pick_engine(install=not args.no_install)
    state = Run(work, engine, args.keep)
    log(f"engine {engine.name}; logs and workspaces in {work}")
    llama_version = dockerfile_arg("LLAMA_CPP_PYTHON", "Dockerfile.cpu")
    try:
        base = base_image(engine, work, args.rebuild_base)
        state.results["base"] = base
        workspace = args.workspace.resolve() if args.workspace else work / "workspace"
        if args.images in ("build", "all"):
            torch_version = dockerfile_arg("TORCH", "Dockerfile.cuda")
            torch_wheel = args.torch_wheel or cpu_torch_wheel(torch_version)
            prebuilt = stage_prebuilt(work / "prebuilt-build", None if args.compile else llama_version, torch_wheel)
            state.build("Dockerfile.cuda", "localhost/strata-build:image-test",
                        {"CUDA_IMAGE": base, "TORCH_INDEX": "https://pypi.org/simple",
                         "TORCH_SPEC": f"/prebuilt/torch/{torch_wheel.name}"}, {"prebuilt": prebuilt}, "build")
            workspace.mkdir(exist_ok=True)
            state.results["build"] |= train_in_build_image(engine, "localhost/strata-build:image-test", workspace, work)
            log(f"train_all in the build image: ok in {state.results['build']['train_all_s']:.0f}s "
                f"(torch {state.results['build']['torch']}, bitsandbytes {state.results['build']['bitsandbytes']})")
        if args.images in ("cpu", "all"):
            if args.images == "cpu" and not args.workspace:
                kit_workspace(workspace, work / "logs" / "kit.log")
            prebuilt = stage_prebuilt(work / "prebuilt-cpu", None if args.compile else llama_version, None)
            state.build("Dockerfile.cpu", "localhost/strata-serve:image-test",
                        {"PYTHON_IMAGE": base, "TTYD_VERSION": args.ttyd}, {"prebuilt": prebuilt}, "cpu")
            state.results["cpu"] |= serve_checks(engine, "localhost/strata-serve:image-test", workspace, work,
                                                 ttyd=bool(args.ttyd))
    except ImageTestError as error:
        log(f"FAILED: {error}")
        return 1
    finally:
        state.finish()
        (work / "results.json").write_text(json.dumps(state.results, indent=2) + "\n")
    summary(state.results)
    log(f"PASSED; results in {work / 'results.json'}")
    return 0


def summary(results: dict) -> None:
    print("\n| image | engine base | build (s) | size (MB) | llama-cpp-python wheel | measured |")
    print("|---|---|---|---|---|---|")
    for key in ("build", "cpu"):
        if key in results:
            r = results[key]
            measured = (f"/health 200 after {r['start_to_health_s']} s" if key == "cpu"
                        else f"train_all {r['train_all_s']} s, torch {r['torch']}")
            print(f"| {r['image']} | {results['base']} | {r['build_s']} | {r['size_mb']} | {r['llama_wheel']} "
                  f"| {measured} |")


if __name__ == "__main__":
    sys.exit(main())
