"""`strata console --server URL`: the engine pages reach a separate server over HTTP (streams, headers, errors)."""

from __future__ import annotations

import json

import httpx


def test_standalone_console_talks_to_a_server(standalone_console, served, engine):
    with standalone_console(server=served) as (url, ws), httpx.Client(base_url=url, timeout=120) as client:
        listing = client.get("/api/console/adapters").json()
        assert {a["name"] for a in listing["loaded"]} >= {"alpha", "beta"} and listing["error"] is None
        body = {"messages": [{"role": "user", "content": "Leases are"}], "max_tokens": 8, "temperature": 0,
                "stream": True, "lora": [{"id": 1, "scale": 1.0}]}
        with client.stream("POST", "/api/console/chat", json=body) as reply:
            assert reply.status_code == 200 and reply.headers["x-strata-adapters"] == "beta@1"
            events = [line for line in reply.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and "choices" in json.loads(events[0][6:])
        bad = client.post("/api/console/adapters", json={"adapters": [{"path": "/etc", "scale": 1}]})
        assert bad.status_code == 403 and "outside the allowed roots" in bad.json()["error"]["message"]
        status = client.get("/api/console/status").json()
        assert status["health"]["status"] == "ok" and status["metrics"]["requests"] > 0
    with standalone_console(server="http://127.0.0.1:9") as (url, ws), httpx.Client(base_url=url) as client:
        down = client.get("/api/console/adapters").json()
        assert down["loaded"] == [] and "did not answer" in down["error"]
