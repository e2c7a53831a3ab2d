"""Release fixtures: a build pod's workspace made by the project's own steps on the kit, local stores, and a real
S3-compatible HTTP server (moto's server mode) on loopback, started as a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner, Result

from strata.cli import main
from strata.ports import free_port
from strata.settings import Settings

PART = 5 << 20  # S3's minimum part size, used by the S3 tests
# Training sized for seconds on CPU: the layers must be real and move the replies (a big lr), not be good.
QUICK = {"max_seq_len": 64, "batch_size": 2, "grad_accum": 1, "max_steps": 3, "lr": 5e-2, "save_steps": 1000,
         "eval_batches": 1}
SAMPLES = 6


def _kit_dataset(settings: Settings) -> None:
    """train.jsonl / val.jsonl of kit corpus paragraphs, topic = the corpus file's name (as raw_pdfs/<topic>/)."""
    from strata.kit.texts import CORPUS_DIR

    records = [{"id": f"{path.stem}-{n}", "text": block.strip(), "topic": path.stem}
               for path in sorted(CORPUS_DIR.glob("*.md"))
               for n, block in enumerate(path.read_text(encoding="utf-8").split("\n\n")) if len(block.strip()) > 200]
    for name, rows in (("train.jsonl", records[1::2]), ("val.jsonl", records[::8])):
        (settings.processed / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def build_pod(tiny_base: Path, small_prompts: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A build pod's workspace made by the build stage itself: `strata build convert`'s Q4_K_M GGUF and fidelity
    record at MODEL_PATH, level 1 and the ASC_Leases topic layer on top of it trained for real (PEFT files,
    adapter.gguf and the training_summary.json training writes), and a real `strata qa` run with a passing gate."""
    from strata.export.convert import convert_model
    from strata.qa.harness import run_qa
    from strata.train.trainer import train_level

    settings = Settings.resolve(workspace=tmp_path_factory.mktemp("build_pod"), base_model=str(tiny_base),
                                n_threads=2, n_ctx=512, env={})
    settings.ensure_skeleton()
    convert_model(settings, tiny_base, "Q4_K_M", echo=lambda line: None)
    _kit_dataset(settings)
    train_level(settings, 1, preset="levels/level1", overrides=QUICK, max_train_samples=SAMPLES, progress=False)
    train_level(settings, 2, per_topic=True, topics=["ASC_Leases"], preset="levels/level1", overrides=QUICK,
                max_train_samples=SAMPLES, progress=False)
    run_qa(settings, prompts=small_prompts, max_tokens=8, fail_under=["f1=0"], progress=False, echo=lambda line: None)
    return settings


@pytest.fixture(scope="session")
def f32_pod(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A workspace whose MODEL_PATH is the tiny base converted to F32 by llama.cpp's converter (6.8 MB: more than
    one 5 MiB S3 part), with no adapters."""
    from strata.llamacpp import convert_hf

    settings = Settings.resolve(workspace=tmp_path_factory.mktemp("f32_pod"), model_path="models/tiny.F32.gguf",
                                env={})
    settings.ensure_skeleton()
    convert_hf(tiny_base, settings.model_path, "f32")
    return settings


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh local-folder store (a mounted volume on a pod)."""
    return str(tmp_path / "store")


@pytest.fixture(scope="session")
def cli() -> Callable[..., Result]:
    """cli(*args) -> click Result of `strata ARGS` (exceptions other than exit codes propagate)."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return run


@pytest.fixture
def publish(cli: Callable[..., Result], build_pod: Settings) -> Callable[..., Result]:
    """publish(store, *extra, ok=True) -> Result of `strata release publish` from the build pod (quiet); with ok,
    it must succeed."""

    def run(store: str, *extra: str, ok: bool = True) -> Result:
        result = cli("release", "publish", "--store", store, "--workspace", build_pod.workspace, "--quiet", *extra)
        assert result.exit_code == 0 or not ok, result.output
        return result

    return run


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server (a real HTTP server, `python -m moto.server`) on a free loopback port, for the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto server did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "STRATA_S3_PART_SIZE": str(PART)}


@pytest.fixture
def s3_store(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server, with the env a pod would have (endpoint, keys, part size)."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"strata-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/releases"


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="session")
def one_line_error() -> Callable[[Result], str]:
    """one_line_error(result) -> the error a failed command printed, asserting it is exactly one `Error: ...` line."""
    return _one_line_error


@pytest.fixture(scope="session", name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port
