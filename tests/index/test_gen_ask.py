"""POST /gen/ask and /adapters/bindings on a real server (tiny GGUF, real LoRA adapters, the real index):
citations, streaming, the no-evidence answer, bindings routing a topic to its layer, bad input, and a PDF that
tries a prompt injection."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import pytest

from strata.serve.config import ServeConfig
from strata.serve.server import serve_in_thread

LEASE_Q = "When does a contract contain a lease?"
REPLY_KEYS = {"answer", "citations", "adapters", "usage", "retrieval", "cited", "finish_reason"}
CITATION_KEYS = {"n", "source", "pages", "heading", "chunk_id", "score", "topic", "text"}


@pytest.fixture(scope="module")
def ask_ws(evidence_ws, tmp_path_factory):
    from strata.settings import Settings

    root = tmp_path_factory.mktemp("ask")
    shutil.copytree(evidence_ws.workspace, root / "ws")
    return Settings.resolve(workspace=root / "ws", base_model=evidence_ws.base_model, env={})


@pytest.fixture(scope="module")
def url(ask_ws, base_gguf, lora_dirs):
    config = ServeConfig(model=base_gguf, n_ctx=2048, n_threads=2, n_batch=256, parallel=2, seed=0,
                         workspace=ask_ws.workspace, adapter_roots=[str(lora_dirs["alpha"].parent)])
    with serve_in_thread(config) as base:
        yield base


@pytest.fixture
def api(url):
    with httpx.Client(base_url=url, timeout=300) as client:
        yield client
        client.post("/adapters/bindings", json={"topic": "ASC_Leases", "adapters": []})


def _ask(api, **body):
    reply = api.post("/gen/ask", json={"max_tokens": 8, **body})
    assert reply.status_code == 200, reply.text
    return reply


def test_answer_cites_the_leases_pdf_and_its_pages(api, ask_ws):
    reply = _ask(api, prompt=LEASE_Q, top_k=3)
    body = reply.json()
    assert set(body) == REPLY_KEYS and body["answer"].strip()
    assert body["citations"] and [c["n"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    assert all(set(c) == CITATION_KEYS for c in body["citations"])
    assert body["citations"][0]["source"] == "ASC_Leases/ASC_Leases.pdf" and body["citations"][0]["pages"]
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 200  # the evidence went in
    assert body["retrieval"]["mode"] == "lexical" and body["retrieval"]["index"].endswith("index.sqlite")
    assert reply.headers["X-Strata-Adapters"] == body["adapters"] == "base"
    rows = {json.loads(line)["id"]: json.loads(line) for path in (ask_ws.train_jsonl, ask_ws.val_jsonl)
            for line in path.read_text().splitlines()}
    for citation in body["citations"]:
        row = rows[citation["chunk_id"]]
        assert (row["source"], row["pages"], row["heading"]) == (citation["source"], citation["pages"],
                                                                 citation["heading"])


def test_streamed_reply_carries_the_citations_in_its_first_event(api):
    with api.stream("POST", "/gen/ask", json={"prompt": LEASE_Q, "top_k": 2, "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["X-Strata-Adapters"] == "base"
        events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    first, *middle, last = [json.loads(e) for e in events[:-1]]
    assert first["citations"][0]["source"] == "ASC_Leases/ASC_Leases.pdf" and first["adapters"] == "base"
    assert middle and all(set(e) == {"delta"} for e in middle)
    assert last["usage"]["completion_tokens"] > 0 and last["finish_reason"] in ("stop", "length")
    unstreamed = _ask(api, prompt=LEASE_Q, top_k=2).json()
    assert first["citations"] == unstreamed["citations"]
    assert "".join(e["delta"] for e in middle) == unstreamed["answer"]  # greedy: the same answer either way


def test_no_evidence_answer_without_asking_the_model(api):
    body = _ask(api, prompt="Do wombats juggle flamingos?").json()
    assert body["citations"] == [] and body["cited"] == [] and body["finish_reason"] == "no_evidence"
    assert "do not cover" in body["answer"] and body["usage"]["total_tokens"] == 0
    high = _ask(api, prompt=LEASE_Q, min_score=1e6).json()  # matches, but nothing scores that high
    assert high["citations"] == [] and "do not cover" in high["answer"]
    with api.stream("POST", "/gen/ask", json={"prompt": "Do wombats juggle flamingos?", "stream": True}) as r:
        events = [json.loads(e[5:]) for e in r.iter_lines() if e.startswith("data:") and "[DONE]" not in e]
    assert events[0]["citations"] == [] and "do not cover" in events[1]["delta"]


def test_a_binding_routes_a_topic_to_its_layer(api, ask_ws, lora_dirs):
    alpha = str(lora_dirs["alpha"])
    table = api.post("/adapters/bindings", json={"topic": "ASC_Leases", "adapters": [{"path": alpha}]})
    assert table.status_code == 200, table.text
    assert table.json()["topics"]["ASC_Leases"] == [{"path": alpha, "scale": 1.0}]
    assert api.get("/adapters/bindings").json() == table.json()
    assert json.loads((ask_ws.workspace / "bindings.json").read_text())["topics"]["ASC_Leases"]
    bound = _ask(api, prompt=LEASE_Q, topic="ASC_Leases")
    assert bound.headers["X-Strata-Adapters"] == "alpha@1" and bound.json()["retrieval"]["binding"] == "topic"
    assert {c["topic"] for c in bound.json()["citations"]} == {"ASC_Leases"}
    other = _ask(api, prompt="What is a performance obligation?", topic="ASC_Revenue_Recognition")
    assert other.headers["X-Strata-Adapters"] == "base"  # no binding for that topic
    named = _ask(api, prompt=LEASE_Q, topic="ASC_Leases", lora=[{"path": str(lora_dirs["beta"]), "scale": 0.5}])
    assert named.headers["X-Strata-Adapters"] == "beta@0.5"  # the request's own set beats the binding
    plain = _ask(api, prompt=LEASE_Q, topic="ASC_Leases", lora=[])
    assert plain.headers["X-Strata-Adapters"] == "base"
    assert bound.json()["answer"] != plain.json()["answer"] or bound.json()["usage"] == plain.json()["usage"]


def test_bad_bindings_are_refused_and_nothing_is_saved(api, ask_ws, lora_dirs):
    before = api.get("/adapters/bindings").json()
    cases = [({"topic": "ASC_Nope", "adapters": [{"path": str(lora_dirs["alpha"])}]}, 404, "ASC_Leases"),
             ({"document": "nope.pdf", "adapters": []}, 404, "ASC_Leases/ASC_Leases.pdf"),
             ({"topic": "ASC_Leases", "adapters": [{"path": "/nonexistent/adapter"}]}, None, "adapter"),
             ({"topic": "ASC_Leases", "adapters": [{"path": str(lora_dirs["alpha"]), "scale": 1e9}]}, 400, "scale"),
             ({"topic": "ASC_Leases", "adapters": [{"name": "a", "path": "b"}]}, 400, "exactly one"),
             ({"adapters": []}, 400, "topic"), ([], 400, "topic")]
    for body, status, words in cases:
        reply = api.post("/adapters/bindings", json=body)
        assert reply.status_code >= 400 and (status is None or reply.status_code == status), (body, reply.text)
        assert words in reply.json()["error"]["message"], (body, reply.text)
    assert api.get("/adapters/bindings").json() == before


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": ""}, 400, "must not be empty"),
    ({"prompt": "   "}, 400, "must not be empty"),
    ({}, 400, "\"prompt\" is required"),
    ({"prompt": LEASE_Q, "top_k": 0}, 400, "between 1 and 32"),
    ({"prompt": LEASE_Q, "top_k": 33}, 400, "between 1 and 32"),
    ({"prompt": LEASE_Q, "top_k": "3"}, 400, "wrong type"),
    ({"prompt": LEASE_Q, "min_score": math.inf}, 400, "finite"),
    ({"prompt": LEASE_Q, "topic": "ASC_Nope"}, 404, "ASC_Leases"),
    ({"prompt": LEASE_Q, "document": "x.pdf"}, 404, "Debian_Docs/libtasn1.pdf"),
    ({"prompt": LEASE_Q, "bogus": 1}, 400, "unknown field \"bogus\""),
    ({"prompt": LEASE_Q, "lora": [], "model": "x"}, 400, "not both"),
    ({"prompt": LEASE_Q, "lora": [{"path": "/nonexistent/a.gguf"}]}, None, "a.gguf"),
])
def test_bad_requests_get_clear_errors(api, body, status, words):
    raw = json.dumps(body, allow_nan=False) if body.get("min_score") is not math.inf else \
        json.dumps(body).replace("Infinity", "1e999")  # inf arrives as an overflowing number
    reply = api.post("/gen/ask", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code >= 400 and (status is None or reply.status_code == status), reply.text
    assert words in reply.json()["error"]["message"], reply.text


def test_injected_pdf_text_stays_data(api, injection):
    """A PDF saying "ignore previous instructions" is retrieved and cited like any other; the reply keeps its shape,
    the citations are the retrieval's, and in the prompt the text can neither close the evidence block nor forge
    a numbered entry."""
    from strata.index.search import Searcher
    from strata.index.store import open_store
    from strata.serve.ask import evidence_prompt

    topic, text = injection
    question = "What are the payment terms for equipment vendors?"
    body = _ask(api, prompt=question, top_k=3, max_tokens=16).json()
    assert set(body) == REPLY_KEYS
    assert body["citations"][0]["topic"] == topic and "Ignore previous instructions" in \
        body["citations"][0]["text"]
    again = _ask(api, prompt=question, top_k=3, max_tokens=16, topic=topic).json()
    assert [c["chunk_id"] for c in again["citations"]] == [c["chunk_id"] for c in body["citations"]
                                                             if c["topic"] == topic]
    index = api.get("/health").json()["evidence"].split(":")[0].removeprefix("evidence index ")
    hits = Searcher(open_store(index)).search(question, 3)
    assert [h.chunk.chunk_id for h in hits] == [c["chunk_id"] for c in body["citations"]]
    prompt = evidence_prompt(question, hits)
    assert prompt.count("</evidence>") == 1 and prompt.index("</evidence>") > prompt.index("Ignore previous")
    assert "[9]" not in prompt and prompt.count("<passage>") == len(hits)
    assert text.split(".")[0] in prompt  # the words are there, as quoted data


def test_strata_ask_prints_the_answer_and_its_citations(url):
    from click.testing import CliRunner

    from strata.cli import main

    result = CliRunner().invoke(main, ["ask", "--server", url, LEASE_Q, "--topic", "ASC_Leases", "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "[1] ASC_Leases/ASC_Leases.pdf p. " in result.output and "retrieval: lexical" in result.output
    as_json = CliRunner().invoke(main, ["ask", "--server", url, "Do wombats juggle flamingos?", "--json"])
    assert json.loads(as_json.output)["citations"] == []
    bad = CliRunner().invoke(main, ["ask", "--server", url, LEASE_Q, "--top-k", "0"])
    assert bad.exit_code == 1 and "between 1 and 32" in bad.output


def test_readme_lists_the_ask_fields():
    from strata.serve.ask import ask_fields_markdown

    assert ask_fields_markdown() in (Path(__file__).resolve().parents[2] / "README.md").read_text()
