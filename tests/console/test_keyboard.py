"""Keyboard only: on every page, Tab reaches every visible control, and each control has an accessible name."""

from __future__ import annotations

import pytest

PAGES = ["/", "/playground", "/compare", "/arena", "/qa", "/status", "/training"]
KEY = ("e.tagName + '|' + (e.id || '') + '|' + e.textContent.trim().slice(0, 40) + '|' + "
       "(e.getAttribute('aria-label') || '')")
CONTROLS = """() => Array.from(document.querySelectorAll('a[href], button, input, select, textarea, summary'))
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null && !e.disabled)
  .map(e => {
    const label = (e.labels && e.labels.length ? e.labels[0].textContent : '') || e.getAttribute('aria-label')
      || (['BUTTON', 'A', 'SUMMARY'].includes(e.tagName) ? e.textContent : '');
    return {id: e.id || e.textContent.trim().slice(0, 40) || e.tagName, name: (label || '').trim(), key: KEY};
  })""".replace("KEY", KEY)
ACTIVE = "() => { const e = document.activeElement; return KEY; }".replace("KEY", KEY)


@pytest.mark.parametrize("path", PAGES)
def test_every_control_reachable_by_tab_and_labelled(page, served, path):
    page.goto(f"{served}{path}")
    page.wait_for_load_state("networkidle")
    if path in ("/", "/compare", "/playground", "/arena"):
        page.locator("input[type=range], input[type=checkbox]").first.wait_for()
    controls = page.evaluate(CONTROLS)
    unnamed = [c["id"] for c in controls if not c["name"]]
    assert not unnamed, f"controls without a label on {path}: {unnamed}"
    reached = set()
    for _ in range(len(controls) * 2 + 10):
        page.keyboard.press("Tab")
        reached.add(page.evaluate(ACTIVE))
    missing = [c["id"] for c in controls if c["key"] not in reached]
    assert not missing, f"not reachable with Tab on {path}: {missing}"
