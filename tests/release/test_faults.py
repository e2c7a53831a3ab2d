"""Fault cases on a local store: killed publish, racing publishes, a corrupted object, an interrupted pull, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from strata.files import sha256_file
from strata.release.manifest import blob_key
from strata.release.stores import LocalStore
from strata.settings import Settings

# Runs the real CLI in a child process that SIGKILLs itself at a chosen point (no hook in the product code).
KILLER = """
import os, signal, sys
from strata.release import pull, stores
from strata.cli import main

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = os.environ["KILL_AT"]
if point == "manifest":  # every file uploaded, the manifest not yet
    stores.LocalStore.create = die
    stores.S3Store.create = die
elif point == "second-file":  # the first file pulled and verified, the second not
    real, calls = pull._fetch, []
    def fetch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            die()
        return real(*args, **kwargs)
    pull._fetch = fetch
main(sys.argv[1:], prog_name="strata")
"""


def run_strata(args: list[str], kill_at: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    full = {**os.environ, **(env or {}), "KILL_AT": kill_at or "never"}
    return subprocess.Popen([sys.executable, "-c", KILLER, *map(str, args)], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_publish_killed_before_the_manifest_leaves_no_release(build_pod: Settings, store: str, cli, publish,
                                                              one_line_error) -> None:
    proc = run_strata(["release", "publish", "--store", store, "--workspace", build_pod.workspace, "--version", "v1",
                       "--quiet"], kill_at="manifest")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, output
    blobs = list((Path(store) / "strata" / "blobs" / "sha256").iterdir())
    assert len(blobs) >= 5  # the files did go up ...
    assert cli("release", "list", "--store", store).output.strip() == f"no releases in {Path(store)}"  # ... but no release
    error = one_line_error(cli("release", "pull", "strata@v1", "--store", store))
    assert "no release named 'strata'" in error and "strata release publish" in error

    again = publish(store, "--version", "v1")  # re-running finishes it, without uploading the files again
    assert again.exit_code == 0 and "already in" in again.output and "published strata@v1" in again.output


def test_two_publishes_of_one_version_race_and_exactly_one_wins(build_pod: Settings, store: str, cli) -> None:
    common = ["release", "publish", "--store", store, "--workspace", build_pod.workspace, "--version", "v1", "--quiet"]
    procs = {"plain": run_strata(common), "peft": run_strata([*common, "--with-peft"])}
    outputs = {kind: proc.communicate(timeout=300)[0] for kind, proc in procs.items()}
    codes = {kind: proc.returncode for kind, proc in procs.items()}
    assert sorted(codes.values()) == [0, 1], outputs
    winner = next(kind for kind, code in codes.items() if code == 0)
    loser = next(kind for kind in outputs if kind != winner)
    assert "already published" in outputs[loser] and "versions are immutable" in outputs[loser]
    manifest = json.loads(cli("release", "show", "strata@v1", "--store", store, "--json").output)
    has_peft = any(f["role"] == "peft" for f in manifest["files"])
    assert has_peft == (winner == "peft")


def test_create_is_exclusive_under_a_thread_race(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    barrier, wins = threading.Barrier(8), []

    def attempt(n: int) -> None:
        barrier.wait()
        if store.create("x/versions/v1/manifest.json", f"writer {n}".encode()):
            wins.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.read("x/versions/v1/manifest.json") == f"writer {wins[0]}".encode()
    assert not [p for p in (tmp_path / "store" / "x" / "versions" / "v1").iterdir() if p.name.startswith(".")]


def test_a_flipped_byte_fails_the_pull_and_leaves_the_local_copy_untouched(publish, store: str, cli, one_line_error,
                                                                          workspace: Settings) -> None:
    publish(store, "--version", "v1")
    assert cli("release", "pull", "strata@v1", "--store", store, "--quiet").exit_code == 0
    v1 = workspace.workspace / "releases" / "strata" / "v1"
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in v1.rglob("*") if p.is_file()}

    assert publish(store, "--version", "v2").exit_code == 0  # same GGUF: one stored object for both versions
    manifest = json.loads(cli("release", "show", "strata@v2", "--store", store, "--json").output)
    model = next(f for f in manifest["files"] if f["role"] == "model")
    blob = Path(store) / blob_key("strata", model["sha256"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    error = one_line_error(cli("release", "pull", "strata@v2", "--store", store, "--quiet"))
    assert "model/strata.Q4_K_M.gguf is corrupt" in error
    assert model["sha256"] in error and hashlib.sha256(bytes(data)).hexdigest() in error
    assert not (v1.parent / "v2").exists()
    assert not list(v1.parent.glob(".v2.partial/**/*.gguf*"))  # the bad bytes were not kept
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in v1.rglob("*") if p.is_file()} == before
    assert "nothing to pull" in cli("release", "pull", "strata@v1", "--store", store, "--quiet").output


def test_an_interrupted_pull_leaves_nothing_complete_and_a_rerun_finishes(publish, store: str, cli,
                                                                         workspace: Settings) -> None:
    publish(store, "--version", "v1")
    proc = run_strata(["release", "pull", "strata@v1", "--store", store, "--quiet"], kill_at="second-file",
                      env={"WORKSPACE": str(workspace.workspace)})
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, output
    folder = workspace.workspace / "releases" / "strata"
    assert not (folder / "v1").exists()
    partial = folder / ".v1.partial"
    done = [p for p in partial.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(done) == 1 and not (partial / "manifest.json").exists()
    first = (done[0], done[0].stat().st_ino)

    finished = cli("release", "pull", "strata@v1", "--store", store, "--quiet")
    assert finished.exit_code == 0 and "every sha256 verified" in finished.output, finished.output
    manifest = json.loads((folder / "v1" / "manifest.json").read_text())
    assert all(sha256_file(folder / "v1" / f["path"]) == f["sha256"] for f in manifest["files"])
    moved = folder / "v1" / first[0].relative_to(partial)
    assert moved.stat().st_ino == first[1]  # kept from the first run, not downloaded again
    assert not partial.exists()


@pytest.mark.parametrize("args, expected", [
    (["release", "pull", "nosuch"], "no release named 'nosuch'"),
    (["release", "show", "strata@prod"], "has no version or tag 'prod'"),
    (["release", "promote", "strata@v9", "--tag", "prod"], "has no version or tag 'v9'"),
    (["release", "promote", "strata", "--tag", "prod"], "name the version to promote"),
    (["release", "pull", "bad/name"], "release name 'bad/name' must be letters"),
])
def test_bad_refs_are_one_line_errors_that_say_what_to_do(args, expected, publish, store: str, cli,
                                                          one_line_error) -> None:
    publish(store, "--version", "v1")
    error = one_line_error(cli(*args, "--store", store))
    assert expected in error
    assert "strata release" in error or "must be" in error  # the way out


def test_unreachable_and_missing_stores_are_one_line_errors(cli, one_line_error, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    error = one_line_error(cli("release", "list", "--store", tmp_path / "not-mounted"))
    assert "does not exist" in error and "mount the volume" in error
    monkeypatch.delenv("STRATA_STORE", raising=False)
    error = one_line_error(cli("release", "list"))
    assert "no release store given" in error and "STRATA_STORE" in error
    error = one_line_error(cli("release", "list", "--store", "ftp://host/x"))
    assert "unknown scheme" in error


def test_publish_without_a_model_says_how_to_build_one(cli, one_line_error, store: str, workspace: Settings) -> None:
    error = one_line_error(cli("release", "publish", "--store", store))
    assert "no model to publish" in error and "strata build train_all" in error
