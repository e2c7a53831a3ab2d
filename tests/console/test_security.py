"""With --api-key: pages redirect to the login form, which sets an HttpOnly SameSite=Strict cookie; a browser POST
without the CSRF token is 403; a script with the bearer key needs none; /health stays open."""

from __future__ import annotations

import httpx
import pytest

from strata.serve.server import serve_in_thread

KEY = "console-test-key"
POST = """async ([path, csrf]) => {
  const headers = {"Content-Type": "application/json"};
  if (csrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
  const r = await fetch(path, {method: "POST", headers, body: JSON.stringify({adapters: [{id: 0, scale: 1}]})});
  return r.status;
}"""


@pytest.fixture(scope="module")
def keyed(config_for_console):
    with serve_in_thread(config_for_console(api_key=KEY)) as url:
        yield url


def test_api_key_login_cookie_and_csrf(page, keyed):
    page.goto(f"{keyed}/arena")
    assert page.url.startswith(f"{keyed}/login?next=")
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("That key is not right.").wait_for()
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{keyed}/arena")
    cookie = next(c for c in page.context.cookies() if c["name"] == "strata_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # script cannot read it
    assert page.evaluate(POST, ["/api/console/adapters", False]) == 403
    assert page.evaluate(POST, ["/api/console/adapters", True]) == 200
    assert page.evaluate(POST, ["/api/training/trigger", False]) == 403
    with httpx.Client(base_url=keyed, timeout=60) as script:
        assert script.get("/health").status_code == 200
        assert script.get("/api/training/runs").status_code == 401
        assert script.get("/").status_code == 303
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert script.get("/api/training/runs", headers=bearer).status_code == 200
        body = {"adapters": [{"id": 0, "scale": 1}]}
        assert script.post("/api/console/adapters", headers=bearer, json=body).status_code == 200
        assert script.get("/lora-adapters").status_code == 401  # the engine API keeps its own bearer rule
        cross = script.post("/api/console/adapters", headers=bearer | {"Origin": "http://evil.example"}, json={})
        assert cross.status_code == 403
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{keyed}/login")
    page.goto(f"{keyed}/training")
    assert page.url.startswith(f"{keyed}/login?next=%2Ftraining")
