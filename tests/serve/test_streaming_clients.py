"""Streaming SSE, the official openai client, 8 concurrent clients with swaps, disconnects and /metrics."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

PROMPT = "Revenue is recognized when"  # same prompt as the conftest's fresh_reply


def sse_events(client: httpx.Client, path: str, body: dict) -> list[dict]:
    events = []
    with client.stream("POST", path, json={**body, "stream": True}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_equals_non_streaming(api, lora_dirs, complete):
    lora = [{"path": str(lora_dirs["alpha"]), "scale": 1.0}]
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "lora": lora}
    chunks = sse_events(api, "/v1/completions", body)
    assert len(chunks) > 1 and all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == complete(api, lora=lora)
    chat = {"messages": [{"role": "user", "content": "What is a lease?"}], "max_tokens": 10, "temperature": 0}
    streamed = sse_events(api, "/v1/chat/completions", chat)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    whole = api.post("/v1/chat/completions", json=chat).json()
    assert text == whole["choices"][0]["message"]["content"] and whole["object"] == "chat.completion"
    bad = api.post("/v1/completions", json={**body, "stream": True, "lora": [{"id": 1234}]})
    assert bad.status_code == 404  # adapters are resolved before the stream starts


def test_openai_client(server, lora_dirs, fresh_reply):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    listed = {m.id for m in client.models.list().data}
    assert "base-f16" in listed
    text = client.completions.create(model="local", prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    assert text == fresh_reply(())
    stream = client.completions.create(model="local", prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
                                       extra_body={"lora": [{"path": str(lora_dirs["beta"]), "scale": 1.0}]})
    assert "".join(c.choices[0].text for c in stream) == fresh_reply(((str(lora_dirs["beta"]), 1.0),))
    messages = [{"role": "user", "content": "Give me two facts about leases"}]
    chat = client.chat.completions.create(model="local", messages=messages, max_tokens=10, temperature=0)
    streamed = client.chat.completions.create(model="local", messages=messages, max_tokens=10, temperature=0,
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    assert chat.usage.completion_tokens > 0


def test_eight_concurrent_clients_with_interleaved_swaps(api, lora_dirs, fresh_reply):
    alpha, beta = str(lora_dirs["alpha"]), str(lora_dirs["beta"])
    sets = [(), ((alpha, 1.0),), ((beta, 1.0),), ((alpha, 0.6), (beta, 0.4))]
    expected = {s: fresh_reply(s) for s in sets}
    assert len(set(expected.values())) == len(sets)

    def worker(i: int) -> tuple[tuple, str]:
        chosen = sets[i % len(sets)]
        with httpx.Client(base_url=str(api.base_url), timeout=300) as client:
            if i % 2:  # interleave global swaps with the generations
                client.post("/lora-adapters", json={"adapters": [{"path": p, "scale": s} for p, s in sets[(i + 1) % 4]]})
            reply = client.post("/v1/completions", json={
                "prompt": PROMPT, "max_tokens": 12, "temperature": 0,
                "lora": [{"path": p, "scale": s} for p, s in chosen]})
            return chosen, reply.json()["choices"][0]["text"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    for chosen, text in results:
        assert text == expected[chosen], chosen


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_disconnect_frees_engine_and_metrics_move(api, lora_dirs, complete):
    before = api.get("/metrics").text
    with api.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 400, "temperature": 0,
                                                     "stream": True, "stop": []}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                break  # walk away after the first chunk
    assert complete(api, max_tokens=4)  # the engine is free again
    freed = api.get("/metrics").text
    assert metric(freed, "strata_stream_disconnects_total") == metric(before, "strata_stream_disconnects_total") + 1
    generated = metric(freed, 'strata_tokens_total{kind="completion"}') - metric(
        before, 'strata_tokens_total{kind="completion"}')
    assert generated < 100  # the abandoned 400-token stream stopped early (the 4-token completion included)
    api.post("/lora-adapters", json={"adapters": [{"path": str(lora_dirs["alpha"]), "scale": 1.0}]})
    complete(api, max_tokens=4)
    after = api.get("/metrics").text
    assert metric(after, "strata_requests_total") > metric(before, "strata_requests_total")
    assert metric(after, "strata_tokens_total") > metric(before, "strata_tokens_total")
    assert metric(after, "strata_adapter_swaps_total") > metric(before, "strata_adapter_swaps_total")
    assert metric(after, "strata_request_seconds_count") > metric(before, "strata_request_seconds_count")
    assert metric(after, "strata_adapter_load_seconds_count") >= 1
    assert metric(after, "strata_active_adapters") == 1
