"""The console's JSON API: adapters, chat, status, arena and QA (the training endpoints are in runs_api)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from strata.console import arena, browse, status
from strata.console.state import Console
from strata.files import atomic_write_text, read_jsonl
from strata.qa.report import topic_table
from strata.serve.errors import ApiError

ARENA_FIELDS = ("temperature", "top_p", "max_tokens", "seed")
PREFERENCES = "data/processed/arena_preferences.jsonl"


async def json_body(request: Request, limit: int = 1 << 20) -> Any:
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"request body is over {limit} bytes.")
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc}); send a JSON object.") from None


async def _engine_json(console: Console, name: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    code, headers, raw = await console.upstream.call(name, body)
    try:
        return code, json.loads(raw or b"null"), headers
    except ValueError:
        return code, raw.decode("utf-8", "replace"), headers


def _engine_error(code: int, body: Any) -> ApiError:
    message = body.get("error", {}).get("message") if isinstance(body, dict) else str(body)
    return ApiError(code, message or f"the engine answered {code}")


async def adapters(request: Request, console: Console) -> Response:
    """Loaded adapters (with level/topic/fingerprint from their dirs) and every loadable one under the roots."""
    roots = list(dict.fromkeys(console.roots()))  # the engine may list a folder twice (workspace, a start adapter's)
    code, listing, _ = await _engine_json(console, "adapters.list")
    error = None if code == 200 else _engine_error(code, listing).message
    loaded = browse.described(listing if code == 200 else [], roots)
    return JSONResponse({"loaded": loaded, "available": browse.adapters_under(roots), "roots": [str(r) for r in roots],
                         "max_scale": console.max_lora_scale, "error": error})


async def set_adapters(request: Request, console: Console) -> Response:
    """Apply / Clear: the body goes to POST /lora-adapters as it is (same parser, same checks, same errors)."""
    return await console.upstream.forward(request, "adapters.set")


async def chat(request: Request, console: Console) -> Response:
    """Playground and Compare: one chat completion, streamed, with the request's own `lora` set (and soft prompt)."""
    return await console.upstream.forward(request, "chat")


async def soft_prompts(request: Request, console: Console) -> Response:
    """The soft prompts a request can name: every one trained under the served workspace (by name) and every one
    loaded by path, with the server's default; an engine error is a message, not a broken page."""
    code, listing, _ = await _engine_json(console, "soft_prompts.list")
    if code != 200 or not isinstance(listing, dict):
        return JSONResponse({"choices": [], "default": None, "error": _engine_error(code, listing).message})
    choices = [{"name": name, "value": name} for name in listing.get("available") or []]
    named = {c["name"] for c in choices}
    choices += [{"name": s["name"], "value": s["path"]} for s in listing.get("soft_prompts") or []
                if s.get("name") not in named]
    return JSONResponse({"choices": choices, "default": listing.get("default") if listing.get("enabled") else None,
                         "error": None})


async def engine_status(request: Request, console: Console) -> Response:
    code, health, _ = await _engine_json(console, "health")
    mcode, _, text = await console.upstream.call("metrics")
    return JSONResponse(status.summary(health if isinstance(health, dict) else {"status": "error", "message": health},
                                       text.decode("utf-8", "replace") if mcode == 200 else None) | {"code": code})


def _candidates(body: dict[str, Any]) -> list[list[dict[str, Any]]]:
    sets = body.get("candidates")
    if not isinstance(sets, list) or len(sets) < 2 or not all(isinstance(s, list) for s in sets):
        raise ApiError(400, "candidates must list at least two adapter sets, e.g. [[], [{\"path\": P, \"scale\": 1}]] "
                            "([] is the base model).")
    return sets


async def arena_match(request: Request, console: Console) -> Response:
    """Two distinct candidate sets, drawn at random, answer the prompt; only the outputs go back (names hidden)."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        raise ApiError(400, "send {\"prompt\": \"...\", \"candidates\": [...]}: the prompt must be non-empty text.")
    first, second = random.sample(_candidates(body), 2)
    sampling = {k: body[k] for k in ARENA_FIELDS if body.get(k) is not None}
    messages = [{"role": "user", "content": body["prompt"]}]
    replies = await asyncio.gather(*(_engine_json(console, "chat", {"messages": messages, "lora": s, **sampling})
                                     for s in (first, second)))
    sides = []
    for (code, reply, headers), chosen in zip(replies, (first, second)):
        if code != 200:
            raise _engine_error(code, reply)
        sides.append({"label": headers.get("x-strata-adapters", "?"), "set": chosen,
                      "output": reply["choices"][0]["message"]["content"]})
    topic = str(body.get("topic") or "general").strip() or "general"
    match_id = console.store.add_match(body["prompt"], topic, *sides)
    return JSONResponse({"id": match_id, "topic": topic, "a": sides[0]["output"], "b": sides[1]["output"]})


async def arena_vote(request: Request, console: Console) -> Response:
    body = await json_body(request)
    vote = body.get("vote") if isinstance(body, dict) else None
    if vote not in arena.VOTES:
        raise ApiError(400, f"vote must be one of {list(arena.VOTES)} (A, B, tie, or both bad), got {vote!r}.")
    row = console.store.vote(int(request.path_params["match_id"]), vote)
    if row is None:
        raise ApiError(404, "no such arena match; start a new one.")
    return JSONResponse({"id": row["id"], "vote": row["vote"], "a": row["a_label"], "b": row["b_label"]})


async def arena_leaderboard(request: Request, console: Console) -> Response:
    rows = console.store.voted()
    return JSONResponse({"votes": len(rows), "topics": arena.leaderboard(rows)})


def _preference_text(console: Console) -> tuple[str, int]:
    rows = [json.dumps(r, ensure_ascii=False) for r in arena.preferences(console.store.voted())]
    return "".join(line + "\n" for line in rows), len(rows)


async def arena_export(request: Request, console: Console) -> Response:
    """GET: the preference JSONL as a download; POST: written (atomically) to WORKSPACE/{PREFERENCES}."""
    text, count = _preference_text(console)
    if request.method == "GET":
        return Response(text, media_type="application/x-ndjson",
                        headers={"Content-Disposition": 'attachment; filename="arena_preferences.jsonl"'})
    path = atomic_write_text(console.workspace / PREFERENCES, text)
    return JSONResponse({"path": str(path), "rows": count})


def _draw(console: Console, source: str) -> dict[str, Any]:
    if source == "qa":
        from strata.qa.prompts import load_prompt_set

        items = [i for i in load_prompt_set(console.prompt_set).items if i.prompt.strip()]
        item = random.choice(items)
        return {"prompt": item.prompt, "topic": item.topic or "general"}
    processed = console.workspace / "data" / "processed"
    for name, key in (("pairs_val.jsonl", "question"), ("val.jsonl", None)):
        if (processed / name).is_file():
            rows = read_jsonl(processed / name, "build the dataset first")
            row = random.choice(rows)
            text = row.get(key) if key else (row.get("prompt") or row.get("question") or row.get("text", "")[:400])
            return {"prompt": str(text), "topic": row.get("topic") or "general"}
    raise ApiError(404, f"no held-out pairs in {processed} (pairs_val.jsonl or val.jsonl); run `strata build dataset` "
                        "first, or draw from the QA prompt set.")


async def arena_prompt(request: Request, console: Console) -> Response:
    source = request.query_params.get("source", "qa")
    if source not in ("qa", "pairs"):
        raise ApiError(400, "source must be qa (the QA prompt set) or pairs (the held-out pairs).")
    return JSONResponse(_draw(console, source))


def qa_reports(workspace: Path) -> list[dict[str, Any]]:
    """runs/qa-*: name, when, the set names and their mean scores where results.json has them."""
    rows = []
    for folder in sorted((workspace / "runs").glob("qa-*"), reverse=True):
        try:
            results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = {}
        plots = sorted(p.relative_to(folder).as_posix() for p in (folder / "plots").glob("*.png")) \
            if (folder / "plots").is_dir() else []
        header, cells = topic_table(results, "f1") if results.get("topics") else ([], [])
        rows.append({"name": folder.name, "has_html": (folder / "report.html").is_file(), "plots": plots,
                     "started": results.get("started"), "layers": [l.get("name") for l in results.get("layers", [])],
                     "gates": results.get("gates", []), "matrix": {"header": header, "rows": cells}})
    return rows


def gate_reports(workspace: Path) -> list[dict[str, Any]]:
    """runs/gate-*: the build's base-vs-layer matrix as `strata.qa.gate` prints it, and why each failed layer failed."""
    from strata.qa.gate import GATE_FILE, matrix_table

    rows = []
    for folder in sorted((workspace / "runs").glob("gate-*"), reverse=True):
        try:
            record = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
            header, table = matrix_table(record)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a gate run killed before it wrote its record, or one from an older layout
        rows.append({"name": folder.name, "created": record.get("created"), "passed": record.get("passed"),
                     "metric": (record.get("preset") or {}).get("metric"), "header": header, "rows": table,
                     "failed": {v["layer"]: v["reasons"] for v in record["verdicts"].values() if not v["passed"]}})
    return rows


async def qa(request: Request, console: Console) -> Response:
    return JSONResponse({"reports": qa_reports(console.workspace), "gates": gate_reports(console.workspace),
                         "release": console.release})
