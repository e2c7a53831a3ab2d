"""The playground and compare pages pick a soft prompt per request, in Chromium on the real engine: each reply is
the one the API gives for that soft prompt, the other column keeps the base reply, and the server's default is
untouched."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from strata.serve.server import serve_in_thread

from .conftest import console_config

QUESTION = "What is goodwill?"
SAMPLING = {"temperature": 0.0, "max_tokens": 16, "seed": 0}


@pytest.fixture(scope="module")
def soft_served(base_gguf, soft_prompts):
    """A server with the console on the workspace the two soft prompts were trained in (lessee, revenue)."""
    workspace = soft_prompts["lessee"].parent.parent
    with serve_in_thread(console_config(base_gguf, workspace, loras=[])) as url:
        yield url


def _api_reply(url: str, **extra) -> str:
    body = {"messages": [{"role": "user", "content": QUESTION}], **SAMPLING, **extra}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def _sampling(page) -> None:
    page.get_by_label("temperature").fill("0")
    page.get_by_label("max_tokens").fill(str(SAMPLING["max_tokens"]))
    page.get_by_label("seed").fill("0")


def test_playground_and_compare_choose_a_soft_prompt_per_request(page, soft_served):
    base, lessee, revenue = (_api_reply(soft_served), _api_reply(soft_served, soft_prompt="lessee"),
                             _api_reply(soft_served, soft_prompt="revenue"))
    assert len({base, lessee, revenue}) == 3, (base, lessee, revenue)  # the soft prompts change greedy output

    page.goto(f"{soft_served}/playground")
    picker = page.get_by_label("Soft prompt")
    expect(picker.locator("option")).to_have_text(["none", "lessee", "revenue"])
    picker.select_option(label="lessee")
    _sampling(page)
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".conversation .assistant pre")).to_have_text(lessee, timeout=120_000)

    page.goto(f"{soft_served}/compare")
    page.get_by_label("Columns (2–6)").fill("2")
    page.get_by_role("button", name="Set columns").click()
    columns = page.locator(".column")
    columns.nth(1).get_by_label("Soft prompt").select_option(label="revenue")
    page.get_by_label("Prompt", exact=True).fill(QUESTION)
    _sampling(page)
    page.get_by_role("button", name="Run all").click()
    page.get_by_text("Done.").wait_for(timeout=120_000)
    expect(columns.nth(0).locator(".output")).to_have_text(base)
    expect(columns.nth(1).locator(".output")).to_have_text(revenue)
    listing = httpx.get(f"{soft_served}/soft-prompts", timeout=30).json()
    assert listing["default"] is None and listing["enabled"] is False  # per request: no server state changed
