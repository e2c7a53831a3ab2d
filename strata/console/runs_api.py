"""Seed 002's endpoints: GET /api/training/runs, POST /api/training/trigger, GET /api/training/runs/{id}/log."""

from __future__ import annotations

import json
from typing import AsyncIterator

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from strata import runlock
from strata.console import training
from strata.console.api import json_body
from strata.console.runner import LOG
from strata.console.state import Console

POLL_S = 0.25


async def list_runs(request: Request, console: Console) -> Response:
    listing = await run_in_threadpool(training.runs, console.workspace / "runs")
    for row in listing["runs"]:
        row["loss_curve"] = training.loss_curve(row.pop("adapters"))
    return JSONResponse(listing | {"stages": sorted(training.STAGES)})


async def trigger(request: Request, console: Console) -> Response:
    body = await json_body(request, 1 << 14)
    return JSONResponse(await run_in_threadpool(training.trigger, console.workspace, body), status_code=202)


async def full_log(request: Request, console: Console) -> Response:
    folder = training.run_dir(console.workspace, request.path_params["run_id"])
    return PlainTextResponse(training.log_tail(folder))


async def log_stream(request: Request, console: Console) -> Response:
    """The log as SSE, one event per line, live while the run holds the lock; an `end` event with the status."""
    folder = training.run_dir(console.workspace, request.path_params["run_id"])
    runs_dir = console.workspace / "runs"

    async def events() -> AsyncIterator[dict[str, str]]:
        offset, pending = 0, b""
        while True:
            running = (runlock.active(runs_dir) or {}).get("run_id") == folder.name
            try:
                with open(folder / LOG, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield {"event": "line", "data": json.dumps(line.decode("utf-8", "replace").rstrip("\r"))}
            if not running and not chunk:
                if pending:
                    yield {"event": "line", "data": json.dumps(pending.decode("utf-8", "replace"))}
                row = training.describe(folder, None) or {}
                yield {"event": "end", "data": json.dumps({"status": row.get("status"), "error": row.get("error")})}
                return
            await anyio.sleep(POLL_S)

    return EventSourceResponse(events(), ping=15)
