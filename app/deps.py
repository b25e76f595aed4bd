"""Request plumbing: one session and ONE COMMIT per request, the clock, and who is calling.

`TransactionRoute` (the route class of every router) opens the request's session, runs the
endpoint, then commits, or rolls back on error, before the response leaves. An `AppError` with
`commit = True` (a failed login, which must be counted and logged) commits, then is rendered.
Services never commit.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from argon2 import PasswordHasher
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.accounts import service as accounts
from app.accounts.models import User, WebSession
from app.db import MAX_ROW_ID
from app.errors import AppError, Conflict, NotAuthenticated, NotPermitted
from app.permissions import PERMISSIONS, has_permission
from app.settings import Settings

SESSION_COOKIE = "porchlight_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TransactionRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_in_transaction(request: Request) -> Response:
            session: Session = request.app.state.sessionmaker()
            request.state.db_session = session
            try:
                response = await handler(request)
                await run_in_threadpool(session.commit)
            except AppError as error:
                await run_in_threadpool(session.commit if error.commit else session.rollback)
                raise
            except IntegrityError:
                # A unique key lost a race with a concurrent request: a conflict, not a crash.
                await run_in_threadpool(session.rollback)
                raise Conflict("a concurrent change conflicted with this one; try again") from None
            except BaseException:
                await run_in_threadpool(session.rollback)
                raise
            finally:
                await run_in_threadpool(session.close)
            return response

        return run_in_transaction


def make_router(**options: Any) -> APIRouter:
    """An APIRouter whose routes run in one transaction each (use this for every router)."""
    return APIRouter(route_class=TransactionRoute, **options)


def _session(request: Request) -> Session:
    session = getattr(request.state, "db_session", None)
    if session is None:
        raise RuntimeError(
            "no database session: build the router with app.deps.make_router() "
            "(route_class=TransactionRoute)"
        )
    return session  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _hasher(request: Request) -> PasswordHasher:
    return request.app.state.password_hasher  # type: ignore[no-any-return]


def _now(request: Request) -> datetime:
    # Injectable so tests can move time (invite expiry, throttling windows).
    return request.app.state.clock()  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
HasherDep = Annotated[PasswordHasher, Depends(_hasher)]
NowDep = Annotated[datetime, Depends(_now)]

# An integer id in a URL path: anything outside 1..MAX_ROW_ID (app.db) names no row, and is
# refused with a 422 before it reaches the database.
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


def secure_cookies(request: Request, settings: Settings) -> bool:
    """Do cookies get the Secure flag? Always with PORCHLIGHT_TLS, and for any request that
    came over HTTPS (directly, or through a proxy whose X-Forwarded-Proto uvicorn trusts): a
    server whose operator forgot the setting still never lets a browser that reached it over
    HTTPS send its session cookie over plain HTTP."""
    return settings.tls or request.url.scheme == "https"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Principal:
    """A signed-in person, and how: by web session cookie (needs CSRF) or API token (does not)."""

    user: User
    web_session: WebSession | None


def _authenticate(request: Request, session: SessionDep, now: NowDep) -> Principal | None:
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise NotAuthenticated("Authorization must be 'Bearer <API token>'")
        user = accounts.user_for_api_token(session, secret.strip())
        if user is None or user.disabled_at is not None:
            raise NotAuthenticated("API token not recognised or revoked")
        return Principal(user, None)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        web_session = accounts.session_for_token(session, cookie, now)
        if web_session is not None:
            user = session.get(User, web_session.user_id)
            if user is not None and user.disabled_at is None:
                return Principal(user, web_session)
    return None


async def _principal(
    request: Request, principal: Annotated[Principal | None, Depends(_authenticate)]
) -> Principal:
    if principal is None:
        raise NotAuthenticated("not signed in")
    if principal.web_session is not None and request.method not in SAFE_METHODS:
        # Session-bound CSRF token: a cross-site form cannot read it, so it cannot echo it.
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form_value = (await request.form()).get(CSRF_FIELD)
            sent = form_value if isinstance(form_value, str) else None
        expected = principal.web_session.csrf_token
        # Compared in constant time, as check_form_csrf does: the token guards every change.
        if sent is None or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise NotPermitted("missing or wrong CSRF token")
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]
# For pages that show something different to visitors and signed-in people (no CSRF check:
# use it on GET only).
MaybePrincipalDep = Annotated[Principal | None, Depends(_authenticate)]


def require(permission: str) -> Callable[[Principal], User]:
    """Dependency: the calling person, if their role grants `permission` (401/403 otherwise)."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")

    def dependency(principal: PrincipalDep) -> User:
        if not has_permission(principal.user.role, permission):
            raise NotPermitted(f"your role may not do this ({permission})")
        return principal.user

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency
