"""Soft prompts on the real engine: trained in the session on the tiny base (conftest `soft_prompts`), injected as
an embedding batch before the prompt, per request, beside LoRA, batched and prefix-cached; bad artifacts refused."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from strata.errors import StrataError
from strata.serve.server import serve_in_thread

pytestmark = pytest.mark.slow
QUESTION = "What is a lease?"


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("soft_bad")


@pytest.fixture(scope="module")
def soft_ws(soft_prompts) -> Path:
    return soft_prompts["lessee"].parent.parent


@pytest.fixture(scope="module")
def soft_server(config_for, soft_ws, lora_root, bad_root):
    config = config_for(workspace=soft_ws, adapter_roots=[str(lora_root), str(bad_root)])
    with serve_in_thread(config) as url:
        yield url


@pytest.fixture
def sc(soft_server):
    with httpx.Client(base_url=soft_server, timeout=120) as client:
        yield client
        client.post("/soft-prompts", json={"enabled": False, "default": None})


def greedy(client: httpx.Client, max_tokens: int = 10, **extra) -> dict:
    reply = client.post("/v1/completions", json={"prompt": QUESTION, "max_tokens": max_tokens, "temperature": 0,
                                                  **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def text(client: httpx.Client, **extra) -> str:
    return greedy(client, **extra)["choices"][0]["text"]


def test_injected_embeddings_match_hf_peft(sc, soft_prompts, tiny_base):
    """The served soft prompt gives HF PEFT's greedy tokens with HF PEFT's log-probabilities."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                      soft_prompts["revenue"]).eval()
    prompt = tokenizer(QUESTION)["input_ids"]  # BOS first: the virtual tokens go before it, as in PEFT
    served = sc.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 1,
                                              "soft_prompt": "revenue", "ignore_eos": True}).json()["choices"][0]
    ids, want_lp = list(prompt), []
    with torch.no_grad():
        for _ in range(8):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
            token = int(logp.argmax())
            want_lp.append(float(logp[token]))
            ids.append(token)
    assert served["text"] == tokenizer.decode(ids[len(prompt):])
    np.testing.assert_allclose(served["logprobs"]["token_logprobs"], want_lp, atol=2e-2)
    # the prompt's own log-probabilities (echo) under the soft prompt, as QA's perplexity reads them
    echoed = sc.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 0,
                                              "echo": True, "soft_prompt": "revenue"}).json()["choices"][0]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0, -len(prompt):], -1)
    want_prompt = [float(logp[i, prompt[i + 1]]) for i in range(len(prompt) - 1)]
    # the echo leaves BOS out and gives its first token None (OpenAI's shape), then one per prompt token
    np.testing.assert_allclose(echoed["logprobs"]["token_logprobs"][1:len(prompt) - 1], want_prompt[1:], atol=2e-2)
    with torch.no_grad(), model.disable_adapter():  # and the base gives other log-probabilities
        plain = torch.log_softmax(model(input_ids=torch.tensor([ids[:len(prompt)]])).logits[0, -1], -1)
    assert abs(float(plain[ids[len(prompt)]]) - want_lp[0]) > 2e-2


def test_soft_prompt_changes_greedy_output_and_without_it_equals_base(sc, fresh_reply, complete):
    base = text(sc)
    assert text(sc, soft_prompt="lessee") != base
    assert text(sc, soft_prompt="revenue") != base
    assert text(sc) == base == text(sc, soft_prompt=False)
    # a server that never saw a soft prompt agrees with the soft-prompt server's base reply
    assert fresh_reply(()) == complete(sc)


def test_concurrent_requests_with_different_soft_prompts_and_lora_equal_isolated(sc, lora_dirs):
    lora = [{"path": str(lora_dirs["alpha"]), "scale": 1.0}]
    cases = {"lessee": {"soft_prompt": "lessee"}, "revenue": {"soft_prompt": "revenue"},
             "lessee+alpha": {"soft_prompt": "lessee", "lora": lora}, "alpha": {"lora": lora}, "base": {}}
    alone = {name: text(sc, max_tokens=16, **extra) for name, extra in cases.items()}
    assert len(set(alone.values())) >= 4, alone  # the soft prompts and the LoRA each make a difference
    got: dict[str, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(cases))

    def run(name: str) -> None:
        try:
            with httpx.Client(base_url=str(sc.base_url), timeout=120) as client:
                barrier.wait()
                got[name] = text(client, max_tokens=16, **cases[name])
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert got == alone


def test_prefix_cache_reuses_the_soft_prompt_on_the_second_turn(sc):
    turn = [{"role": "user", "content": QUESTION}]
    first = sc.post("/v1/chat/completions", json={"messages": turn, "max_tokens": 6, "temperature": 0,
                                                  "soft_prompt": "lessee"}).json()
    answer = first["choices"][0]["message"]["content"]
    second = sc.post("/v1/chat/completions", json={
        "messages": turn + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And goodwill?"}],
        "max_tokens": 6, "temperature": 0, "soft_prompt": "lessee"})
    assert second.status_code == 200, second.text
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 8 + 4, second.json()["usage"]  # the 8 virtual tokens and the first turn's prompt
    assert second.headers["x-strata-soft-prompt"] == "lessee"


def _write(path: Path, matrix: np.ndarray, arch: str = "llama") -> Path:
    from strata.export.softprompt_gguf import write_soft_prompt_gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_soft_prompt_gguf(matrix, path, architecture=arch, base_fingerprint="0" * 32, name=path.parent.name)


@pytest.mark.parametrize("case, status, needle", [
    ("wide", 422, "dimension mismatch"),
    ("nan", 422, "NaN or inf"),
    ("arch", 422, "architecture 'qwen2'"),
    ("outside", 403, "outside the allowed roots"),
    ("unknown", 404, "no soft prompt named 'nosuch'"),
    ("missing", 404, "does not exist"),
    ("lora", 422, "not a soft prompt"),
    ("true", 400, "true names none"),
])
def test_bad_soft_prompts_are_refused(sc, bad_root, tmp_path, lora_dirs, case, status, needle):
    values = {
        "wide": lambda: str(_write(bad_root / "wide" / "softprompt.gguf", np.zeros((4, 128), np.float32)).parent),
        "nan": lambda: str(_write(bad_root / "nan" / "softprompt.gguf", np.full((4, 256), np.nan, np.float32))),
        "arch": lambda: str(_write(bad_root / "arch" / "softprompt.gguf", np.zeros((4, 256), np.float32), "qwen2")),
        "outside": lambda: str(_write(tmp_path / "out" / "softprompt.gguf", np.zeros((4, 256), np.float32))),
        "unknown": lambda: "nosuch",
        "missing": lambda: str(bad_root / "gone" / "softprompt.gguf"),
        "lora": lambda: str(lora_dirs["alpha"] / "adapter.gguf"),
        "true": lambda: True,
    }
    before = sc.get("/soft-prompts").json()
    reply = sc.post("/v1/completions", json={"prompt": QUESTION, "max_tokens": 2, "soft_prompt": values[case]()})
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"]["message"]
    assert sc.get("/soft-prompts").json()["soft_prompts"] == before["soft_prompts"]  # nothing loaded
    assert math.isfinite(greedy(sc, logprobs=1)["choices"][0]["logprobs"]["token_logprobs"][0])


def test_runtime_switch_validates_and_keeps_the_previous_state(sc):
    base = text(sc)
    bad = sc.post("/soft-prompts", json={"enabled": True, "default": "nosuch"})
    assert bad.status_code == 422 and "was not changed" in bad.json()["error"]["message"]
    state = sc.get("/soft-prompts").json()
    assert state["enabled"] is False and state["default"] is None
    assert set(state["available"]) >= {"lessee", "revenue"}
    assert sc.post("/soft-prompts", json={"enabled": True}).status_code == 422  # enabled needs a default
    good = sc.post("/soft-prompts", json={"enabled": True, "default": "lessee"})
    assert good.status_code == 200 and good.json()["default"] == "lessee"
    assert text(sc) == text(sc, soft_prompt="lessee") != base
    assert text(sc, soft_prompt=False) == base
    again = sc.post("/soft-prompts", json={"default": "nosuch"})
    assert again.status_code == 422
    assert sc.get("/soft-prompts").json()["default"] == "lessee" and text(sc) != base
    assert sc.post("/soft-prompts", json={"enabled": False}).json()["enabled"] is False
    assert text(sc) == base
    assert sc.post("/soft-prompts", json={"enabled": "yes"}).status_code == 400


def test_start_default_is_validated(config_for, soft_ws):
    with pytest.raises(StrataError, match="no soft prompt named 'nosuch'"):
        with serve_in_thread(config_for(workspace=soft_ws, soft_prompt="nosuch")):
            pass
    with serve_in_thread(config_for(workspace=soft_ws, soft_prompt="lessee")) as url:
        state = httpx.get(f"{url}/soft-prompts").json()
        assert state["enabled"] is True and state["default"] == "lessee"
    # disabled at start: a missing default is not an error until it is enabled
    with serve_in_thread(config_for(workspace=soft_ws, soft_prompt="nosuch", soft_prompt_enabled=False)) as url:
        assert httpx.get(f"{url}/soft-prompts").json()["enabled"] is False


def test_fingerprint_mismatch_is_refused():
    from strata.serve.errors import ApiError
    from strata.serve.softprompts import Target, check_fits

    matrix = np.zeros((4, 256), np.float32)
    check_fits(Path("x"), {"architecture": "llama", "base_fingerprint": "a"}, matrix, Target("llama", 256, "a"))
    with pytest.raises(ApiError, match="base fingerprint a but the served model is base b"):
        check_fits(Path("x"), {"architecture": "llama", "base_fingerprint": "a"}, matrix, Target("llama", 256, "b"))
    with pytest.raises(ApiError, match="refused on architecture 'gemma'"):
        check_fits(Path("x"), {"architecture": "gemma"}, matrix, Target("gemma", 256))
