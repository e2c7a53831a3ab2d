"""Adapters page in Chromium on the real engine: slider + Apply changes GET /lora-adapters while an earlier stream
keeps its set; Clear; the root browser lists only adapter folders inside the roots; 403/404/422 as messages."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from strata.console.browse import adapters_under

PROMPT = "Revenue is recognized when"


def _scales(engine: httpx.Client) -> dict[str, float]:
    return {a["name"]: a["scale"] for a in engine.get("/lora-adapters").json()}


def test_slider_apply_changes_global_set_and_earlier_stream_keeps_its_set(page, served, engine):
    body = {"prompt": PROMPT, "max_tokens": 4000, "temperature": 0, "ignore_eos": True, "seed": 0}
    alpha = next(a["id"] for a in engine.get("/lora-adapters").json() if a["name"] == "alpha")
    reference = engine.post("/v1/completions", json=body | {"lora": [{"id": alpha, "scale": 1.0}]}).json()
    header, text, first_chunk = {}, [], threading.Event()

    def stream() -> None:  # under the global set (alpha@1) as it is when the request starts
        with httpx.stream("POST", f"{served}/v1/completions", json=body | {"stream": True}, timeout=300) as reply:
            header["set"] = reply.headers["x-strata-adapters"]
            for line in reply.iter_lines():
                first_chunk.set()
                if line.startswith("data: ") and line != "data: [DONE]":
                    text.append(json.loads(line[6:])["choices"][0]["text"])

    page.goto(f"{served}/")
    slider = page.get_by_label("scale of alpha")
    slider.wait_for()
    worker = threading.Thread(target=stream)
    worker.start()
    assert first_chunk.wait(120)
    slider.fill("0.5")  # a range input takes fill(): the value a drag would set
    page.get_by_role("button", name="Apply", exact=True).click()
    page.get_by_text("Applied the global adapter set.").wait_for()
    busy = engine.get("/health").json()["slots_busy"]
    worker.join(300)
    assert _scales(engine)["alpha"] == 0.5
    assert busy >= 1, "the earlier stream had ended before Apply: the test proves nothing"
    assert header["set"] == "alpha@1"
    assert "".join(text) == reference["choices"][0]["text"]  # every token came from alpha@1, none from alpha@0.5
    page.get_by_role("button", name="Clear").click()
    page.get_by_text("Cleared: the global set is the base model.").wait_for()
    assert all(scale == 0 for scale in _scales(engine).values()) or not _scales(engine)


def test_root_browser_and_error_messages(page, served, engine, console_root: Path):
    listed = {Path(a["path"]).name for a in adapters_under([console_root])}
    assert {"alpha", "beta", "broken"} <= listed and "link_out" not in listed and "escaped" not in listed
    page.goto(f"{served}/")
    rows = page.locator("#available tbody tr")
    rows.first.wait_for()
    assert "link_out" not in page.locator("#available").inner_text()
    by_path = page.get_by_label("Load by path")
    before = _scales(engine)
    cases = [(str(console_root / "peft" / "link_out"), "403"), (str(console_root / "peft" / "missing"), "404"),
             (str(console_root / "peft" / "broken"), "422")]
    for path, status in cases:
        by_path.fill(path)
        page.get_by_role("button", name="Load and apply").click()
        message = page.locator("#message.error")
        message.wait_for()
        assert message.inner_text().startswith(status), message.inner_text()
        page.evaluate("document.querySelector('#message').className = 'message'")
        assert _scales(engine) == before  # a failed request changes nothing
    assert page.locator("#loaded tbody tr").count() >= 2  # the page still works
