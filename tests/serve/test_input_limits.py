"""Scales as float32 within --max-lora-scale, unusable paths and odd bodies: 4xx naming the problem, state kept."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

from strata.errors import StrataError
from strata.serve.adapters import NAME_MAX, PATH_MAX, check_path
from strata.serve.config import DEFAULT_MAX_LORA_SCALE, ServeConfig, check_scale, parse_argv
from strata.serve.errors import ApiError
from strata.serve.schemas import parse_adapter_body
from strata.serve.server import serve_in_thread

PROBE = {"prompt": "Revenue is recognized when", "max_tokens": 4, "temperature": 0, "logprobs": 2, "echo": True}


def error(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    return reply.json()["error"]["message"]


# -- scales --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e308, -1e308, 3.5e38, 10**400])
def test_scale_that_is_infinite_as_float32_is_rejected(value):
    with pytest.raises(ValueError, match="float32") as info:
        check_scale(value, "adapters[0].scale")
    assert "adapters[0].scale" in str(info.value)


@pytest.mark.parametrize("value", [-1000, 8.0001, 3.4028235e38, -9])
def test_scale_outside_the_range_names_the_range_and_the_flag(value):
    with pytest.raises(ValueError, match=r"outside the allowed range \[-8, 8\].*--max-lora-scale"):
        check_scale(value, "lora[1].scale")


def test_scales_within_the_range_pass_unchanged():
    assert DEFAULT_MAX_LORA_SCALE == 8
    for value in (0, 1, -1, 0.5, 8, -8, 1e-320):
        assert check_scale(value, "s") == value
    assert check_scale(20, "s", limit=20) == 20
    with pytest.raises(ApiError, match=r"\[-2, 2\]") as info:
        parse_adapter_body({"adapters": [{"path": "x", "scale": 3}]}, max_scale=2)
    assert info.value.status == 400


def test_start_up_scales_obey_the_same_rules(tmp_path):
    with pytest.raises(StrataError, match="float32.*LORA_PATHS"):
        parse_argv(["--lora-scaled", "a", "1e308"])
    with pytest.raises(StrataError, match=r"start-up adapter a.*\[-8, 8\].*--max-lora-scale"):
        parse_argv(["--lora-scaled", "a", "-1000"])
    config = parse_argv(["--lora-scaled", "a", "100", "--max-lora-scale", "200"])
    assert config.loras == [("a", 100.0)] and config.max_lora_scale == 200
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(StrataError, match="--max-lora-scale must be a positive number"):
            parse_argv(["--max-lora-scale", bad])
    with pytest.raises(StrataError, match="NUL byte"):
        ServeConfig(model=tmp_path / "m.gguf", loras=[("peft/a\x00b", 1.0)])


# -- paths ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, problem", [
    ("/ws/peft/level1\x00x", "NUL byte"),
    ("/ws/peft/\ud800", "not valid UTF-8"),
    ("/ws/" + "d/" * (PATH_MAX // 2), "PATH_MAX"),
    ("/ws/" + "n" * (NAME_MAX + 1), "NAME_MAX"),
])
def test_unusable_paths_are_400_naming_the_problem(path, problem):
    with pytest.raises(ApiError, match=problem) as info:
        check_path(path, "adapters[0].path")
    assert info.value.status == 400 and "adapters[0].path" in info.value.message
    assert check_path("/ws/" + "n" * NAME_MAX, "p")  # exactly NAME_MAX is fine


# -- on the real engine --------------------------------------------------------------------------------------------
def test_issue_17_scale_and_nul_holes_on_the_real_engine(api, lora_dirs, probe):
    alpha = str(lora_dirs["alpha"])
    assert api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": 0.7}]}).status_code == 200
    before, out_before = api.get("/lora-adapters").json(), probe(api)
    alpha_id = next(a["id"] for a in before if a["path"] == alpha)
    holes = [
        ([{"id": alpha_id, "scale": 1e308}], "float32"),  # the reported one: finite in float64, inf in llama.cpp
        ([{"id": alpha_id, "scale": -1000}], "[-8, 8]"),
        ({"adapters": [{"path": alpha, "scale": 3.5e38}]}, "float32"),
        ({"adapters": [{"path": alpha + "\x00x"}]}, "NUL byte"),  # was 500: embedded null byte
        ({"adapters": [{"path": alpha + "/" + "n" * (NAME_MAX + 1)}]}, "NAME_MAX"),
        ({"adapters": [{"path": alpha + "/" + "d/" * PATH_MAX}]}, "PATH_MAX"),
    ]
    for body, problem in holes:
        assert problem in error(api.post("/lora-adapters", json=body), 400), body
        assert api.get("/lora-adapters").json() == before
    for body, problem in holes:  # the same values as a per-request "lora"
        lora = body if isinstance(body, list) else body["adapters"]
        assert problem in error(api.post("/v1/completions", json={**PROBE, "lora": lora}), 400)
    surrogate = b'{"adapters": [{"path": "%s\\ud800"}]}' % alpha.encode()  # a JSON escape with no pair
    assert "not valid UTF-8" in error(api.post("/lora-adapters", content=surrogate), 400)
    out_after = probe(api)
    assert api.get("/lora-adapters").json() == before and out_after["text"] == out_before["text"]
    pairs = zip(out_after["logprobs"]["token_logprobs"][1:], out_before["logprobs"]["token_logprobs"][1:])
    assert max(abs(a - b) for a, b in pairs) < 1e-3  # same model state (a reused KV prefix may differ by noise)
    for scale in (8, -8):  # the edges of the default range are accepted and leave the output sane
        assert api.post("/lora-adapters", json={"adapters": [{"path": alpha, "scale": scale}]}).status_code == 200
        probe(api)


def test_max_lora_scale_flag_reaches_requests(config_for, lora_dirs):
    alpha = str(lora_dirs["alpha"])
    with serve_in_thread(config_for(max_lora_scale=2.0, loras=[(alpha, 1.5)])) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        assert "[-2, 2]" in error(client.post("/lora-adapters", json=[{"id": 0, "scale": 2.5}]), 400)
        assert "[-2, 2]" in error(client.post("/v1/completions", json={**PROBE, "lora": [{"id": 0, "scale": -3}]}),
                                  400)
        assert client.post("/lora-adapters", json=[{"id": 0, "scale": -2}]).status_code == 200


def test_odd_paths_and_bodies_are_4xx_not_500(api, lora_root, fake_lora):
    before = api.get("/lora-adapters").json()
    fifo_dir = lora_root / "_fifo"
    fifo_dir.mkdir(exist_ok=True)
    if not (fifo_dir / "adapter.gguf").exists():
        os.mkfifo(fifo_dir / "adapter.gguf")  # opening it would block the engine for good
    broken = fake_lora(lora_root / "_nan.gguf", "llama", 256, fill=float("nan"))  # fits the base; NaN weights
    cases = [
        ("/lora-adapters", {"adapters": [{"path": str(broken)}]}, 422, "holds NaN or inf values"),
        ("/v1/completions", {"prompt": "x", "lora": [{"path": str(broken)}]}, 422, "holds NaN or inf values"),
        ("/lora-adapters", {"adapters": [{"path": "~nobody-here/peft/x"}]}, 403, "outside the allowed roots"),
        ("/lora-adapters", {"adapters": [{"path": str(fifo_dir)}]}, 422, "holds no adapter.gguf"),
        ("/lora-adapters", {"adapters": [{"path": str(fifo_dir / "adapter.gguf")}]}, 422, "not a regular file"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, 400,
         "body.messages[0].content is not valid UTF-8"),
        ("/v1/completions", {"prompt": "x", "lora": {"\udc80": 1}}, 400, "a key of body.lora is not valid UTF-8"),
        ("/v1/embeddings", {"input": "x", "lora": [{"id": 0, "scale": 1e308}]}, 400, "float32"),
    ]
    for route, body, status, problem in cases:
        assert problem in error(api.post(route, content=json.dumps(body).encode()), status), body
    deep = api.post("/v1/completions", content=b"[" * 100_000)
    assert "nested too deeply" in error(deep, 400)
    assert api.get("/lora-adapters").json() == before
    assert api.get("/health").json()["status"] == "ok"


def test_a_failed_request_does_not_keep_the_adapters_it_loaded(api, lora_dirs, lora_root, probe):
    """A request with its own new adapter that fails (prompt too long), streamed or not, leaves
    GET /lora-adapters as it was."""
    fresh = lora_root / "_never_loaded_beta"  # a copy: a file this session's server has not loaded yet
    if not fresh.exists():
        shutil.copytree(lora_dirs["beta"], fresh)
    beta = str(fresh)
    api.post("/lora-adapters", json={"adapters": [{"path": str(lora_dirs["alpha"]), "scale": 0.5}]})
    before = api.get("/lora-adapters").json()
    assert beta not in [a["path"] for a in before]
    too_long = {"prompt": "Leases " * 600, "max_tokens": 2, "lora": [{"path": beta, "scale": 1}]}
    assert "--n_ctx" in error(api.post("/v1/completions", json=too_long), 400)
    assert api.get("/lora-adapters").json() == before
    assert "--n_ctx" in error(api.post("/v1/completions", json={**too_long, "stream": True}), 400)
    assert api.get("/lora-adapters").json() == before
    ok = api.post("/v1/completions", json={**too_long, "prompt": "Leases"})  # the same adapter, a good prompt
    assert ok.status_code == 200 and beta in [a["path"] for a in api.get("/lora-adapters").json()]
    probe(api)
