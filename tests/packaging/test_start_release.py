"""start.sh with RELEASE=NAME@TAG: pulls the release from STRATA_STORE and serves it, adapters by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from strata.release import tags
from strata.release.publish import publish
from strata.release.stores import LocalStore
from strata.settings import Settings


@pytest.fixture(scope="module")
def kit_store(base_gguf: Path, lora_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store holding kit@v1 (the tiny GGUF and both kit LoRAs), tagged prod."""
    root = tmp_path_factory.mktemp("kit_release")
    build = Settings.resolve(workspace=root / "build", model_path=str(base_gguf), env={})
    for name, folder in lora_dirs.items():
        shutil.copytree(folder, build.peft / name)
    store = LocalStore(root / "store")
    publish(build, store, name="kit", version="v1", no_qa=True, progress=False, echo=lambda line: None)
    tags.promote(store, "kit@v1", "prod", force=True)
    return store.root


def test_release_env_pulls_and_serves_it(launch, kit_store: Path) -> None:
    served = launch({"RELEASE": "kit@prod", "STRATA_STORE": str(kit_store), "LORA_PATHS": "alpha,beta:0.5",
                     "N_CTX": "512", "N_THREADS": "1"})
    served.wait_ready()
    log = served.output()
    assert f"serving release kit@prod from {kit_store}" in log and "pulled kit@v1 into" in log
    health = httpx.get(f"{served.url}/health", timeout=10).json()
    assert (health["release"]["name"], health["release"]["version"], health["release"]["tag"]) == ("kit", "v1", "prod")
    adapters = health["release"]["adapters"]
    listed = {a["path"]: a["scale"] for a in httpx.get(f"{served.url}/lora-adapters", timeout=10).json()}
    assert listed == {f"{adapters}/alpha": 1.0, f"{adapters}/beta": 0.5}


def test_release_env_with_an_unknown_tag_exits_with_the_fix(run_start_sh, kit_store: Path) -> None:
    done = run_start_sh({"RELEASE": "kit@canary", "STRATA_STORE": str(kit_store)})
    assert done.returncode == 1
    assert "has no version or tag 'canary'" in done.stderr and "strata release promote kit@v1 --tag canary" in done.stderr
