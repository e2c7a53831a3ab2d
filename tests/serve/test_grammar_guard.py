"""A grammar that allows no next token ends the reply ("stop"); before, llama.cpp's throw aborted the server."""

from __future__ import annotations

import json

import pytest

YES_NO = 'root ::= "yes" | "no"'
CASES = [  # each of these aborted the whole process (found by tests/serve/fuzz)
    pytest.param({"grammar": YES_NO, "ignore_eos": True, "temperature": 0}, {"yes", "no"}, id="done+ignore_eos"),
    pytest.param({"grammar": YES_NO, "ignore_eos": True, "temperature": 1, "seed": 3}, {"yes", "no"}, id="sampled"),
    pytest.param({"grammar": 'root ::= "\\x00"', "temperature": 0}, {""}, id="no token can start it"),
]


@pytest.mark.parametrize("extra, texts", CASES)
def test_grammar_dead_end_stops_the_reply(api, extra, texts, probe):
    body = {"prompt": "Is revenue recognized?", "max_tokens": 6, **extra}
    reply = api.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["text"] in texts and choice["finish_reason"] == "stop"
    with api.stream("POST", "/v1/completions", json={**body, "stream": True}) as streamed:
        events = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1] if json.loads(e)["choices"]]
    assert "".join(c["text"] for c in chunks) in texts and chunks[-1]["finish_reason"] == "stop"
    assert api.get("/health").json()["status"] == "ok"
    probe(api)  # the server and its other slots carry on


def test_logit_bias_that_is_infinite_as_float32_is_400(api):
    reply = api.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "logit_bias": {"5": -1e308}})
    assert reply.status_code == 400 and "float32" in reply.json()["error"]["message"]
