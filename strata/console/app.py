"""Console routes as a list, the access guard around each, and the two ways to run it: inside `strata serve`
(mounted at /) or alone (`strata console`, talking to a server over HTTP or to none)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from strata.console import api, auth, pages, runs_api, upstream
from strata.console.state import Console
from strata.serve.errors import ApiError

log = logging.getLogger("strata.console")
HERE = Path(__file__).parent
Handler = Callable[[Request, Console], Awaitable[Response]]
QA_FILES = (".html", ".png", ".json", ".md")


def guarded(handler: Handler, page: bool = False,
            open_access: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """The key / cookie / CSRF check (see auth.check), then the handler; ApiError becomes a JSON error."""

    async def wrapped(request: Request) -> Response:
        console: Console = request.app.state.console
        if not open_access:
            form_csrf = None
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                form_csrf = (parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
                             .get("csrf_token") or [None])[0]
            refused = auth.check(request, console.api_key, page, form_csrf)
            if refused is not None:
                return refused
        elif request.method not in auth.SAFE_METHODS and auth.cross_site(request):
            return JSONResponse({"error": {"message": "cross-site request refused", "code": 403}}, status_code=403)
        try:
            return await handler(request, console)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:  # noqa: BLE001 - a console error is a message on the page, never a dead server
            log.exception("console error on %s", request.url.path)
            return JSONResponse({"error": {"message": f"internal error: {exc}", "code": 500}}, status_code=500)

    return wrapped


async def qa_file(request: Request, console: Console) -> Response:
    """A file of one runs/qa-* report, never anything outside it; the HTML report runs no script (sandbox CSP)."""
    runs = (console.workspace / "runs").resolve()
    name, rel = request.path_params["name"], request.path_params["file"]
    folder = (runs / name).resolve()
    target = (folder / rel).resolve()
    if not name.startswith("qa-") or folder.parent != runs or not target.is_relative_to(folder) \
            or target.suffix not in QA_FILES or not target.is_file():
        raise ApiError(404, f"no QA report file {name}/{rel}; the QA page lists the reports.")
    return FileResponse(target, headers={"Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; "
                                                                    "style-src 'unsafe-inline'",
                                         "X-Content-Type-Options": "nosniff"})


def routes() -> list[Any]:
    """Every console route; mounted after the engine's own, so no API path changes."""
    page_routes = [Route(path, guarded(pages.page(path), page=True), methods=["GET"]) for path in pages.PAGES]
    return [
        *page_routes,
        Route("/login", guarded(pages.login_form, open_access=True), methods=["GET"]),
        Route("/login", guarded(pages.login, open_access=True), methods=["POST"]),
        Route("/logout", guarded(pages.logout), methods=["POST"]),
        Route("/qa/{name}/{file:path}", guarded(qa_file, page=True), methods=["GET"]),
        Route("/api/console/adapters", guarded(api.adapters), methods=["GET"]),
        Route("/api/console/adapters", guarded(api.set_adapters), methods=["POST"]),
        Route("/api/console/chat", guarded(api.chat), methods=["POST"]),
        Route("/api/console/soft-prompts", guarded(api.soft_prompts), methods=["GET"]),
        Route("/api/console/status", guarded(api.engine_status), methods=["GET"]),
        Route("/api/console/qa", guarded(api.qa), methods=["GET"]),
        Route("/api/console/arena/match", guarded(api.arena_match), methods=["POST"]),
        Route("/api/console/arena/{match_id:int}/vote", guarded(api.arena_vote), methods=["POST"]),
        Route("/api/console/arena/leaderboard", guarded(api.arena_leaderboard), methods=["GET"]),
        Route("/api/console/arena/export", guarded(api.arena_export), methods=["GET", "POST"]),
        Route("/api/console/arena/prompt", guarded(api.arena_prompt), methods=["GET"]),
        Route("/api/training/runs", guarded(runs_api.list_runs), methods=["GET"]),
        Route("/api/training/trigger", guarded(runs_api.trigger), methods=["POST"]),
        Route("/api/training/runs/{run_id}/log", guarded(runs_api.log_stream), methods=["GET"]),
        Route("/api/training/runs/{run_id}/log.txt", guarded(runs_api.full_log), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
    ]


def templates() -> Environment:
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)


def attach(app: Starlette, console: Console) -> Starlette:
    """Add the console to `app` (its routes after the app's own) and keep its state in app.state.console."""
    console.templates = console.templates or templates()
    app.router.routes.extend(routes())
    app.state.console = console
    return app


def for_serve(app: Starlette, config: Any) -> Starlette:
    """Mount the console in `strata serve`'s app: the engine in-process, the server's key and adapter roots."""
    local = upstream.Local()
    local.app = app

    def roots() -> list[Path]:
        engine = app.state.runtime.engine
        return list(engine.registry.roots) if engine is not None else []

    workspace = Path(config.workspace or Path.cwd() / "workspace")
    return attach(app, Console(workspace=workspace, upstream=local, api_key=config.api_key,
                               max_lora_scale=config.max_lora_scale, roots=roots, release=config.release))


def standalone(workspace: Path, server: str | None = None, api_key: str | None = None,
               server_key: str | None = None, max_lora_scale: float = 8.0, adapter_roots: list[Path] | None = None,
               prompt_set: str | None = None) -> Starlette:
    """`strata console`: training runs for `workspace`; the engine pages talk to `server` when given."""
    link = upstream.Remote(server, server_key or api_key) if server else upstream.NoServer()
    allowed = [Path(workspace).resolve(), *[Path(r).resolve() for r in adapter_roots or []]]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await link.close()

    app = Starlette(lifespan=lifespan)
    return attach(app, Console(workspace=workspace, upstream=link, api_key=api_key, max_lora_scale=max_lora_scale,
                               roots=lambda: allowed, prompt_set=prompt_set))
