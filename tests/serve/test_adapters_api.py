"""/lora-adapters on the real engine: seed bodies, id form, stale-KV check, blend, per-request adapters."""

from __future__ import annotations

import httpx


def names(listing: list[dict]) -> dict[str, float]:
    return {a["name"]: a["scale"] for a in listing}


def test_seed_bodies_apply_switch_blend_clear(api, lora_dirs, complete, fresh_reply):
    alpha, beta = str(lora_dirs["alpha"]), str(lora_dirs["beta"])
    base = complete(api)
    applied = api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 1.0}]})
    assert applied.status_code == 200 and names(applied.json()) == {"alpha": 1.0}
    out_alpha = complete(api)
    switched = api.post("/lora-adapters", json={"adapters": [{"path": beta, "scale": 1.0}]})
    assert names(switched.json()) == {"beta": 1.0}
    out_beta = complete(api)  # generated right after a swap: must not reuse alpha's KV cache
    assert len({base, out_alpha, out_beta}) == 3, (base, out_alpha, out_beta)
    assert out_alpha == fresh_reply(((alpha, 1.0),))
    assert out_beta == fresh_reply(((beta, 1.0),))
    listing = api.get("/lora-adapters").json()
    assert names(listing) == {"alpha": 0.0, "beta": 1.0}
    assert {a["active"] for a in listing if a["name"] == "alpha"} == {False}
    assert all(a["alpha"] == 16 and a["architecture"] == "llama" for a in listing)
    blended = api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 0.6}, {"path": beta, "scale": 0.4}]})
    assert names(blended.json()) == {"alpha": 0.6, "beta": 0.4}
    assert complete(api) == fresh_reply(((alpha, 0.6), (beta, 0.4)))
    cleared = api.post("/lora-adapters", json={"adapters": []})
    assert cleared.json() == [] and all(not a["active"] for a in api.get("/lora-adapters").json())
    assert complete(api) == base == fresh_reply(())


def test_llama_server_id_form(api, lora_dirs, complete, fresh_reply):
    api.post("/lora-adapters", json={"adapters": [{"path": str(lora_dirs["alpha"])}, {"path": str(lora_dirs["beta"])}]})
    ids = {a["name"]: a["id"] for a in api.get("/lora-adapters").json()}
    reply = api.post("/lora-adapters", json=[{"id": ids["beta"], "scale": 0.5}])
    assert reply.status_code == 200 and names(reply.json()) == {"beta": 0.5}
    assert names(api.get("/lora-adapters").json()) == {"alpha": 0.0, "beta": 0.5}  # omitted id -> scale 0
    assert complete(api) == fresh_reply(((str(lora_dirs["beta"]), 0.5),))


def test_blend_logprobs_match_fresh_engine(api, lora_dirs, config_for):
    from strata.serve.server import serve_in_thread

    blend = [(str(lora_dirs["alpha"]), 0.6), (str(lora_dirs["beta"]), 0.4)]
    body = {"prompt": "A lease liability is measured at the present value", "max_tokens": 1, "echo": True,
            "logprobs": 0, "temperature": 0}
    api.post("/lora-adapters", json={"adapters": [{"path": p, "scale": s} for p, s in blend]})
    served = api.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["token_logprobs"]
    api.post("/lora-adapters", json={"adapters": []})
    base = api.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["token_logprobs"]
    with serve_in_thread(config_for(loras=blend)) as url:
        fresh = httpx.post(f"{url}/v1/completions", json=body, timeout=120).json()["choices"][0]["logprobs"]
    assert served[0] is None and fresh["token_logprobs"][0] is None
    assert len(served) == len(fresh["token_logprobs"]) > 5
    assert max(abs(a - b) for a, b in zip(served[1:], fresh["token_logprobs"][1:])) < 1e-3
    assert max(abs(a - b) for a, b in zip(served[1:], base[1:])) > 0.05  # the blend really changes the model


def test_per_request_lora_and_model_name_leave_global_set(api, lora_dirs, complete, fresh_reply):
    alpha, beta = str(lora_dirs["alpha"]), str(lora_dirs["beta"])
    api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 1.0}]})
    before = api.get("/lora-adapters").json()
    assert complete(api, lora=[{"path": beta, "scale": 1.0}]) == fresh_reply(((beta, 1.0),))
    assert complete(api, model="beta") == fresh_reply(((beta, 1.0),))
    assert complete(api, lora=[]) == fresh_reply(())
    assert api.get("/lora-adapters").json() == before
    assert complete(api) == fresh_reply(((alpha, 1.0),))
    chat = api.post("/v1/chat/completions", json={"model": "beta", "messages": [{"role": "user", "content": "Lease?"}],
                                                   "max_tokens": 8, "temperature": 0})
    assert chat.status_code == 200 and chat.json()["model"] == "beta"
    assert api.get("/lora-adapters").json() == before
    models = {m["id"] for m in api.get("/v1/models").json()["data"]}
    assert {"alpha", "beta", "base-f16"} <= models


def test_lora_init_without_apply(config_for, lora_dirs, complete, fresh_reply, tmp_path):
    from strata.serve.server import serve_in_thread

    config = config_for(loras=[(str(lora_dirs["alpha"]), 1.0)], lora_init_without_apply=True, adapter_roots=[])
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert names(client.get("/lora-adapters").json()) == {"alpha": 0.0}
        assert complete(client) == fresh_reply(())
        assert client.post("/lora-adapters", json=[{"id": 0, "scale": 1.0}]).status_code == 200
        assert complete(client) == fresh_reply(((str(lora_dirs["alpha"]), 1.0),))
        # the folder holding a start adapter is an allowed root (siblings swap in), anything else is not
        sibling = client.post("/lora-adapters", json={"adapters": [{"path": str(lora_dirs["beta"])}]})
        assert sibling.status_code == 200 and names(sibling.json()) == {"beta": 1.0}
        outside = client.post("/lora-adapters", json={"adapters": [{"path": str(tmp_path)}]})
        assert outside.status_code == 403 and names(client.get("/lora-adapters").json()) == {"alpha": 0.0, "beta": 1.0}


def test_echo_logprobs_shape_for_perplexity(api):
    text = "The lessee recognizes a right-of-use asset."
    reply = api.post("/v1/completions", json={"prompt": text, "max_tokens": 1, "echo": True, "logprobs": 0,
                                              "temperature": 0}).json()
    choice = reply["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"].startswith(text)
    n = reply["usage"]["prompt_tokens"]  # includes BOS, which is not listed
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == n
    assert lp["token_logprobs"][0] is None
    scored = lp["token_logprobs"][1:]
    assert all(isinstance(x, float) and x <= 0 for x in scored) and min(scored) < -0.01, scored
    assert "".join(lp["tokens"][: n - 1]).strip() == text
    # split by usage, not text_offset: llama-cpp-python's offsets count SentencePiece's leading space
    assert lp["tokens"][n - 1:] and len(lp["tokens"][n - 1:]) == reply["usage"]["completion_tokens"] == 1
    assert lp["text_offset"] == sorted(lp["text_offset"])


def test_peft_dir_converted_on_the_fly_when_base_known(config_for, lora_dirs, tiny_base, lora_root, complete,
                                                      fresh_reply):
    import shutil

    from strata.serve.server import serve_in_thread

    peft_only = lora_root / "_peft_only_alpha"
    if not peft_only.exists():
        shutil.copytree(lora_dirs["alpha"], peft_only, ignore=shutil.ignore_patterns("*.gguf"))
    with serve_in_thread(config_for(base_model=str(tiny_base))) as url, httpx.Client(base_url=url, timeout=300) as c:
        reply = c.post("/lora-adapters", json={"adapters": [{"path": str(peft_only), "scale": 1.0}]})
        assert reply.status_code == 200, reply.text
        assert complete(c) == fresh_reply(((str(lora_dirs["alpha"]), 1.0),))
    assert not list(peft_only.glob("*.gguf"))  # the adapter dir is never written to
