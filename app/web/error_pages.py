"""Errors on page routes rendered as pages; a signed-out browser is sent to the login page.

A request is a page request when a page router marked it (`request.state.page`), or when it
is not under /api and the client asked for HTML (a mistyped address in a browser).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.errors import NotAuthenticated
from app.web.render import render

TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "That cannot be done now",
    413: "Too large",
    422: "Please check what you entered",
    429: "Too many attempts",
}


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def is_page_request(request: Request) -> bool:
    if getattr(request.state, "page", False):
        return True
    return not request.url.path.startswith("/api/") and wants_html(request)


def error_page(request: Request, status_code: int, message: str, error: Exception) -> Response:
    """The page for an error; GET of a page while signed out redirects a browser to /login."""
    if (
        isinstance(error, NotAuthenticated)
        and request.method == "GET"
        and wants_html(request)
        and not request.url.path.startswith("/login")
    ):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    response: HTMLResponse = render(
        request,
        "error.html",
        {
            "title": TITLES.get(status_code, "Something went wrong"),
            "message": message,
            "status_code": status_code,
            "signed_out": isinstance(error, NotAuthenticated),
        },
        status_code=status_code,
    )
    return response
