"""Engine v2 on real llama.cpp: no cross-talk between adapter sets under concurrency, adapter changes that never
wait for a stream, streamed == unstreamed text, prefix reuse, waiting for a slot, cancellation and SIGTERM."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from strata.ports import free_port
from strata.serve.server import serve_in_thread

PROMPT = "Revenue is recognized when"  # the conftest's fresh_reply prompt
HEADER = "x-strata-adapters"


def stream_text(client: httpx.Client, path: str, body: dict, on_first=None,
                on_line=None) -> tuple[str, list[str], dict]:
    """(joined text, raw data lines, headers) of a streamed reply; `on_first()` runs after the first chunk,
    `on_line(data)` after every data line."""
    pieces, lines = [], []
    with client.stream("POST", path, json={**body, "stream": True}) as reply:
        assert reply.status_code == 200, reply.read()
        headers = dict(reply.headers)
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            lines.append(line[6:])
            if on_line is not None:
                on_line(line[6:])
            if line[6:] == "[DONE]":
                break
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                pieces.append(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
            if on_first is not None and len(lines) == 1:
                on_first()
    return "".join(pieces), lines, headers


def test_no_cross_talk_between_sets_with_global_flips(server, lora_dirs, fresh_reply):
    """8 concurrent clients, half on per-request sets and half on the global set, which a ninth thread flips every
    200 ms: every reply is the greedy reply of the set it ran under (named by the X-Strata-Adapters header),
    computed alone on a fresh server. (Batched and solo decoding gave identical tokens here, so the comparison is
    exact; if a llama.cpp update made batching flip a greedy token, compare up to the first divergence instead.)"""
    alpha, beta = str(lora_dirs["alpha"]), str(lora_dirs["beta"])
    sets = {"base": (), "alpha@1": ((alpha, 1.0),), "beta@1": ((beta, 1.0),),
            "alpha@0.6+beta@0.4": ((alpha, 0.6), (beta, 0.4))}
    expected = {label: fresh_reply(loras) for label, loras in sets.items()}
    assert len(set(expected.values())) == len(sets)
    labels = list(sets)
    done = threading.Event()
    flips: list[int] = []  # status of every flip, checked here in the test (an assert in a thread only warns)

    def flip() -> None:
        with httpx.Client(base_url=server, timeout=60) as client:
            i = 0
            while not done.is_set():
                chosen = sets[labels[i % len(labels)]]
                flips.append(client.post("/lora-adapters", json={"adapters": [{"path": p, "scale": s}
                                                                              for p, s in chosen]}).status_code)
                i += 1
                done.wait(0.02)  # fast enough that a quiet machine finishing all 24 replies still sees flips

    def worker(i: int) -> list[tuple[str | None, str, str]]:
        out = []
        with httpx.Client(base_url=server, timeout=300) as client:
            for round_ in range(3):
                own = labels[(i + round_) % len(labels)] if i % 2 else None
                body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}
                if own is not None:
                    body["lora"] = [{"path": p, "scale": s} for p, s in sets[own]]
                reply = client.post("/v1/completions", json=body)
                assert reply.status_code == 200, reply.text
                out.append((own, reply.headers[HEADER], reply.json()["choices"][0]["text"]))
        return out

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = [r for batch in pool.map(worker, range(8)) for r in batch]
    finally:
        done.set()
        flipper.join()
        httpx.post(f"{server}/lora-adapters", json={"adapters": []})
    assert len(results) == 24
    assert len(flips) >= 3 and set(flips) == {200}  # the global set really changed under the requests
    global_sets = {served for own, served, _ in results if own is None}
    for own, served, text in results:
        if own is not None:
            assert served == own  # a per-request set is never replaced by the global one
        assert text == expected[served], (own, served)
    assert global_sets <= set(labels)


def test_global_change_during_a_stream_answers_at_once_and_leaves_the_stream_alone(api, lora_dirs, complete):
    alpha, beta = str(lora_dirs["alpha"]), str(lora_dirs["beta"])
    api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 1.0}]})
    body = {"prompt": PROMPT, "max_tokens": 300, "temperature": 0, "ignore_eos": True}
    expected = complete(api, max_tokens=300, ignore_eos=True)
    timings = {}
    counted: list[str] = []

    def switch() -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{api.base_url}/lora-adapters", json={"adapters": [{"path": beta, "scale": 1.0}]})
        timings["switch"] = time.perf_counter() - started
        timings["status"], timings["name"] = reply.status_code, reply.json()[0]["name"]
        counted.append("switched")

    def on_line(line: str) -> None:
        if counted:
            counted.append(line)

    text, lines, headers = stream_text(api, "/v1/completions", body, on_first=switch, on_line=on_line)
    assert text == expected and headers[HEADER] == "alpha@1"  # the stream kept the set it was admitted with
    assert (timings["status"], timings["name"]) == (200, "beta") and timings["switch"] < 1.0
    assert len(counted) - 1 >= 50  # the POST was answered while the stream still had most of its tokens to send
    after = api.post("/v1/completions", json={**body, "max_tokens": 12})
    assert after.headers[HEADER] == "beta@1"  # requests admitted after the POST get the new set


GRAMMAR = 'root ::= "café € naïve — ok"'


@pytest.mark.parametrize("stop, want", [([], "café € naïve — ok"), (["€ na"], "café "), (["é €"], "caf"),
                                        (["— o", "ïve"], "café € na")])
def test_streamed_equals_unstreamed_with_multibyte_pieces_and_stops_across_tokens(api, stop, want):
    # the grammar makes the tiny model spell out multi-byte characters through byte-fallback tokens
    body = {"prompt": PROMPT, "max_tokens": 60, "temperature": 0, "grammar": GRAMMAR, "stop": stop}
    whole = api.post("/v1/completions", json=body).json()["choices"][0]
    streamed, lines, _ = stream_text(api, "/v1/completions", body)
    assert whole["text"] == streamed == want and "\ufffd" not in "".join(lines)
    assert whole["finish_reason"] == "stop"
    chat = {"messages": [{"role": "user", "content": "Say it"}], "max_tokens": 60, "temperature": 0,
            "grammar": GRAMMAR, "stop": stop}
    reply = api.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    assert reply == stream_text(api, "/v1/chat/completions", chat)[0] == want


def test_long_stream_costs_the_same_as_unstreamed_text(api, complete):
    body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    whole = complete(api, max_tokens=400, ignore_eos=True)
    streamed, lines, _ = stream_text(api, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert streamed == whole
    usage = json.loads(lines[-2])["usage"]
    assert usage["completion_tokens"] == 400 and usage["prompt_tokens"] > 0


def test_second_chat_turn_reuses_the_cached_prefix_and_matches_a_cold_run(config_for):
    turn = [{"role": "user", "content": "What is a lease?"}]
    body = {"max_tokens": 12, "temperature": 0}
    with serve_in_thread(config_for(parallel=2)) as url, httpx.Client(base_url=url, timeout=120) as client:
        first = client.post("/v1/chat/completions", json={**body, "messages": turn}).json()
        history = turn + [first["choices"][0]["message"], {"role": "user", "content": "And goodwill?"}]
        second = client.post("/v1/chat/completions", json={**body, "messages": history}).json()
        opted_out = client.post("/v1/chat/completions", json={**body, "messages": history,
                                                               "cache_prompt": False}).json()
        metrics = client.get("/metrics").text
    assert opted_out["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # cache_prompt: false reads it all
    assert opted_out["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"] - 1  # the whole first turn came from the slot's KV
    assert "strata_cached_prompt_tokens_total" in metrics
    with serve_in_thread(config_for(parallel=2)) as url:
        cold = httpx.post(f"{url}/v1/chat/completions", json={**body, "messages": history}, timeout=120).json()
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert cold["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_requests_wait_only_for_a_free_slot(config_for, complete):
    """Judged by what the server saw, not by which client thread the 2 shared cores ran first: with one slot the
    short request's wait covers most of the long stream; with two it finishes while the long one still streams."""
    long_body = {"prompt": PROMPT, "max_tokens": 250, "temperature": 0, "ignore_eos": True}
    for parallel in (1, 2):
        with serve_in_thread(config_for(parallel=parallel)) as url, httpx.Client(base_url=url, timeout=300) as c:
            solo = complete(c, prompt="Leases", max_tokens=6)
            waited_before = slot_wait(c)
            finished: dict = {}
            seen: list[str] = []

            def short() -> None:
                finished["short_text"] = complete(c, prompt="Leases", max_tokens=6)
                finished["lines_then"] = len(seen)

            runner = threading.Thread(target=short)
            began = time.perf_counter()
            stream_text(c, "/v1/completions", long_body, on_first=runner.start, on_line=seen.append)
            streamed_s = time.perf_counter() - began
            runner.join()
            waited = slot_wait(c) - waited_before
            assert finished["short_text"] == solo  # waited (parallel 1) or ran beside it (2): same answer
            if parallel == 1:
                assert waited > 0.3 * streamed_s  # N+1 waited for the slot while the long stream ran
            else:
                assert finished["lines_then"] < len(seen) - 50  # done while the long stream had far to go
                assert waited < 0.3 * streamed_s


def slot_wait(client: httpx.Client) -> float:
    """Seconds requests have waited for a slot so far (the server's histogram sum)."""
    text = client.get("/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("strata_slot_wait_seconds_sum")))


def test_disconnect_frees_the_slot_within_a_step(api):
    def busy() -> int:
        return api.get("/health").json()["slots_busy"]

    def cancelled() -> float:
        text = api.get("/metrics").text
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("strata_cancelled_total")))

    before = cancelled()
    with api.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 480, "temperature": 0,
                                                     "ignore_eos": True, "stream": True}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                assert busy() == 1
                break
    deadline = time.monotonic() + 10
    while busy() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert busy() == 0 and cancelled() == before + 1
    # an unstreamed request whose client hangs up is stopped too: send it on a raw socket, close it once the
    # request holds a slot (a 0.3 s client timeout raced a fast machine finishing all 480 tokens first)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 500, "temperature": 0, "ignore_eos": True}).encode()
    url = httpx.URL(str(api.base_url))
    with socket.create_connection((url.host, url.port)) as raw:
        raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 10
        while not busy() and time.monotonic() < deadline:
            pass
        assert busy() == 1
    deadline = time.monotonic() + 10
    while busy() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert busy() == 0 and cancelled() == before + 2


def test_sigterm_during_a_long_generation_ends_the_stream_and_exits_in_seconds(base_gguf, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "strata.serve", "--model", str(base_gguf), "--port", str(port),
                             "--n_ctx", "8192", "--parallel", "1", "--n_threads", "2", "--workspace",
                             str(tmp_path / "ws")], stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        sent = {}

        def terminate() -> None:
            sent["at"] = time.monotonic()
            proc.send_signal(signal.SIGTERM)

        with httpx.Client(base_url=url, timeout=60) as client:
            text, lines, _ = stream_text(client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 8000,
                                                                    "temperature": 0, "ignore_eos": True},
                                         on_first=terminate)
        proc.wait(timeout=30)
        exited = time.monotonic() - sent["at"]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert exited < 8, exited  # 8,000 tokens would take far longer: generation stopped at once
    assert "[DONE]" not in lines and "shutting down" in lines[-1]  # the stream ended with an error event
    output = (tmp_path / "serve.log").read_text()
    # uvicorn re-raises the signal after its shutdown, as process supervisors expect
    assert proc.returncode in (0, -signal.SIGTERM), output[-2000:]
    assert "Application shutdown complete" in output and "Traceback" not in output, output[-2000:]
    assert "POST /v1/completions" not in output  # no access-log line per request unless --access-log is given


def test_a_scale_that_breaks_the_model_fails_its_request_and_poisons_no_slot(config_for, lora_dirs, complete):
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 1, "cache_prompt": False}
    with serve_in_thread(config_for(max_lora_scale=1e30, parallel=2)) as url, httpx.Client(base_url=url,
                                                                                          timeout=120) as client:
        base = complete(client)
        broken = client.post("/v1/completions", json={**body, "lora": [{"path": str(lora_dirs["alpha"]),
                                                                        "scale": 1e30}]})
        assert broken.status_code == 500 and "non-finite" in broken.json()["error"]["message"], broken.text
        for _ in range(3):  # every slot again, the broken one included
            reply = client.post("/v1/completions", json=body)
            assert reply.status_code == 200, reply.text
            assert all(math.isfinite(v) for v in reply.json()["choices"][0]["logprobs"]["token_logprobs"])
        assert complete(client) == base
