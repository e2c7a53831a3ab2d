"""Hypothesis fuzzing of every route and field, over HTTP only, against the real engine (see README "Reliability")."""

# Properties, for every generated request: never a 5xx, the server stays healthy, a rejected request leaves
# GET /lora-adapters as it was, and after an accepted one a greedy completion is still finite and not flat.
# Routes and fields are data (ROUTES and the *_fields tables): a new endpoint or field is one entry. Only HTTP
# is spoken, so the suite runs unchanged against any engine behind the same API.

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

PROMPT = "Revenue is recognized when"
BODY_LIMIT = 1 << 20  # the server's default --max-body-bytes
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

# -- values ------------------------------------------------------------------------------------------------------
EDGE_NUMBERS = [0, -1, 1, 2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 10**30, -(10**30), 10**400, 1e308, -1e308,
                3.4028235e38, 3.5e38, -1000, 1000, 1e-45, 1e-320, 0.5, 8, -8, 8.000001]
EDGE_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\udc80", "../../etc/passwd", "~", "~nobody/x",
             "/", "//", "%00", "a" * 5000, "\u202e\u0000", "null", "{}", "[]", "😀", "\r\n"]
numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
# any code point, lone surrogates included (they reach the server as \ud800-style JSON escapes)
texts = st.one_of(st.sampled_from(EDGE_TEXT), st.text(st.characters(codec=None), max_size=12))
hostile = st.recursive(st.none() | st.booleans() | numbers | texts,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                       max_leaves=6)


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """one_of with weights (one_of drops a strategy repeated in its arguments, so repeating one weights nothing)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(pool))).flatmap(lambda i: pool[i])


def body_of(fields: dict[str, st.SearchStrategy], required: tuple[str, ...] = (), stress: tuple[str, ...] = ()
            ) -> st.SearchStrategy:
    """JSON objects over `fields`: plausible ones (the required keys and any subset of the others), the same
    with a `stress` field always set, with one field replaced by anything at all or one stray key added, with
    one key dropped, and arbitrary JSON."""
    clean = st.fixed_dictionaries({name: fields[name] for name in required},
                                  optional={name: s for name, s in fields.items() if name not in required})
    names = st.sampled_from(sorted(fields) + ["unknown", "suffix", "tools", "dimensions", "response_format"])
    spoiled = st.builds(lambda body, name, value: {**body, name: value}, clean, names, hostile)
    dropped = st.builds(lambda body, name: {k: v for k, v in body.items() if k != name}, clean, names)
    stressed = [st.builds(lambda body, value, name=name: {**body, name: value}, clean, fields[name])
                for name in stress if name in fields]
    return weighted((2, clean), (2, spoiled), (1, dropped), (1, hostile), *((1, s) for s in stressed))


@dataclass
class World:
    """What the strategies draw from (filled by the fixture): loadable adapter paths, hostile ones on disk, the
    allowed root they lie in, and adapter names."""

    good: list[str]
    bad: list[str]
    root: str
    names: list[str]


def adapter_paths(world: World) -> st.SearchStrategy:
    """One flat list of concrete cases (so each is drawn about as often), plus any text under the root."""
    good, root = world.good[0], world.root
    cases = world.good + world.bad + [
        good + "\x00x", "\x00", good + "\ud800", "\udc80",  # NUL byte, lone surrogates
        good + "/" + "n" * 300, root + "/" + "/".join(["d" * 200] * 21),  # over NAME_MAX, over PATH_MAX
        good + "/../../../../etc", good + "/", good.replace("/", "//"),  # traversal, odd spellings
        "~/x", "~nobody/x", "peft/alpha", "alpha", ".", "", " ", "/dev/zero", "/etc/passwd", root + "/missing",
    ]
    return weighted((3, st.sampled_from(cases)), (1, texts.map(lambda t: f"{root}/{t}")))


def scales() -> st.SearchStrategy:
    edge = st.sampled_from([0, 1, 0.5, -1, 8, -8, 8.0001, 100, -1000, 1e308, -1e308, 3.5e38, 3.4028235e38, 1e-320])
    return st.one_of(st.floats(-8, 8), edge, st.integers(-10, 10))


def adapter_entry(world: World) -> st.SearchStrategy:
    ids = st.one_of(st.integers(0, 3), st.integers(-2, 9), st.sampled_from([10**30, -(10**30), 2**63]))
    by_id = st.fixed_dictionaries({"id": ids}, optional={"scale": scales()})
    by_path = st.fixed_dictionaries({"path": adapter_paths(world)}, optional={"scale": scales()})
    fields = {"id": ids, "path": adapter_paths(world), "scale": scales()}
    return weighted((2, by_id), (3, by_path), (1, body_of(fields)))


def adapter_list(world: World) -> st.SearchStrategy:
    """Mostly a plausible set: loadable adapters, each once, at scales in or just out of range; else any entries
    (duplicates come naturally from the small pools)."""
    plausible = st.lists(st.tuples(st.sampled_from(world.good), scales()), min_size=1, max_size=3,
                         unique_by=lambda pair: pair[0]).map(lambda pairs: [{"path": p, "scale": s} for p, s in pairs])
    mixed = st.lists(adapter_entry(world), min_size=1, max_size=3)
    return weighted((2, plausible), (2, mixed), (1, st.just([])))


# -- fields per route (data: one entry per field) ------------------------------------------------------------------
GRAMMARS = ['root ::= "yes" | "no"', 'root ::= [a-z]+', "root ::= root", 'root ::= "a" root?', "root ::=",
            "x ::= y", 'root ::= "\\x00"', "root ::= [", 'root ::= ("a" | "b")* "c"{0,1000000}']
SCHEMAS = [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"type": "string"},
           {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2}, {"minimum": 3}, {"type": "nope"},
           {"$ref": "#/nowhere"}, {"properties": {"x": {"properties": {"y": {"type": "boolean"}}}}}, {}]
RESPONSE_FORMATS = [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema"}, {"type": "xml"},
                    {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMAS[0]}},
                    {"type": "json_object", "schema": SCHEMAS[2]}]


def sampling_fields(world: World) -> dict[str, st.SearchStrategy]:
    many_stops = st.integers(0, 1000).map(lambda n: [f"s{i}" for i in range(n)])
    token_ids = st.sampled_from(["0", "5", "1023", "1024", "-1", "x", "99999999999"])
    return {
        "max_tokens": st.integers(1, 4), "max_completion_tokens": st.integers(1, 4),
        # the ranges reach past what is valid (temperature >= 0, top_p and min_p in [0, 1]): those are 400s
        "temperature": st.one_of(st.floats(0, 2), st.floats(-2, 0, exclude_max=True)),
        "top_p": st.one_of(st.floats(0, 1), st.floats(-1, 2)), "top_k": st.integers(0, 50),
        "min_p": st.one_of(st.floats(0, 1), st.floats(-1, 2)), "typical_p": st.floats(0, 1), "repeat_penalty": st.floats(0.5, 2),
        "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
        "seed": st.integers(0, 2**32 - 1),
        "stop": st.one_of(texts, st.lists(texts, max_size=4), many_stops),
        "logit_bias": st.dictionaries(token_ids, st.one_of(st.floats(-100, 100), st.sampled_from([1e308, -1e308])),
                                      max_size=3),
        "ignore_eos": st.booleans(), "grammar": st.one_of(st.sampled_from(GRAMMARS), texts),
        "json_schema": st.sampled_from(SCHEMAS),
        "stream": st.booleans(), "stream_options": st.sampled_from([{"include_usage": True}, {}, {"x": 1}]),
        "cache_prompt": st.booleans(), "n": st.just(1), "user": texts,
        "model": st.sampled_from(world.names + ["local", ""]),
        "lora": adapter_list(world),
    }


def token_lists() -> st.SearchStrategy:
    return st.one_of(st.lists(st.integers(0, 2047), max_size=8), st.lists(st.integers(), max_size=3))


def prompts() -> st.SearchStrategy:
    return st.one_of(st.just(PROMPT), texts, st.integers(1, 3000).map(lambda n: "Leases " * n),  # past n_ctx
                     token_lists(), st.lists(texts, min_size=1, max_size=2))


def text_fields(world: World) -> dict[str, st.SearchStrategy]:
    return {**sampling_fields(world), "prompt": prompts(), "echo": st.booleans(), "logprobs": st.integers(0, 20)}


def chat_fields(world: World) -> dict[str, st.SearchStrategy]:
    content = st.one_of(st.just(PROMPT), texts, prompts(),
                        st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                                        "text": texts}), max_size=2))
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                     "content": content}, optional={"name": texts})
    return {**sampling_fields(world), "messages": st.lists(weighted((3, message), (1, hostile)), min_size=1,
                                                           max_size=3),
            "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20),
            "response_format": st.sampled_from(RESPONSE_FORMATS)}


def embedding_fields(world: World) -> dict[str, st.SearchStrategy]:
    inputs = st.one_of(st.just(PROMPT), texts, st.lists(texts, max_size=3), token_lists(),
                       st.lists(token_lists(), max_size=3), st.integers(1, 3000).map(lambda n: "Leases " * n))
    return {"input": inputs, "encoding_format": st.sampled_from(["float", "base64", "hex"]),
            "model": st.sampled_from(world.names + ["local"]), "lora": adapter_list(world), "user": texts}


def adapters_body(world: World) -> st.SearchStrategy:
    """Both POST /lora-adapters forms: the seed's {"adapters": [...]} and llama-server's bare list."""
    seed_form = st.builds(lambda a: {"adapters": a}, adapter_list(world))
    extra = st.builds(lambda a, x: {"adapters": a, "extra": x}, adapter_list(world), hostile)
    return weighted((3, seed_form), (2, adapter_list(world)), (1, extra), (1, hostile))


STRESS = ("lora", "model", "stream", "stop", "grammar", "logit_bias")  # tried on their own, next to plausible values


@dataclass(frozen=True)
class Route:
    """One route: its method and the JSON bodies to throw at it (None: no body)."""

    method: str
    path: str
    body: Callable[[World], st.SearchStrategy] | None = None
    changes_adapters: bool = False  # an accepted request may change the adapter state
    weight: int = 1  # relative share of the generated requests


ROUTES = [
    Route("POST", "/v1/completions", lambda w: body_of(text_fields(w), ("prompt", "max_tokens"), STRESS), True, 4),
    Route("POST", "/v1/chat/completions", lambda w: body_of(chat_fields(w), ("messages", "max_tokens"), STRESS),
          True, 4),
    Route("POST", "/lora-adapters", adapters_body, True, weight=4),
    Route("POST", "/v1/embeddings", lambda w: body_of(embedding_fields(w), ("input",), STRESS), True, 2),
    Route("POST", "/tokenize", lambda w: body_of({"content": prompts(), "add_special": st.booleans(),
                                                  "parse_special": st.booleans()}, ("content",))),
    Route("POST", "/apply-template", lambda w: body_of({"messages": chat_fields(w)["messages"]}, ("messages",))),
    Route("GET", "/lora-adapters"),
    Route("GET", "/v1/models"),
    Route("GET", "/health"),
    Route("GET", "/metrics"),
    Route("GET", "/slots"),
    Route("GET", "/v1/nowhere"),  # unknown paths answer 404 JSON
]


# -- requests ------------------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One generated HTTP request."""

    route: Route
    method: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's printer: use the short form
        printer.text(repr(self))

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example: short, even for 11 MB bodies
        body = self.content or b""
        more = f" (+{len(body) - 300} bytes)" if len(body) > 300 else ""
        return f"{self.method} {self.route.path} params={self.params} headers={self.headers} {body[:300]!r}{more}"


RAW_BODIES = [b"", b"{", b"[", b"null", b"NaN", b'{"adapters": [{"path": "x", "scale": NaN}]}', b"\xff\xfe",
              b'{"a": 1e999999}', b'{"prompt": "\\ud800"}', b'{"prompt": "\xed\xa0\x80"}', b"{}" * 3, b'"text"']
# (what to repeat, how often, what to wrap it in): built on demand, so Hypothesis never prints megabytes
BIG_BODIES = [(b"[", 100_000, b""), (b"1", 5000, b""), (b"9", 4400, b'{"max_tokens": %s}'),
              (b"a", BODY_LIMIT - 64, b'{"prompt": "%s"}'), (b"a", BODY_LIMIT + 1, b'{"prompt": "%s"}'),
              (b"a", 11 * BODY_LIMIT, b'{"prompt": "%s"}')]


def raw_bodies() -> st.SearchStrategy:
    """Bytes that are not (or not quite) JSON, and bodies around the size limit."""
    big = st.sampled_from(range(len(BIG_BODIES))).map(
        lambda i: (BIG_BODIES[i][2] or b"%s") % (BIG_BODIES[i][0] * BIG_BODIES[i][1]))
    return st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64), big)


def calls(route: Route, world: World) -> st.SearchStrategy:
    """Requests for one route: its method with plausible-to-hostile bodies (or headers and query junk), and
    now and then another method."""
    headers = st.sampled_from([{"content-type": "application/json"}, {}, {"content-type": "text/plain"},
                               {"authorization": "Bearer nope"}, {"content-type": "application/json; charset=latin-1"}])
    params = st.sampled_from([{}, {"id": "0"}, {"x": "\x00"}])
    right = st.builds(lambda h, p: Call(route, route.method, headers=h, params=p), headers, params)
    if route.body is not None:
        json_body = route.body(world).map(lambda b: json.dumps(b).encode())  # ensure_ascii: \ud800 escapes
        content = weighted((8, json_body), (1, raw_bodies()))
        right = st.builds(lambda c, h: Call(route, route.method, content=c, headers=h), content, headers)
    methods = st.sampled_from([m for m in METHODS if m != route.method])
    wrong = st.builds(lambda m, c: Call(route, m, content=c), methods, st.sampled_from([None, b"{}"]))
    return weighted((10, right), (1, wrong))


# -- the checks ----------------------------------------------------------------------------------------------------
def send(client: httpx.Client, call: Call) -> tuple[int, list[int]]:
    """(status, error codes inside an SSE stream)."""
    with client.stream(call.method, call.route.path, content=call.content, headers=call.headers,
                       params=call.params) as reply:
        stream_errors = []
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            for line in reply.iter_lines():
                if line.startswith("data: {\"error\""):
                    stream_errors.append(json.loads(line[6:])["error"].get("code", 500))
        else:
            reply.read()
        if reply.status_code >= 400 and call.method != "HEAD":
            error = reply.json()["error"]
            assert error["message"] and error["type"], reply.text
        return reply.status_code, stream_errors


def state(client: httpx.Client) -> list[dict[str, Any]]:
    reply = client.get("/lora-adapters")
    assert reply.status_code == 200, reply.text
    return reply.json()


def restore(client: httpx.Client, baseline: list[dict[str, Any]]) -> None:
    """Put the global set back to `baseline` (llama-server form: ids left out get scale 0)."""
    body = [{"id": a["id"], "scale": a["scale"]} for a in baseline if a["scale"] != 0]
    reply = client.post("/lora-adapters", json=body)
    assert reply.status_code == 200, reply.text
    now = {a["id"]: a for a in state(client)}
    assert all(now[a["id"]] == a for a in baseline)
    assert all(a["scale"] == 0 for i, a in now.items() if i not in {b["id"] for b in baseline})


@pytest.fixture(scope="module")
def world(hostile_files: dict[str, Path], lora_dirs: dict[str, Path]) -> World:
    good = [lora_dirs["alpha"], lora_dirs["beta"], lora_dirs["alpha"] / "adapter.gguf", hostile_files["link_in"],
            hostile_files["beta_twin"]]  # three distinct files: more than --max-loaded-adapters 2 (429s)
    bad = [path for name, path in hostile_files.items() if name not in ("link_in", "root", "beta_twin")]
    return World(good=[str(p) for p in good], bad=sorted(str(p) for p in bad), root=str(hostile_files["root"]),
                 names=sorted(lora_dirs) + ["link_in", "random_bytes"])


def known_holes(route: Route, world: World) -> list[Call]:
    """Issue 17's two reproductions, always run first: a scale that is inf as a float32, and a NUL in a path."""
    if (route.method, route.path) != ("POST", "/lora-adapters"):
        return []
    bodies = [[{"id": 0, "scale": 1e308}], [{"id": 0, "scale": -1000}],
              {"adapters": [{"path": world.good[0] + "\x00x", "scale": 1}]}]
    return [Call(route, "POST", content=json.dumps(body).encode()) for body in bodies]


def check(client: httpx.Client, call: Call, tally, baseline: list[dict[str, Any]], probe: Callable) -> None:
    """Send one call and check every property; the baseline set is put back whatever happened."""
    before = state(client)
    try:
        status, stream_errors = send(client, call)
        tally.requests += 1
        tally.statuses[status] += 1
        if status >= 500 or any(code >= 500 for code in stream_errors):
            tally.server_errors.append(repr(call))
        assert status < 500 and all(code < 500 for code in stream_errors), repr(call)
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        after = state(client)
        rejected = status >= 400 or bool(stream_errors)
        if rejected or not call.route.changes_adapters or call.method != call.route.method:
            if after != before:
                tally.rejected_state_changes.append(repr(call))
            assert after == before, f"{call!r} changed the adapters:\n{before}\n->\n{after}"
            return
        # accepted, on a route that may change adapters: later greedy output must still be sane
        tally.probes += 1
        tally.accepted_changes += after != before
        probe(client)
    finally:
        if state(client) != before:
            restore(client, baseline)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_fuzz_route(route: Route, fuzz_server: str, fuzz_config, fuzz_budget, world: World, tally, probe) -> None:
    """The profile's budget, shared out by route weight."""
    budget = max(5, round(fuzz_budget.max_examples * route.weight / sum(r.weight for r in ROUTES)))
    client = httpx.Client(base_url=fuzz_server, timeout=60)
    baseline = state(client)
    active = [(a["path"], a["scale"]) for a in baseline if a["scale"]]
    assert active == fuzz_config.loras  # a non-empty state to protect
    probe(client)
    done, failures = tally.requests, len(tally.server_errors) + len(tally.rejected_state_changes)

    @given(call=calls(route, world))
    def one(call: Call) -> None:
        check(client, call, tally, baseline, probe)

    for hole in known_holes(route, world):
        one = example(call=hole)(one)
    try:
        settings(fuzz_budget, max_examples=budget)(one)()
    finally:
        client.close()
    assert tally.requests - done >= min(budget * 0.9, 20)  # small routes may run out of distinct requests sooner
    assert len(tally.server_errors) + len(tally.rejected_state_changes) == failures
