"""Every error answer (400/401/403/404/405/413/422) on the real engine, with the adapter state intact after."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="module")
def bad_inputs(lora_root: Path, lora_dirs, base_gguf, fake_lora) -> dict[str, str]:
    """Bad adapters placed under the allowed root (so the check reached is the one under test)."""
    bad = lora_root / "_bad"
    bad.mkdir(exist_ok=True)
    peft_only = bad / "peft_only"
    if not peft_only.exists():
        shutil.copytree(lora_dirs["alpha"], peft_only, ignore=shutil.ignore_patterns("*.gguf"))
    model_copy = bad / "not_lora.gguf"
    shutil.copy(base_gguf, model_copy)
    (bad / "junk.gguf").write_bytes(b"not a gguf at all")
    (bad / "empty").mkdir(exist_ok=True)
    return {"peft_only": str(peft_only), "model": str(model_copy), "junk": str(bad / "junk.gguf"),
            "empty": str(bad / "empty"), "missing": str(bad / "nope"),
            "wrong_arch": str(fake_lora(bad / "arch.gguf", "gpt2", 256)),
            "wrong_dim": str(fake_lora(bad / "dim.gguf", "llama", 512))}


def test_errors_leave_state_intact(api, lora_dirs, bad_inputs, tmp_path, complete):
    alpha = str(lora_dirs["alpha"])
    api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 0.7}]})
    before, out_before = api.get("/lora-adapters").json(), complete(api)
    outside = tmp_path / "outside"
    shutil.copytree(lora_dirs["beta"], outside)
    sneaky = Path(bad_inputs["empty"]).parent / "link_out"
    if not sneaky.exists():
        sneaky.symlink_to(outside)
    cases = [
        (400, b'{"adapters": [{"path": "x", "scale": NaN}]}'),
        (400, b'{"adapters": [{"path": "x", "scale": -Infinity}]}'),
        (400, b'{"adapters": [{"path": "x"'),
        (400, b'{"adapters": [{"path": 5}]}'),
        (400, b'{"adapters": [{"id": "zero"}]}'),
        (400, b'{"adapters": {"path": "x"}}'),
        (400, b'{"adapters": [{"path": "%s", "scale": "high"}]}' % alpha.encode()),
        (400, b'{"adapters": [{"path": "%s"}, {"path": "%s"}]}' % (alpha.encode(), alpha.encode())),
        (404, b'[{"id": 99, "scale": 1}]'),
        (404, b'{"adapters": [{"path": "%s"}]}' % bad_inputs["missing"].encode()),
        (403, b'{"adapters": [{"path": "%s"}]}' % str(outside).encode()),
        (403, b'{"adapters": [{"path": "%s"}]}' % str(sneaky).encode()),
        (403, b'{"adapters": [{"path": "%s/../../../etc"}]}' % alpha.encode()),
    ] + [(422, b'{"adapters": [{"path": "%s"}]}' % bad_inputs[k].encode())
         for k in ("peft_only", "model", "junk", "empty", "wrong_arch", "wrong_dim")]
    # a good new path next to a bad one: nothing from the request may stick
    cases.append((404, b'{"adapters": [{"path": "%s"}, {"path": "%s"}]}' % (
        str(lora_dirs["beta"]).encode(), bad_inputs["missing"].encode())))
    for status, body in cases:
        reply = api.post("/lora-adapters", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == status, (body, reply.text)
        error = reply.json()["error"]
        assert error["message"] and error["type"]
        assert api.get("/lora-adapters").json() == before, body
    assert "convert_lora_to_gguf" in api.post("/lora-adapters", json={"adapters": [{"path": bad_inputs["peft_only"]}]}
                                              ).json()["error"]["message"]
    assert "dimension mismatch" in api.post("/lora-adapters", json={"adapters": [{"path": bad_inputs["wrong_dim"]}]}
                                            ).json()["error"]["message"]
    bad_requests = [{"prompt": "x", "max_tokens": "ten"}, {"prompt": "x", "lora": [{"id": 42}]},
                    {"prompt": "x", "temperature": None}, {"prompt": 3}, {"prompt": "x", "stream": "yes"}]
    for body in bad_requests:
        reply = api.post("/v1/completions", json=body)
        assert reply.status_code in (400, 404) and "error" in reply.json(), body
    assert api.post("/v1/chat/completions", json={"messages": "hi"}).status_code == 400
    assert api.get("/lora-adapters").json() == before and complete(api) == out_before


def test_body_limit_and_method_errors(api):
    big = api.post("/v1/completions", content=b'{"prompt": "' + b"a" * (2 << 20) + b'"}',
                   headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    for method in ("HEAD", "GET"):
        assert api.request(method, "/v1/chat/completions").status_code == 405
    wrong = api.get("/v1/chat/completions")
    assert wrong.headers["allow"] == "POST" and "use POST" in wrong.json()["error"]["message"]
    wrong = api.post("/metrics")  # the message follows the route's Allow header, not always POST
    hint = wrong.json()["error"]["message"].split(";")[1]
    assert wrong.status_code == 405 and "GET" in hint and "POST" not in hint
    assert api.get("/nowhere").status_code == 404
    assert api.get("/health").json()["status"] == "ok"


def test_api_key(config_for):
    from strata.serve.server import serve_in_thread

    with serve_in_thread(config_for(api_key="s3cret")) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/lora-adapters").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        body = {"prompt": "Leases", "max_tokens": 2}
        assert client.post("/v1/completions", json=body).json()["error"]["type"] == "authentication_error"
        ok = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["choices"][0]["text"] is not None


def test_prompt_longer_than_context_is_an_error_streamed_or_not(api, complete):
    from strata.qa.client import QAClient, ServerError

    body = {"prompt": "Revenue is recognized when " * 200, "max_tokens": 4, "temperature": 0}  # > n_ctx=512
    whole = api.post("/v1/completions", json=body)
    assert whole.status_code == 400 and "--n_ctx" in whole.json()["error"]["message"]
    # streamed: the same 400 before any SSE byte (checked at admission), never a 200 stream that stops silently
    with api.stream("POST", "/v1/completions", json={**body, "stream": True}) as reply:
        reply.read()
        assert reply.status_code == 400 and not reply.headers["content-type"].startswith("text/event-stream")
        assert "--n_ctx" in reply.json()["error"]["message"]
    with QAClient(str(api.base_url)) as client, pytest.raises(ServerError, match="n_ctx"):
        client.chat("Revenue is recognized when " * 200, max_tokens=4, seed=0)
    assert complete(api, max_tokens=4)  # the engine is free again


def test_qa_client_rejects_a_stream_cut_before_done():
    from strata.qa.client import ServerError, sse_events

    cut = httpx.Response(200, content=b'data: {"choices": []}\n\n')
    with pytest.raises(ServerError, match="without \\[DONE\\]"):
        list(sse_events(cut))
    whole = httpx.Response(200, content=b'data: {"choices": []}\n\ndata: [DONE]\n\n')
    assert list(sse_events(whole)) == [{"choices": []}]
