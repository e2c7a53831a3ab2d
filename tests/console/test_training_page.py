"""Training runs (seed 002) in Chromium: a failed run shows its error and full log; a run held by a terminal
(`strata build all` takes the same lock) gives 409 with its id and a disabled button; a run killed with its pod
shows as failed with its log kept; `strata build all` itself refuses while the console's run holds the lock."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from playwright.sync_api import expect

from strata import runlock


def _wait_status(client: httpx.Client, run_id: str, want: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next((r for r in client.get("/api/training/runs").json()["runs"] if r["id"] == run_id), None)
        if row and row["status"] == want:
            return row
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never became {want}: {row}")


def test_failed_run_shows_error_and_full_log(page, standalone_console):
    with standalone_console() as (url, ws), httpx.Client(base_url=url, timeout=60) as client:
        page.goto(f"{url}/training")
        page.get_by_label("Stage").select_option("train_all")
        page.get_by_role("button", name="Start run").click()
        started = page.get_by_text("Started run")
        started.wait_for()
        run_id = started.inner_text().split()[2].rstrip(":")
        row = _wait_status(client, run_id, "failed")
        assert "base model" in row["error"].lower() or "not found" in row["error"].lower(), row["error"]
        page.locator(f"tr[data-run='{run_id}'] .status").filter(has_text="failed").wait_for()
        page.locator("#log").filter(has_text="— run failed —").wait_for(timeout=60_000)
        full = client.get(f"/api/training/runs/{run_id}/log.txt").text
        assert row["error"].splitlines()[-1] in full and "Error" in full
        assert page.locator("#log").inner_text().strip().startswith(full.strip().splitlines()[0])
        details = page.locator(f"tr[data-run='{run_id}'] details")
        if details.count():
            page.locator(f"tr[data-run='{run_id}'] summary").click()
            assert row["error"].splitlines()[-1] in details.inner_text()
        assert not page.get_by_role("button", name="Start run").is_disabled()
        assert runlock.active(ws / "runs") is None  # the lock went with the run


def test_trigger_during_a_terminal_run_is_409_and_the_button_is_disabled(page, standalone_console):
    with standalone_console() as (url, ws), httpx.Client(base_url=url, timeout=60) as client:
        fd, info = runlock.acquire(ws / "runs", "strata build all")  # what a terminal `strata build all` holds
        try:
            page.goto(f"{url}/training")
            page.locator("#active").filter(has_text=info["run_id"]).wait_for()
            assert page.get_by_role("button", name="Start run").is_disabled()
            reply = client.post("/api/training/trigger", json={"stage": "train_all"})  # a seed-002 script, no key
            assert reply.status_code == 409 and reply.json()["run_id"] == info["run_id"]
            assert page.locator(f"tr[data-run='{info['run_id']}'] .status").inner_text() == "running"
        finally:
            os.close(fd)
        expect(page.get_by_role("button", name="Start run")).to_be_enabled()  # the terminal run ended


def test_run_killed_with_its_pod_shows_failed_and_cli_run_gets_the_lock_error(page, standalone_console, tmp_path):
    from strata.pipeline import run_all
    from strata.settings import Settings

    with standalone_console() as (url, ws), httpx.Client(base_url=url, timeout=60) as client:
        first = client.post("/api/training/trigger", json={"stage": "train_all"})
        assert first.status_code == 202, first.text
        second = client.post("/api/training/trigger", json={"stage": "build_dataset"})
        assert second.status_code == 409 and second.json()["run_id"] == first.json()["run_id"]
        with pytest.raises(runlock.RunActive, match=first.json()["run_id"]):
            run_all(Settings.resolve(workspace=ws), echo=lambda line: None)  # a terminal run meets the same lock
        os.killpg(first.json()["pid"], signal.SIGKILL)  # the pod goes down mid-run
        run_id = first.json()["run_id"]
        row = _wait_status(client, run_id, "failed", timeout=60)
        assert "stopped without finishing" in row["error"]
        page.goto(f"{url}/training")
        page.locator(f"tr[data-run='{run_id}'] .status").filter(has_text="failed").wait_for()
        assert client.get(f"/api/training/runs/{run_id}/log.txt").status_code == 200
        assert client.post("/api/training/trigger", json={"stage": "nope"}).status_code == 400
