"""Rendering pages: templates, page routers, CSRF for signed-out forms, form errors."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.deps import CSRF_FIELD, SESSION_COOKIE, NowDep, Principal, SessionDep, make_router
from app.errors import AppError, NotPermitted

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
# Signed-out forms (login, accept invite) have no session yet: double-submit cookie.
LOGIN_CSRF_COOKIE = "porchlight_form_csrf"

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
)


def _when(moment: datetime | None) -> str:
    # One unambiguous format everywhere: UTC, to the minute.
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when

ROLE_HOME = {
    "resident": "/resident/devices",
    "reviewer": "/review",
    "requester": "/requests",
    "admin": "/admin/people",
    "auditor": "/audit/requests",
}

# What each role's navigation shows: (path, label).
ROLE_NAV: dict[str, list[tuple[str, str]]] = {
    "resident": [
        ("/resident/devices", "My devices"),
        ("/resident/asks", "My asks"),
        ("/resident/history", "History"),
    ],
    "reviewer": [("/review", "Review queue")],
    "requester": [("/requests", "My requests"), ("/requests/new", "File a request")],
    "admin": [
        ("/admin/people", "People"),
        ("/admin/invites", "Invites"),
        ("/admin/agencies", "Agencies"),
        ("/admin/devices", "Devices"),
        ("/admin/policy", "Policy"),
    ],
    "auditor": [
        ("/audit/requests", "Requests"),
        ("/audit/log", "Log"),
        ("/audit/checkpoint", "Checkpoint"),
        ("/audit/people", "Roles"),
    ],
}


def _visitor(request: Request, session: SessionDep, now: NowDep) -> Principal | None:
    # Public pages only care about a browser's session cookie; any other credential (an API
    # token, a device signature) is simply ignored there rather than refused.
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    web_session = accounts.session_for_token(session, cookie, now)
    if web_session is None:
        return None
    user = session.get(User, web_session.user_id)
    if user is None or user.disabled_at is not None:
        return None
    return Principal(user, web_session)


# Public pages: the signed-in person if a browser session is present, else None (GET only).
VisitorDep = Annotated[Principal | None, Depends(_visitor)]


def _mark_page(request: Request) -> None:
    request.state.page = True


def page_router(**options: Any) -> APIRouter:
    """A router for HTML pages: one transaction per request, errors rendered as pages."""
    # Router dependencies run before the endpoint's own, so the mark is set before any
    # authentication error can be raised.
    return make_router(
        include_in_schema=False,
        dependencies=[Depends(_mark_page)],
        default_response_class=HTMLResponse,
        **options,
    )


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    principal: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a template with the signed-in person, their navigation and CSRF token."""
    user = principal.user if principal else None
    csrf = ""
    if principal is not None and principal.web_session is not None:
        csrf = principal.web_session.csrf_token
    full: dict[str, Any] = {
        "user": user,
        "nav": ROLE_NAV.get(user.role, []) if user else [],
        "csrf_token": csrf,
        "csrf_field": CSRF_FIELD,
        "path": request.url.path,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, full, status_code=status_code)


def see_other(path: str) -> RedirectResponse:
    """Post/redirect/get: after a successful form, back to a page (303 turns POST into GET)."""
    return RedirectResponse(path, status_code=303)


def new_form_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_form_csrf(response: HTMLResponse, token: str, secure: bool) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


def check_form_csrf(request: Request, sent: str | None) -> None:
    """Signed-out forms: the hidden field must equal the cookie set when the form was shown."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise NotPermitted("missing or wrong CSRF token: reload the page and try again")


T = TypeVar("T")


def attempt(session: Session, action: Callable[[], T]) -> T | AppError:
    """Run a service call for a form; on an expected error undo its work and return the error."""
    try:
        return action()
    except AppError as error:
        if not error.commit:
            session.rollback()
        return error


def field_errors(message: str, fields: list[str]) -> dict[str, str]:
    """Place a service's message beside the first field it names (else under the form: "")."""
    lowered = message.lower()
    for field in fields:
        if field.lower() in lowered or field.replace("_", " ").lower() in lowered:
            return {field: message}
    return {"": message}


def public_url(request: Request) -> str:
    """The address people and cameras use: the configured public URL, else this request's."""
    configured: str = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")
