"""Measurements against a running server (streamed decode, concurrency, adapter changes, long streams, chat prefix
reuse) and memory bandwidth."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from strata.qa.client import sse_events

# A prompt the greedy random-weight model does not end early on; a per-request prefix defeats prefix caches.
PROMPT = ("The lessee shall recognize a right-of-use asset and a lease liability at the commencement date. "
          "The lease liability is measured at the present value of the lease payments not yet paid, "
          "discounted using the rate implicit in the lease. Explain the measurement in detail:")


def prompt_for(tag: str) -> str:
    return f"[{tag}] {PROMPT}"


@dataclass
class Sample:
    """One streamed completion."""

    ttft_s: float  # request sent -> first token event
    decode_tps: float | None  # (tokens - 1) / (last event - first token event); None below 2 tokens
    tokens: int
    total_s: float
    finish: str | None


def body_for(prompt: str, max_tokens: int, extra: dict) -> dict:
    """The same greedy request for every peer (ignore_eos is llama-server's and strata's name; llama-cpp-python's
    server ignores it, and the bench model never picks EOS anyway)."""
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, **extra}


def stream_completion(client: httpx.Client, base: str, prompt: str, max_tokens: int, extra: dict) -> Sample:
    """POST /v1/completions with stream=true, greedy; time the SSE events as they arrive."""
    body = {**body_for(prompt, max_tokens, extra), "stream": True}
    sent = time.perf_counter()
    first = last = None
    events, finish = 0, None
    with client.stream("POST", base + "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            raise RuntimeError(f"{base}/v1/completions answered {resp.status_code}: {resp.text[:300]}")
        for event in sse_events(resp):
            choices = event.get("choices") or []
            if not choices:
                continue
            now = time.perf_counter()
            choice = choices[0]
            if choice.get("text") or choice.get("finish_reason") is None:
                events += 1
                first = first if first is not None else now
            last = now
            finish = choice.get("finish_reason") or finish
    done = time.perf_counter()
    tokens = max_tokens if finish == "length" else events  # "length" means exactly max_tokens were generated
    if first is None or last is None:
        raise RuntimeError(f"{base} streamed no tokens")
    span = last - first
    return Sample(ttft_s=first - sent, decode_tps=(tokens - 1) / span if span > 0 and tokens > 1 else None,
                  tokens=tokens, total_s=done - sent, finish=finish)


def single_stream(base: str, tags: list[str], max_tokens: int, extra: dict) -> list[Sample]:
    with httpx.Client(timeout=600.0) as client:
        return [stream_completion(client, base, prompt_for(tag), max_tokens, extra) for tag in tags]


def concurrent_streams(base: str, tags: list[str], max_tokens: int, extras: list[dict],
                       during=None) -> dict:
    """len(tags) streams at once (stream i adds extras[i] to its body); aggregate tokens/s = all tokens / wall time
    from first send to last finish. `during(base)` runs while they stream; its result is returned as "during"."""
    barrier = threading.Barrier(len(tags) + (during is not None))

    def one(i: int) -> Sample:
        with httpx.Client(timeout=900.0) as client:
            barrier.wait()
            return stream_completion(client, base, prompt_for(tags[i]), max_tokens, extras[i])

    started = time.perf_counter()
    with ThreadPoolExecutor(len(tags)) as pool:
        futures = [pool.submit(one, i) for i in range(len(tags))]
        extra = None
        if during is not None:
            barrier.wait()
            extra = during(base)
        samples = [f.result() for f in futures]
    wall = time.perf_counter() - started
    tokens = sum(s.tokens for s in samples)
    return {"aggregate_tps": tokens / wall, "wall_s": wall, "tokens": tokens, "during": extra,
            "ttft_s": [s.ttft_s for s in samples], "streams": [asdict(s) for s in samples]}


def posts_while_streaming(count: int, gap_s: float = 0.05, settle_s: float = 0.5):
    """A `during` callback: after the streams have started, `count` POST /lora-adapters (id form, alternating two
    adapters) spaced by gap_s; returns their latencies."""
    def during(base: str) -> list[float]:
        time.sleep(settle_s)
        out = []
        with httpx.Client(timeout=60.0) as client:
            for i in range(count):
                on, off = (0, 1) if i % 2 == 0 else (1, 0)
                out.append(_post_adapters(client, base, [{"id": on, "scale": 1.0}, {"id": off, "scale": 0.0}]))
                time.sleep(gap_s)
        return out

    return during


def long_stream_vs_whole(base: str, tag: str, max_tokens: int) -> dict:
    """The same greedy completion of max_tokens tokens streamed and not; seconds each (send -> last byte)."""
    with httpx.Client(timeout=1800.0) as client:
        streamed = stream_completion(client, base, prompt_for(tag), max_tokens, {})
        started = time.perf_counter()
        reply = client.post(base + "/v1/completions", json=body_for(prompt_for(tag), max_tokens, {}))
        whole_s = time.perf_counter() - started
        if reply.status_code != 200:
            raise RuntimeError(f"{base}/v1/completions answered {reply.status_code}: {reply.text[:300]}")
    return {"streamed_s": streamed.total_s, "whole_s": whole_s, "tokens": streamed.tokens,
            "ratio": streamed.total_s / whole_s}


def chat_turns(base: str, tag: str, first_tokens: int = 32) -> dict:
    """TTFT of a chat's first turn and of its second turn (the first turn and its answer as history)."""
    def turn(client: httpx.Client, messages: list[dict], max_tokens: int) -> tuple[float, str]:
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                "ignore_eos": True}
        sent, first, text = time.perf_counter(), None, []
        with client.stream("POST", base + "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                raise RuntimeError(f"{base}/v1/chat/completions answered {resp.status_code}: {resp.text[:300]}")
            for event in sse_events(resp):
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        first = first if first is not None else time.perf_counter()
                        text.append(content)
        if first is None:
            raise RuntimeError(f"{base} streamed no chat content")
        return first - sent, "".join(text)

    with httpx.Client(timeout=600.0) as client:
        history = [{"role": "user", "content": prompt_for(tag)}]
        ttft1, answer = turn(client, history, first_tokens)
        history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Go on, in one line."}]
        ttft2, _ = turn(client, history, 4)
    return {"ttft1_s": ttft1, "ttft2_s": ttft2}


def _post_adapters(client: httpx.Client, base: str, body) -> float:
    started = time.perf_counter()
    resp = client.post(base + "/lora-adapters", json=body)
    elapsed = time.perf_counter() - started
    if resp.status_code != 200:
        raise RuntimeError(f"{base}/lora-adapters answered {resp.status_code}: {resp.text[:300]}")
    return elapsed


def set_adapters(base: str, body) -> None:
    with httpx.Client(timeout=60.0) as client:
        _post_adapters(client, base, body)


def switch_latencies(base: str, count: int) -> list[float]:
    """POST /lora-adapters `count` times while idle, alternating between two loaded adapters in llama-server's id
    form [{"id": 0, "scale": 1}, {"id": 1, "scale": 0}]; seconds per round trip. Ends on the bare model."""
    out = []
    with httpx.Client(timeout=60.0) as client:
        for i in range(count):
            on, off = (0, 1) if i % 2 == 0 else (1, 0)
            out.append(_post_adapters(client, base, [{"id": on, "scale": 1.0}, {"id": off, "scale": 0.0}]))
        _post_adapters(client, base, [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}])
    return out


def first_load(base: str, path: Path) -> float:
    """Seconds for strata to load a never-seen adapter file by path and make it active."""
    with httpx.Client(timeout=120.0) as client:
        return _post_adapters(client, base, {"adapters": [{"path": str(path), "scale": 1.0}]})


def memory_bandwidth(megabytes: int = 512, repeats: int = 5, threads: int = 2) -> dict:
    """Memory traffic a streaming kernel sustains, in GB/s (1e9 bytes), best of `repeats`, each thread on its own
    slice (numpy releases the GIL): read = max-reduce (SIMD, no BLAS threads), copy = np.copyto counted as read +
    write. `bandwidth_gbs` is the larger: the bound uses the most traffic this machine was seen to move."""
    import numpy as np

    src = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(src, threads)
    out_parts = np.array_split(dst, threads)

    def timed(fn) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, range(threads)))
        return time.perf_counter() - started

    read = src.nbytes / min(timed(lambda i: float(parts[i].max())) for _ in range(repeats)) / 1e9
    copy = 2 * src.nbytes / min(timed(lambda i: np.copyto(out_parts[i], parts[i])) for _ in range(repeats)) / 1e9
    return {"read_gbs": read, "copy_gbs": copy, "bandwidth_gbs": max(read, copy), "array_mb": megabytes,
            "threads": threads}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
