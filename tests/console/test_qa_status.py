"""QA reports and Status in Chromium: a real `strata qa` run against the served engine shows with its per-topic
matrix and HTML report; Status shows the numbers /metrics holds."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from strata.settings import Settings


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_qa_report_listed_with_matrix_and_html(page, served, engine, console_root: Path, small_prompts: Path):
    from strata.qa.harness import run_qa

    peft = console_root / "peft"
    results = run_qa(Settings.resolve(workspace=console_root), server=served, layers=[peft / "alpha", peft / "beta"],
                     prompts=small_prompts, max_tokens=8, progress=False, echo=lambda line: None)
    name = Path(results["report_dir"]).name
    page.goto(f"{served}/qa")
    report = page.locator("section.report", has=page.get_by_role("heading", name=name))
    report.wait_for()
    header = report.locator("table thead th").all_inner_texts()
    assert header[0] == "layer" and "ASC_Leases" in header
    assert {"base", "alpha", "beta"} <= set(report.locator("table tbody tr td:first-child").all_inner_texts())
    html = page.request.get(f"{served}/qa/{name}/report.html")
    assert html.ok and "sandbox" in html.headers["content-security-policy"]
    assert page.request.get(f"{served}/qa/{name}/../../console.sqlite").status == 404
    page.goto(f"{served}/qa")  # the screenshot shows the list
    report.wait_for()


def test_status_page_reads_metrics(page, served, engine):
    engine.post("/v1/completions", json={"prompt": "Leases are", "max_tokens": 4, "temperature": 0})
    metrics = engine.get("/metrics").text
    page.goto(f"{served}/status")
    swaps = page.locator("dd[data-key='adapter swaps']")
    swaps.wait_for()
    assert page.locator("dd[data-key='health']").inner_text() == "ok"
    assert int(float(swaps.inner_text())) >= int(_metric(metrics, "strata_adapter_swaps_total"))
    completion = _metric(metrics, "strata_tokens_total", kind="completion")
    assert completion >= 1 and float(page.locator("dd[data-key='completion tokens']").inner_text()) >= completion
    assert page.locator("dd[data-key='slots busy']").inner_text().endswith("/ 4")
