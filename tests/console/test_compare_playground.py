"""Compare and Playground in Chromium on the real engine: three columns stream at once, each under the set it asked
for; the playground streams with its own set and shows X-Strata-Adapters, TTFT and tokens/s; replies, user text and
adapter names holding markup stay text (XSS)."""

from __future__ import annotations

from playwright.sync_api import expect

XSS_NAME = "<img src=x onerror=\"window.__xss=1\">"  # the folder name conftest.console_root makes


def test_compare_three_columns_stream_three_different_replies_at_once(page, served, engine):
    page.goto(f"{served}/compare")
    page.get_by_label("Columns (2–6)").fill("3")
    page.get_by_role("button", name="Set columns").click()
    columns = page.locator(".column")
    assert columns.count() == 3
    page.get_by_label("max_tokens").fill("40")
    page.get_by_role("button", name="Run all").click()
    page.get_by_text("Done.").wait_for(timeout=120_000)
    headers = [columns.nth(i).locator(".hdr").inner_text() for i in range(3)]
    outputs = [columns.nth(i).locator(".output").inner_text() for i in range(3)]
    assert headers == ["base", "alpha@1", "beta@1"]
    assert len(set(outputs)) == 3 and all(outputs), outputs
    times = [(float(columns.nth(i).get_attribute("data-started")), float(columns.nth(i).get_attribute("data-ended")))
             for i in range(3)]
    assert max(start for start, _ in times) < min(end for _, end in times)  # all three were in flight together
    assert columns.nth(1).locator("mark.diff").count() >= 1  # differences from the base column are marked
    assert engine.get("/lora-adapters").json()[0]["scale"] == 1.0  # per-request sets: the global set is untouched


def test_playground_streams_with_its_own_set_and_markup_stays_text(page, served, engine):
    page.goto(f"{served}/")
    page.locator("#available").get_by_text(XSS_NAME, exact=True).wait_for()  # listed by its name, as text
    page.goto(f"{served}/playground")
    page.get_by_label(XSS_NAME, exact=True).check()  # an adapter folder named as markup: listed as text, usable
    page.get_by_label("max_tokens").fill("64")
    grammar = 'root ::= "<script>window.__xss=2</script><img src=x onerror=window.__xss=3>"'
    page.get_by_label("GBNF grammar").fill(grammar)
    page.get_by_label("Message").fill("<img src=x onerror=window.__xss=4>")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".conversation .assistant pre")
    # the reply streams in pieces: wait for the whole grammar string, not its first half
    expect(reply).to_have_text("<script>window.__xss=2</script><img src=x onerror=window.__xss=3>", timeout=120_000)
    assert page.locator("#adapters-header").inner_text().startswith(f"{XSS_NAME}@1")
    page.locator("#tps").filter(has_text=".").wait_for()
    assert page.locator("#ttft").inner_text().endswith("ms")
    assert float(page.locator("#tps").inner_text()) > 0
    assert page.locator(".conversation .user").inner_text().endswith("<img src=x onerror=window.__xss=4>")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0  # nothing became an element
