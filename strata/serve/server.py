"""Run the app with uvicorn: in the foreground (`strata serve`) or in a background thread (tests, QA)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import httpx
import uvicorn

from strata.errors import StrataError
from strata.serve.app import create_app
from strata.serve.config import ServeConfig


class Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM / Ctrl-C first stops the decode loop, so in-flight streams end at
    once with an error event instead of generating on through the graceful-shutdown wait."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = getattr(getattr(self.config.app, "state", None), "runtime", None)
        engine = getattr(runtime, "engine", None)
        if engine is not None and engine.scheduler is not None:
            engine.scheduler.stop()
        super().handle_exit(sig, frame)


def run(config: ServeConfig) -> None:
    """Serve until interrupted; fails fast (StrataError) when the model file is missing."""
    config.check_model()
    app = create_app(config)
    Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info", access_log=config.access_log,
                          timeout_graceful_shutdown=5)).run()


@contextmanager
def serve_in_thread(config: ServeConfig, timeout: float = 300.0) -> Iterator[str]:
    """Start the server on 127.0.0.1 on a free port in a background thread; yield its base URL once /health
    answers 200; stop it cleanly on exit."""
    config.check_model()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = replace(config, host="127.0.0.1", port=port)
    server = Server(uvicorn.Config(create_app(config), log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"strata-serve-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base_url, thread, timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait_ready(base_url: str, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise StrataError(f"the server thread for {base_url} stopped during start-up ({last}).")
        try:
            reply = httpx.get(f"{base_url}/health", timeout=5)
            if reply.status_code == 200:
                return
            last = reply.text
            if reply.json().get("status") == "error":
                raise StrataError(f"the server could not load its model: {reply.json().get('message')}")
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise StrataError(f"the server at {base_url} was not ready after {timeout:.0f}s ({last}).")
