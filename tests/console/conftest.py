"""Console fixtures: Debian's chromium through Playwright, a real server on the tiny GGUF with the console at /,
a standalone console on its own workspace, and a screenshot per test."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from strata.serve.config import ServeConfig
from strata.serve.server import serve_in_thread

XSS_NAME = '<img src=x onerror="window.__xss=1">'
SHOTS = os.environ.get("STRATA_CONSOLE_SHOTS")  # also copy these tests' screenshots there (the README's docs/console)
DOC_SHOTS = {
    "test_root_browser_and_error_messages": "adapters.png",
    "test_playground_streams_with_its_own_set_and_markup_stays_text": "playground.png",
    "test_compare_three_columns_stream_three_different_replies_at_once": "compare.png",
    "test_arena_six_votes_reload_leaderboard_and_dpo_export": "arena.png",
    "test_failed_run_shows_error_and_full_log": "training.png",
    "test_status_page_reads_metrics": "status.png",
    "test_qa_report_listed_with_matrix_and_html": "qa.png",
    "test_api_key_login_cookie_and_csrf": "login.png",
}


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context and page; its screenshot lands in the test's temp dir (and in SHOTS when set).
    Page errors (an uncaught exception in console.js) fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(60_000)
    yield tab
    shot = tmp_path / (re.sub(r"[^\w.-]+", "_", request.node.name) + ".png")
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    if SHOTS and request.node.name in DOC_SHOTS:  # a 256-colour copy keeps the committed PNGs small
        from PIL import Image

        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:
            image.convert("RGB").quantize(256).save(Path(SHOTS) / DOC_SHOTS[request.node.name], optimize=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def console_root(lora_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served workspace: peft/alpha, peft/beta (real adapters), an adapter dir whose name is markup, and a
    symlink leading out of the root to an adapter elsewhere."""
    ws = tmp_path_factory.mktemp("console_ws")
    peft = ws / "peft"
    for name, folder in lora_dirs.items():
        shutil.copytree(folder, peft / name)
    shutil.copytree(lora_dirs["alpha"], peft / XSS_NAME)
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(lora_dirs["beta"], outside / "escaped")
    (peft / "link_out").symlink_to(outside / "escaped", target_is_directory=True)
    (peft / "broken").mkdir()
    (peft / "broken" / "adapter.gguf").write_text("not a gguf")
    return ws


def console_config(base_gguf: Path, ws: Path, **overrides: Any) -> ServeConfig:
    values = dict(model=base_gguf, n_ctx=4096, n_threads=2, n_batch=128, workspace=ws, seed=0,
                  loras=[(str(ws / "peft" / "alpha"), 1.0), (str(ws / "peft" / "beta"), 0.0)])
    return ServeConfig(**(values | overrides))


@pytest.fixture(scope="session")
def served(base_gguf: Path, console_root: Path) -> Iterator[str]:
    """One real server (tiny GGUF, alpha@1 and beta@0 loaded) with the console at /."""
    with serve_in_thread(console_config(base_gguf, console_root)) as url:
        yield url


@pytest.fixture
def engine(served: str) -> Iterator[httpx.Client]:
    """A client on the shared server; the global set is put back to alpha@1, beta@0 afterwards."""
    with httpx.Client(base_url=served, timeout=120) as client:
        yield client
        ids = {a["name"]: a["id"] for a in client.get("/lora-adapters").json()}
        client.post("/lora-adapters", json=[{"id": ids["alpha"], "scale": 1.0}, {"id": ids["beta"], "scale": 0.0}])


@contextmanager
def app_in_thread(app: Any) -> Iterator[str]:
    """Any ASGI app under uvicorn on a free loopback port, for a test's lifetime."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def standalone_console(tmp_path: Path) -> Callable[..., Any]:
    """standalone_console(**kwargs) -> context manager yielding (url, workspace) of `strata console` on a fresh
    workspace."""

    @contextmanager
    def start(**kwargs: Any) -> Iterator[tuple[str, Path]]:
        from strata.console.app import standalone

        ws = tmp_path / "console_ws"
        (ws / "runs").mkdir(parents=True, exist_ok=True)
        with app_in_thread(standalone(ws, **kwargs)) as url:
            yield url, ws

    return start


@pytest.fixture(scope="session")
def config_for_console(base_gguf: Path, console_root: Path) -> Callable[..., ServeConfig]:
    """config_for_console(**overrides) -> the shared server's config with overrides (e.g. api_key)."""
    return lambda **overrides: console_config(base_gguf, console_root, **overrides)
