"""The HTML pages: each is a Jinja template over the same JSON the console API returns (filled in by console.js)."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from strata.console import auth
from strata.console.state import Console

# path -> (template, nav title); the nav is built from this table in this order
PAGES: dict[str, tuple[str, str]] = {
    "/": ("adapters.html", "Adapters"),
    "/playground": ("playground.html", "Playground"),
    "/compare": ("compare.html", "Compare"),
    "/arena": ("arena.html", "Arena"),
    "/qa": ("qa.html", "QA reports"),
    "/status": ("status.html", "Status"),
    "/training": ("training.html", "Training runs"),
}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin"}


def render(console: Console, template: str, status: int = 200, **context: object) -> HTMLResponse:
    html = console.templates.get_template(template).render(
        pages=[(path, title) for path, (_, title) in PAGES.items()], csrf=auth.csrf_token(console.api_key),
        keyed=bool(console.api_key), server_mode=type(console.upstream).__name__, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def page(path: str):
    template, title = PAGES[path]

    async def handler(request: Request, console: Console) -> Response:
        return render(console, template, path=path, title=title, max_scale=console.max_lora_scale)

    return handler


async def login_form(request: Request, console: Console) -> Response:
    return render(console, "login.html", path="/login", title="Log in", error=None,
                  next=auth.safe_next(request.query_params.get("next")))


async def login(request: Request, console: Console) -> Response:
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    key, target = (form.get("key") or [""])[0], auth.safe_next((form.get("next") or ["/"])[0])
    if not console.api_key:
        return RedirectResponse(target, status_code=303)
    if not auth.same(key, console.api_key):
        return render(console, "login.html", status=401, path="/login", title="Log in", next=target,
                      error="That key is not right. Use the server's --api-key value.")
    return auth.login_cookie(RedirectResponse(target, status_code=303), console.api_key, console.secure_cookie)


async def logout(request: Request, console: Console) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response
