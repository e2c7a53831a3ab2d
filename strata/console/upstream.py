"""How the console reaches the engine: serve's own handlers in-process (mounted in `strata serve`) or HTTP."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

# console name -> (method, engine path, the engine's metrics label); the same routes scripts call with curl
ROUTES: dict[str, tuple[str, str, str]] = {
    "adapters.list": ("GET", "/lora-adapters", "lora-adapters"),
    "adapters.set": ("POST", "/lora-adapters", "lora-adapters"),
    "chat": ("POST", "/v1/chat/completions", "chat"),
    "health": ("GET", "/health", "health"),
    "metrics": ("GET", "/metrics", "metrics"),
    "models": ("GET", "/v1/models", "models"),
    "soft_prompts.list": ("GET", "/soft-prompts", "soft-prompts"),
}
PASSED_HEADERS = ("content-type", "x-strata-adapters", "cache-control")


class NoServer:
    """`strata console` without --server: the training pages work, the engine pages say how to connect one."""

    message = ("this console has no server to talk to; start it with `strata console --server http://HOST:PORT` "
               "or open the console of `strata serve` itself.")

    async def forward(self, request: Request, name: str) -> Response:
        return JSONResponse({"error": {"message": self.message, "code": 503}}, status_code=503)

    async def call(self, name: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        return 503, {}, json.dumps({"error": {"message": self.message, "code": 503}}).encode()

    async def close(self) -> None:
        return None


class Local:
    """The engine of the app the console is mounted in: each call goes through serve's own route handler, so
    Apply is exactly POST /lora-adapters (same parsing, same registry, same errors, same metrics)."""

    def __init__(self) -> None:
        from strata.serve import app as serve_app

        self._serve = serve_app
        self._handlers = {
            "adapters.list": serve_app.list_adapters, "adapters.set": serve_app.set_adapters,
            "chat": serve_app._completion_handler("chat"), "health": serve_app.health,
            "metrics": serve_app.metrics, "models": serve_app.models,
            "soft_prompts.list": serve_app.list_soft_prompts,
        }
        self.app: Any = None  # set when the console is mounted (the serve app itself)

    def _endpoint(self, name: str) -> Any:
        # the console checked the caller already (key, cookie, CSRF): the engine's own bearer check is skipped
        return self._serve.endpoint(ROUTES[name][2], self._handlers[name], open_access=True)

    async def forward(self, request: Request, name: str) -> Response:
        return await self._endpoint(name)(request)

    async def call(self, name: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        method, path, _ = ROUTES[name]
        raw = b"" if body is None else json.dumps(body).encode()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await anyio.sleep_forever()  # the handler's disconnect watcher waits here until it is cancelled
            return {"type": "http.disconnect"}

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
                 "app": self.app, "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "scheme": "http"}
        response = await self._endpoint(name)(Request(scope, receive))
        return response.status_code, dict(response.headers), bytes(response.body)

    async def close(self) -> None:
        return None


class Remote:
    """A strata server over HTTP (`strata console --server URL`), with its API key as a bearer token."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(600, connect=5))

    def _unreachable(self, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"message": f"the server at {self.url} did not answer ({exc}); check that it "
                                                  "runs and that --server points at it.", "code": 502}},
                            status_code=502)

    async def forward(self, request: Request, name: str) -> Response:
        method, path, _ = ROUTES[name]
        body = await request.body()
        sent = self.client.build_request(method, path, content=body or None,
                                         headers={"content-type": "application/json"} if body else {})
        try:
            reply = await self.client.send(sent, stream=True)
        except httpx.HTTPError as exc:
            return self._unreachable(exc)
        headers = {k: v for k, v in reply.headers.items() if k.lower() in PASSED_HEADERS}
        return StreamingResponse(reply.aiter_raw(), status_code=reply.status_code, headers=headers,
                                 background=BackgroundTask(reply.aclose))

    async def call(self, name: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        method, path, _ = ROUTES[name]
        try:
            reply = await self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            response = self._unreachable(exc)
            return response.status_code, {}, bytes(response.body)
        return reply.status_code, dict(reply.headers), reply.content

    async def close(self) -> None:
        await self.client.aclose()
