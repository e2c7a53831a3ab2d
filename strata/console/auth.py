"""Console access: bearer key for scripts, a login cookie (HttpOnly, SameSite=Strict) plus a CSRF token for browsers."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

COOKIE = "strata_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _mac(key: str, purpose: str) -> str:
    return hmac.new(key.encode(), f"strata-console:{purpose}".encode(), hashlib.sha256).hexdigest()


def session_token(key: str) -> str:
    """The cookie value: derived from the key, so changing the key logs every browser out."""
    return _mac(key, "session")


def csrf_token(key: str | None) -> str:
    """The token each page carries and each state-changing browser request sends back ('' without a key)."""
    return _mac(key, "csrf") if key else ""


def same(given: str | None, want: str) -> bool:
    """Constant-time equality of a given secret with the expected one (False when nothing was given)."""
    return bool(given) and secrets.compare_digest(given.encode(), want.encode())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


def cross_site(request: Request) -> bool:
    """A browser request sent by another site's page (its Origin names another host)."""
    origin = request.headers.get("origin")
    return bool(origin) and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", "")


def check(request: Request, key: str | None, page: bool, form_csrf: str | None = None) -> Response | None:
    """None when the request may go on; otherwise the answer (login redirect, 401 or 403)."""
    changing = request.method not in SAFE_METHODS
    if changing and cross_site(request):
        return _error(403, "cross-site request refused: use the console's own pages, or call the API with "
                           "`Authorization: Bearer KEY` from a script.")
    if not key:
        return None
    if same(request.headers.get("authorization"), f"Bearer {key}"):
        return None  # a script with the key: no cookie, so no CSRF token either
    if same(request.cookies.get(COOKIE), session_token(key)):
        if changing and not (same(request.headers.get(CSRF_HEADER), csrf_token(key))
                             or same(form_csrf, csrf_token(key))):
            return _error(403, "missing or wrong CSRF token; reload the page and try again.")
        return None
    if page:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return _error(401, "missing or wrong API key: log in at /login, or send `Authorization: Bearer <key>`.")


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host or scheme) may be the post-login redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_cookie(response: Response, key: str, secure: bool) -> Response:
    response.set_cookie(COOKIE, session_token(key), httponly=True, samesite="strict", secure=secure, path="/")
    return response
