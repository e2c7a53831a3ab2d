"""The Starlette app: routes as a list, the engine in lifespan-owned app state, JSON errors, auth and metrics."""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strata.serve import ask
from strata.serve.config import ServeConfig
from strata.serve.embeddings import encode
from strata.serve.engine import Engine, Generation
from strata.serve.errors import ApiError
from strata.serve.jobs import Token
from strata.serve.metrics import Metrics
from strata.serve.registry import set_label, set_versions
from strata.serve.responses import Reply
from strata.serve.schemas import (parse_adapter_body, parse_completion, parse_embeddings, parse_soft_prompt_body,
                                  parse_template, parse_tokenize, read_json)

log = logging.getLogger("strata.serve")
SHUTDOWN_GRACE_S = 3.0
ADAPTERS_HEADER = "X-Strata-Adapters"  # e.g. "base" or "alpha@1+beta@0.4": the adapter set a reply ran under
SOFT_PROMPT_HEADER = "X-Strata-Soft-Prompt"  # the soft prompt a reply ran under (absent: none)
VERSIONS_HEADER = "X-Strata-Adapter-Versions"  # e.g. "alpha=2": which load of each adapter's file it ran under
# header values are ASCII: other characters (an adapter dir named 会計) go percent-encoded as UTF-8, as in RFC 8187's
# ext-value, so urllib.parse.unquote() gives the names back; '%' itself is encoded too
HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
Handler = Callable[[Request, "Runtime"], Awaitable[Response]]


@dataclass
class Runtime:
    """Per-app state: config, metrics and (once loaded) the engine."""

    config: ServeConfig
    metrics: Metrics
    engine: Engine | None = None
    error: str | None = None
    evidence: Any = None  # strata.serve.evidence.Evidence: the index /gen/ask retrieves from, and the bindings

    def ready_engine(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, self.error or "the model is still loading; retry when GET /health answers 200.")
        return self.engine


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (llama-cpp-python's logprobs) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_plain, ensure_ascii=False, allow_nan=False)  # made once, not per token


def dumps(content: Any) -> str:
    return _ENCODER.encode(content)


def sse(data: str) -> bytes:
    """One SSE event, encoded once here (a dict would be re-wrapped in a ServerSentEvent per token). JSON text has no
    raw line breaks, so it is one data line."""
    return b"data: " + data.encode("utf-8") + b"\r\n\r\n"


class EventStream(EventSourceResponse):
    """sse-starlette's response (pings, disconnect and shutdown handling) minus the cancel scope it opens around
    every event when no send timeout is set: per token that was a measurable share of the event loop's work.
    Whatever ends the response (a client gone before the first event, a send that fails), the job is cancelled."""

    def __init__(self, *args: Any, generation: Generation, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = generation

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.job.cancelled = True  # a no-op once the job is done

    async def _send_with_timeout(self, send: Any, message: Any) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


class Json(JSONResponse):
    """JSONResponse that also renders numpy values."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def error_response(exc: ApiError) -> JSONResponse:
    return Json(exc.body(), status_code=exc.status, headers=exc.headers or None)


def header_value(text: str) -> str:
    """`text` as an HTTP header value (see HEADER_SAFE): ASCII names unchanged, anything else percent-encoded."""
    return quote(text, safe=HEADER_SAFE)


def endpoint(name: str, handler: Handler, open_access: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with the API key check, JSON errors and per-route metrics."""

    async def wrapped(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        started = time.perf_counter()
        try:
            key = runtime.config.api_key
            if key and not open_access:
                given = request.headers.get("authorization", "")
                if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
                    raise ApiError(401, "missing or wrong API key; send `Authorization: Bearer <key>`.")
            response = await handler(request, runtime)
        except ApiError as exc:
            response = error_response(exc)
        except Exception as exc:  # noqa: BLE001 - the server must stay up; report and carry on
            log.exception("unexpected error on %s", name)
            response = error_response(ApiError(500, f"internal error: {exc}"))
        runtime.metrics.requests.labels(name, str(response.status_code)).inc()
        runtime.metrics.latency.labels(name).observe(time.perf_counter() - started)
        return response

    return wrapped


async def health(request: Request, runtime: Runtime) -> Response:
    if runtime.engine is None:
        status = "error" if runtime.error else "loading"
        return JSONResponse({"status": status, "message": runtime.error or "loading the model"}, status_code=503)
    engine = runtime.engine
    if not engine.scheduler.alive():
        return JSONResponse({"status": "error", "message": "the decode loop has stopped (see the server log); "
                                                           "restart the server"}, status_code=503)
    return JSONResponse({"status": "ok", "model": runtime.config.model_name,
                         "adapters": len(engine.registry.adapters), "adapter_bytes": engine.registry.memory_bytes(),
                         "max_loaded_adapters": engine.registry.max_loaded, "slots": engine.model.parallel,
                         "slots_busy": engine.scheduler.busy(), **_release(runtime.config),
                         "evidence": runtime.evidence.note if runtime.evidence is not None else None})


async def models(request: Request, runtime: Runtime) -> Response:
    engine = runtime.ready_engine()
    data = [{"id": runtime.config.model_name, "object": "model", "owned_by": "strata", "path": str(engine.config.model)}]
    data += [{"id": a["name"], "object": "model", "owned_by": "strata", "parent": runtime.config.model_name,
              "adapter_id": a["id"], "path": a["path"], "scale": a["scale"], "version": a["version"]}
             for a in engine.listing()]
    return JSONResponse({"object": "list", "data": data, **_release(runtime.config)})


def _release(config: ServeConfig) -> dict[str, Any]:
    """The release being served (name, version, tag, path, adapters), for /health and /v1/models."""
    return {"release": config.release} if config.release else {}


async def slots(request: Request, runtime: Runtime) -> Response:
    """llama-server's GET /slots: each slot's state, adapter set and cached tokens."""
    return JSONResponse(runtime.ready_engine().scheduler.describe_slots())


async def tokenize(request: Request, runtime: Runtime) -> Response:
    """llama-server's POST /tokenize: {"content", "add_special", "parse_special"} -> {"tokens": [ids]}."""
    engine = runtime.ready_engine()
    content, add_special, parse_special = parse_tokenize(await read_json(request, runtime.config.max_body_bytes))
    tokens = await run_in_threadpool(engine.model.tokenize, content, add_special, parse_special)
    return JSONResponse({"tokens": tokens})


async def apply_template(request: Request, runtime: Runtime) -> Response:
    """llama-server's POST /apply-template: {"messages"} -> {"prompt": the text the chat format makes of them, ready
    for the reply, and "tokens": the ids /v1/chat/completions would evaluate}."""
    engine = runtime.ready_engine()
    messages = parse_template(await read_json(request, runtime.config.max_body_bytes))
    rendered = await run_in_threadpool(engine.template.render, messages)
    text = engine.model.model.detokenize(rendered.tokens, special=True).decode("utf-8", "replace")
    return JSONResponse({"prompt": text, "tokens": rendered.tokens})


async def metrics(request: Request, runtime: Runtime) -> Response:
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")


async def list_adapters(request: Request, runtime: Runtime) -> Response:
    return JSONResponse(runtime.ready_engine().listing())


async def set_adapters(request: Request, runtime: Runtime) -> Response:
    engine = runtime.ready_engine()
    refs = parse_adapter_body(await read_json(request, runtime.config.max_body_bytes), runtime.config.max_lora_scale)
    return JSONResponse(await engine.set_adapters(refs))


async def list_soft_prompts(request: Request, runtime: Runtime) -> Response:
    return JSONResponse(runtime.ready_engine().soft_prompts.listing())


async def set_soft_prompts(request: Request, runtime: Runtime) -> Response:
    engine = runtime.ready_engine()
    changes = parse_soft_prompt_body(await read_json(request, runtime.config.max_body_bytes))
    return JSONResponse(await engine.set_soft_prompts(changes))


def _completion_handler(kind: str) -> Handler:
    async def handle(request: Request, runtime: Runtime) -> Response:
        engine = runtime.ready_engine()
        req = parse_completion(await read_json(request, runtime.config.max_body_bytes), kind,
                               runtime.config.max_lora_scale)
        generation, echoed = await engine.submit(req)  # every 4xx is raised here, before a byte is sent
        try:
            return await _reply(request, runtime, kind, req, generation, echoed)
        except BaseException:  # anything between submit and the last event read: the job must not run on unread
            generation.job.cancelled = True
            raise

    return handle


async def _reply(request: Request, runtime: Runtime, kind: str, req: Any, generation: Generation,
                 echoed: str) -> Response:
    """The reply to a submitted generation: an SSE stream, or the whole JSON body once it is done."""
    lora = generation.job.lora
    reply = Reply(kind=kind, model=req.model or runtime.config.model_name, prompt_text=echoed,
                  logprobs=req.logprobs is not None)
    headers = {ADAPTERS_HEADER: header_value(set_label(lora)),  # the set this reply ran under
               VERSIONS_HEADER: header_value(set_versions(lora))}
    if generation.job.soft is not None:
        headers[SOFT_PROMPT_HEADER] = header_value(generation.job.soft.name)
    if req.stream:
        # on SIGTERM the scheduler fails in-flight jobs at once; the grace period lets that error event out
        return EventStream(_chunks(generation, reply, req.include_usage, runtime.metrics), ping=15,
                           headers=headers, shutdown_grace_period=SHUTDOWN_GRACE_S, generation=generation)
    done, failed = None, None
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_on_disconnect, request, generation, group.cancel_scope)
        try:  # nothing may escape the task group: it would wrap the ApiError in an ExceptionGroup (a bare 500)
            async with aclosing(generation.events()) as events:
                async for event in events:
                    if isinstance(event, Token):
                        reply.add(event)
                    else:
                        done = event
        except ApiError as exc:
            failed = exc
        group.cancel_scope.cancel()
    if failed is not None:
        raise failed
    if done is None:
        raise ApiError(499, "the client went away before the reply was ready; the generation was stopped.")
    return Json(reply.body(done), headers=headers)


async def _cancel_on_disconnect(request: Request, generation: Generation, scope: anyio.CancelScope) -> None:
    """A client that hangs up on an unstreamed request frees its slot too (the body is already read, so the next
    ASGI message is the disconnect): the job is cancelled and the handler stops waiting for it."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            generation.job.cancelled = True
            scope.cancel()
            return


async def _chunks(generation: Generation, reply: Reply, include_usage: bool,
                  metrics: Metrics) -> AsyncIterator[bytes]:
    """SSE events for one generation; a client that goes away cancels it (its slot frees within one step)."""
    try:
        for chunk in reply.first_chunks():
            yield sse(dumps(chunk))
        async with aclosing(generation.events()) as events:
            async for event in events:
                if isinstance(event, Token):
                    chunk = reply.chunk(event)
                    if chunk is not None:
                        yield sse(dumps(chunk))
                else:
                    for chunk in reply.last_chunks(event, include_usage):
                        yield sse(dumps(chunk))
        yield sse("[DONE]")
    except ApiError as exc:
        yield sse(dumps(exc.body()))
    except (GeneratorExit, anyio.get_cancelled_exc_class()):
        metrics.stream_disconnects.inc()
        raise


async def embeddings(request: Request, runtime: Runtime) -> Response:
    engine = runtime.ready_engine()
    req = parse_embeddings(await read_json(request, runtime.config.max_body_bytes), runtime.config.max_lora_scale)
    vectors, tokens = await engine.embed(req)
    data = [{"object": "embedding", "index": i, "embedding": encode(v, req.encoding)} for i, v in enumerate(vectors)]
    return Json({"object": "list", "data": data, "model": req.model or runtime.config.model_name,
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    headers = getattr(exc, "headers", None) or {}
    if status == 405:
        allowed = headers.get("Allow") or headers.get("allow") or "another method"
        detail = f"{request.method} is not allowed on {request.url.path}; use {allowed}."
    response = error_response(ApiError(status, str(detail)))
    response.headers.update(headers)
    return response


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Load the engine in the background (so /health can answer 503 meanwhile); free it on shutdown."""
    runtime: Runtime = app.state.runtime

    async def load() -> None:
        try:
            runtime.engine = await Engine.open(runtime.config, runtime.metrics)
        except Exception as exc:  # noqa: BLE001 - reported through /health and the log
            log.exception("loading the model failed")
            runtime.error = f"loading {runtime.config.model} failed: {exc}"

    async with anyio.create_task_group() as group:
        group.start_soon(load)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
    if runtime.engine is not None:
        engine, runtime.engine = runtime.engine, None
        await run_in_threadpool(engine.close)  # stops the decode loop first, then frees the model
    if runtime.evidence is not None:
        runtime.evidence.close()


def create_app(config: ServeConfig) -> Starlette:
    """A fresh app for `config`; the engine is created in lifespan and /health answers 503 until it is ready."""
    routes = [
        Route("/health", endpoint("health", health, open_access=True), methods=["GET"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/metrics", endpoint("metrics", metrics), methods=["GET"]),
        Route("/slots", endpoint("slots", slots), methods=["GET"]),
        Route("/lora-adapters", endpoint("lora-adapters", list_adapters), methods=["GET"]),
        Route("/lora-adapters", endpoint("lora-adapters", set_adapters), methods=["POST"]),
        Route("/soft-prompts", endpoint("soft-prompts", list_soft_prompts), methods=["GET"]),
        Route("/soft-prompts", endpoint("soft-prompts", set_soft_prompts), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", _completion_handler("text")), methods=["POST"]),
        Route("/v1/chat/completions", endpoint("chat", _completion_handler("chat")), methods=["POST"]),
        Route("/v1/embeddings", endpoint("embeddings", embeddings), methods=["POST"]),
        Route("/tokenize", endpoint("tokenize", tokenize), methods=["POST"]),
        Route("/apply-template", endpoint("apply-template", apply_template), methods=["POST"]),
        Route("/gen/ask", endpoint("gen-ask", ask.ask), methods=["POST"]),
        Route("/adapters/bindings", endpoint("bindings", ask.list_bindings), methods=["GET"]),
        Route("/adapters/bindings", endpoint("bindings", ask.set_binding), methods=["POST"]),
    ]
    from strata.serve.evidence import open_evidence

    evidence = open_evidence(config)  # at start: a bad or mismatched index stops the server before it listens
    log.info("%s", evidence.note)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.runtime = Runtime(config=config, metrics=Metrics(), evidence=evidence)
    from strata.console.app import for_serve  # the web console at / (its routes come after every API route)

    return for_serve(app, config)
