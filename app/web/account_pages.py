"""Signing in and out, accepting an invite, and the front door that sends each role home."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts import service as accounts
from app.deps import (
    SESSION_COOKIE,
    HasherDep,
    NowDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    client_address,
    secure_cookies,
)
from app.errors import AppError
from app.web.render import (
    ROLE_HOME,
    VisitorDep,
    attempt,
    check_form_csrf,
    field_errors,
    new_form_csrf,
    page_router,
    render,
    see_other,
    set_form_csrf,
)

router = page_router(tags=["pages"])

OptionalText = Annotated[str, Form()]


def _safe_next(target: str | None) -> str | None:
    # Only same-site paths: an open redirect would let a phishing link borrow our address.
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


@router.get("/")
def home(request: Request, principal: VisitorDep) -> Response:
    """The front door: signed-in people go to their role's page, visitors see the links."""
    if principal is not None:
        return see_other(ROLE_HOME[principal.user.role])
    return render(request, "home.html")


def _login_form(
    request: Request,
    secure: bool,
    *,
    username: str = "",
    next_path: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = new_form_csrf()
    response = render(
        request,
        "login.html",
        {
            "form_token": token,
            "username": username,
            "next": next_path or "",
            "errors": errors or {},
        },
        status_code=status_code,
    )
    set_form_csrf(response, token, secure)
    return response


@router.get("/login")
def login_page(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    """The sign-in form."""
    return _login_form(request, secure_cookies(request, settings), next_path=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    now: NowDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str | None, Form()] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    """Check the password, start a session, go to the role's home page (or where one was going)."""
    check_form_csrf(request, csrf_token)
    outcome = attempt(
        session,
        lambda: accounts.login(
            session,
            hasher,
            settings,
            username,
            password,
            client_address(request),
            now,
            previous_token=request.cookies.get(SESSION_COOKIE),
        ),
    )
    if isinstance(outcome, AppError):
        return _login_form(
            request,
            secure_cookies(request, settings),
            username=username,
            next_path=_safe_next(next),
            errors={"password": outcome.message},
            status_code=outcome.status_code,
        )
    response = see_other(_safe_next(next) or ROLE_HOME[outcome.user.role])
    response.set_cookie(
        SESSION_COOKIE,
        outcome.token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        max_age=settings.session_hours * 3600,
        path="/",
    )
    return response


@router.post("/logout")
def logout(principal: PrincipalDep, session: SessionDep, now: NowDep) -> Response:
    """End this web session."""
    if principal.web_session is not None:
        accounts.end_session(session, principal.web_session, now)
    response = see_other("/login?signed_out=1")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _invite_form(
    request: Request,
    secure: bool,
    *,
    code: str = "",
    username: str = "",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = new_form_csrf()
    response = render(
        request,
        "invite.html",
        {"form_token": token, "code": code, "username": username, "errors": errors or {}},
        status_code=status_code,
    )
    set_form_csrf(response, token, secure)
    return response


@router.get("/invite")
def invite_page(request: Request, settings: SettingsDep, code: str = "") -> Response:
    """Accept an invite: choose a user name and password."""
    return _invite_form(request, secure_cookies(request, settings), code=code)


@router.post("/invite")
def accept_invite(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    now: NowDep,
    code: Annotated[str, Form()],
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    password_again: Annotated[str, Form()],
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    """Create one's account from an invite code, then sign in."""
    check_form_csrf(request, csrf_token)
    if password != password_again:
        return _invite_form(
            request,
            secure_cookies(request, settings),
            code=code,
            username=username,
            errors={"password_again": "the two passwords differ"},
            status_code=422,
        )
    outcome = attempt(
        session, lambda: accounts.accept_invite(session, hasher, code, username, password, now)
    )
    if isinstance(outcome, AppError):
        errors = field_errors(outcome.message, ["invite", "password", "user name"])
        # Map the service's words onto the form's fields.
        renamed = {
            {"invite": "code", "user name": "username"}.get(k, k) or "code": v
            for k, v in errors.items()
        }
        return _invite_form(
            request,
            secure_cookies(request, settings),
            code=code,
            username=username,
            errors=renamed,
            status_code=outcome.status_code,
        )
    return see_other("/login?welcome=1")
