"""Holes a close read of the serving engine found (issue 24), each on a real server: a header that could not be
encoded leaked its job, "model": <name> kept an old version, slow loads held the API's worker threads, concurrent
POST /lora-adapters finished out of order, out-of-range sampling knobs were accepted; and what peers offer
(/v1/models parents, /slots, per-set metrics, adapter memory in /health)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from strata.serve import app as app_module
from strata.serve.server import serve_in_thread

PROMPT = "Revenue is recognized when"


def wait_idle(client: httpx.Client, timeout: float = 30.0) -> float:
    """Seconds until /health reports no busy slot (fails after `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if client.get("/health").json()["slots_busy"] == 0:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"a slot was still busy after {timeout} s: the job leaked")


def metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.fixture
def roots(tmp_path: Path, lora_dirs: dict[str, Path]) -> Path:
    """A folder of adapter dirs under names outside latin-1, and one whose file the test replaces."""
    root = tmp_path / "adapters"
    for name, source in (("会計", "alpha"), ("lease–topic", "beta"), ("topic", "alpha")):
        (root / name).mkdir(parents=True)
        shutil.copy(lora_dirs[source] / "adapter.gguf", root / name / "adapter.gguf")
    return root


def test_an_adapter_named_outside_latin_1_streams_with_an_escaped_header_and_frees_its_slot(config_for, roots):
    with serve_in_thread(config_for(adapter_roots=[str(roots)], n_ctx=2048)) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        for name in ("会計", "lease–topic"):
            body = {"prompt": PROMPT, "max_tokens": 1500, "temperature": 0, "ignore_eos": True, "stream": True,
                    "lora": [{"path": str(roots / name), "scale": 1.0}]}
            with client.stream("POST", "/v1/completions", json=body) as reply:
                assert reply.status_code == 200, reply.read()
                assert unquote(reply.headers["x-strata-adapters"]) == f"{name}@1"
                assert unquote(reply.headers["x-strata-adapter-versions"]) == f"{name}=1"
                next(reply.iter_lines())  # one event, then the client leaves
            wait_idle(client)
        generated = metric(client.get("/metrics").text, 'strata_tokens_total{kind="completion"}')
        assert generated < 600  # each stream was cancelled when its client left, not run on to 1,500 tokens
        whole = client.post("/v1/completions", json={**body, "stream": False, "max_tokens": 4})
        assert whole.status_code == 200 and unquote(whole.headers["x-strata-adapters"]) == "lease–topic@1"


def test_a_failure_between_submit_and_the_first_read_cancels_the_job(config_for, monkeypatch):
    def broken(text: str) -> str:
        raise RuntimeError("header encoding failed")

    monkeypatch.setattr(app_module, "header_value", broken)
    with serve_in_thread(config_for(n_ctx=2048)) as url, httpx.Client(base_url=url, timeout=120) as client:
        for stream in (False, True):
            body = {"prompt": PROMPT, "max_tokens": 1500, "temperature": 0, "ignore_eos": True, "stream": stream}
            reply = client.post("/v1/completions", json=body)
            assert reply.status_code == 500 and "header encoding failed" in reply.text
            wait_idle(client)
        generated = metric(client.get("/metrics").text, 'strata_tokens_total{kind="completion"}')
    assert generated < 300  # both jobs were cancelled at once, not run on to 1,500 tokens each


def test_model_name_resolves_to_the_newest_version_and_the_header_names_it(config_for, roots, lora_dirs,
                                                                           fresh_reply):
    topic = roots / "topic" / "adapter.gguf"
    with serve_in_thread(config_for(adapter_roots=[str(roots)])) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        loaded = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1,
                                                      "lora": [{"path": str(roots / "topic"), "scale": 1.0}]})
        assert loaded.status_code == 200
        body = {"model": "topic", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
        first = client.post("/v1/completions", json=body)
        assert first.headers["x-strata-adapter-versions"] == "topic=1"
        assert first.json()["choices"][0]["text"] == fresh_reply(((str(lora_dirs["alpha"]), 1.0),))
        tmp = topic.with_suffix(".new")
        shutil.copy(lora_dirs["beta"] / "adapter.gguf", tmp)
        os.utime(tmp, ns=(topic.stat().st_mtime_ns + 10**9,) * 2)
        os.replace(tmp, topic)  # the file is updated on disk: a new version
        second = client.post("/v1/completions", json=body)
        assert second.headers["x-strata-adapter-versions"] == "topic=2"
        assert second.json()["choices"][0]["text"] == fresh_reply(((str(lora_dirs["beta"]), 1.0),))
        listed = [a for a in client.get("/lora-adapters").json() if a["name"] == "topic"]
        assert [a["version"] for a in listed] == [2]  # the old version retired once nothing used it


def test_slow_adapter_loads_do_not_hold_the_worker_threads_completions_need(config_for, lora_dirs, tiny_base,
                                                                         tmp_path):
    peft = tmp_path / "peft"
    peft.mkdir()
    for i in range(3):  # PEFT dirs without a GGUF: each is converted on the fly, which takes seconds
        (peft / f"p{i}").mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(lora_dirs["alpha"] / name, peft / f"p{i}" / name)
    config = config_for(adapter_roots=[str(peft)], base_model=str(tiny_base))
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=300) as client:
        ended: dict[str, float] = {}

        def load(i: int) -> int:
            reply = httpx.post(f"{url}/lora-adapters", json={"adapters": [{"path": str(peft / f"p{i % 3}"),
                                                                            "scale": 1.0}]}, timeout=600)
            ended.setdefault("first_load", time.monotonic())
            return reply.status_code

        with ThreadPoolExecutor(48) as pool:  # more waiting loads than anyio's 40 worker threads
            loads = [pool.submit(load, i) for i in range(48)]
            time.sleep(1.0)
            reply = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0})
            ended["completion"] = time.monotonic()
            assert reply.status_code == 200
            assert all(f.result() == 200 for f in loads)
    assert ended["completion"] < ended["first_load"]  # answered while the first conversion still ran


def test_concurrent_adapter_posts_take_effect_in_arrival_order(config_for, lora_dirs, tiny_base, tmp_path):
    peft = tmp_path / "slow"
    peft.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(lora_dirs["beta"] / name, peft / name)
    config = config_for(adapter_roots=[str(tmp_path), str(lora_dirs["alpha"].parent)], base_model=str(tiny_base),
                        loras=[(str(lora_dirs["alpha"]), 0.0)])
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=300) as client:
        result = {}

        def slow() -> None:  # sent first; converting the PEFT dir takes seconds
            result["slow"] = httpx.post(f"{url}/lora-adapters", json={"adapters": [{"path": str(peft), "scale": 1}]},
                                        timeout=300).status_code

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 120
        while not converting(peft) and time.monotonic() < deadline:  # the slow one has arrived and is loading
            time.sleep(0.02)
        assert converting(peft)
        fast = client.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}])  # sent last, answered first
        thread.join()
        active = [a["name"] for a in client.get("/lora-adapters").json() if a["active"]]
    assert fast.status_code == 200 and result["slow"] == 200
    assert active == ["alpha"]  # the request sent last wins


def converting(folder: Path) -> bool:
    """Whether llama.cpp's LoRA converter is running on `folder` (a child process of this test's server)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"convert_lora_to_gguf" in part for part in cmdline) and str(folder.resolve()).encode() in cmdline:
            return True
    return False


@pytest.mark.parametrize("field, value, words", [("temperature", -0.5, "at least 0"), ("top_p", 1.5, "between 0"),
                                                 ("top_p", -0.1, "between 0"), ("min_p", 2, "between 0"),
                                                 ("min_p", -1e-9, "between 0")])
def test_out_of_range_sampling_knobs_are_400s(api, field, value, words):
    for path, extra in (("/v1/completions", {"prompt": PROMPT}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
        reply = api.post(path, json={**extra, "max_tokens": 2, field: value})
        assert reply.status_code == 400, reply.text
        message = reply.json()["error"]["message"]
        assert field in message and words in message


def test_models_slots_health_and_per_set_metrics(config_for, lora_dirs):
    alpha = str(lora_dirs["alpha"])
    with serve_in_thread(config_for(loras=[(alpha, 1.0)])) as url, httpx.Client(base_url=url, timeout=120) as client:
        models = client.get("/v1/models").json()["data"]
        base = models[0]["id"]
        assert [m.get("parent") for m in models[1:]] == [base] and models[1]["id"] == "alpha"
        assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0,
                                                    "ignore_eos": True}).status_code == 200
        assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3, "temperature": 0,
                                                    "ignore_eos": True, "lora": []}).status_code == 200
        slots = client.get("/slots").json()
        health = client.get("/health").json()
        text = client.get("/metrics").text
        # llama.cpp #26207: a prompt cached under one set must not serve another set (the set is part of the key)
        same = {"prompt": PROMPT, "max_tokens": 1, "temperature": 0}
        under_alpha = client.post("/v1/completions", json=same).json()["usage"]
        under_beta = client.post("/v1/completions", json={**same, "lora": [{"path": str(lora_dirs["beta"]),
                                                                             "scale": 1.0}]}).json()["usage"]
    assert len(slots) == 4 and all(s["state"] == "idle" for s in slots)
    cached = {s["adapters"]: s["cached_tokens"] for s in slots if s["cached_tokens"]}
    assert set(cached) == {"alpha@1", "base"}  # each cached prefix is keyed by the set it was computed under
    assert under_alpha["prompt_tokens_details"]["cached_tokens"] > 0  # alpha's own cached prefix is reused
    assert under_beta["prompt_tokens_details"]["cached_tokens"] == 0  # but never under beta
    assert health["adapter_bytes"] > 0 and health["max_loaded_adapters"] == 16
    assert metric(text, 'strata_set_completion_tokens_total{adapters="alpha"}') == 5
    assert metric(text, 'strata_set_completion_tokens_total{adapters="base"}') == 3
    assert metric(text, 'strata_set_requests_total{adapters="alpha"}') == 1
    assert metric(text, 'strata_set_decode_seconds_total{adapters="alpha"}') > 0


def test_metric_labels_stay_bounded_whatever_scales_clients_send(api, lora_dirs):
    alpha = str(lora_dirs["alpha"])
    for i in range(6):
        reply = api.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "temperature": 0,
                                                  "lora": [{"path": alpha, "scale": 0.1 + i / 7}]})
        assert reply.status_code == 200 and reply.headers["x-strata-adapters"] == f"alpha@{0.1 + i / 7:g}"
    text = api.get("/metrics").text
    labels = {line.split("{", 1)[1].split("}")[0] for line in text.splitlines()
              if line.startswith("strata_decode_calls_total{")}
    assert 'adapters="alpha"' in labels and not any("@" in label for label in labels)


def test_max_loaded_adapters_evicts_the_least_recently_used_idle_adapter(config_for, roots):
    with serve_in_thread(config_for(adapter_roots=[str(roots)], max_loaded_adapters=2)) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        for name in ("会計", "lease–topic", "会計", "topic"):  # 会計 used again, so lease–topic is the LRU one
            reply = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1,
                                                         "lora": [{"path": str(roots / name), "scale": 1.0}]})
            assert reply.status_code == 200, reply.text
        names = sorted(a["name"] for a in client.get("/lora-adapters").json())
        text = client.get("/metrics").text
    assert names == sorted(["会計", "topic"])
    assert metric(text, "strata_adapter_evictions_total") == 1 and metric(text, "strata_loaded_adapters ") == 2
