"""JSON API for sessions, the signed-in person, API tokens, invites and people."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response, status

from app.accounts import schemas
from app.accounts import service as accounts
from app.accounts.models import User
from app.deps import (
    SESSION_COOKIE,
    HasherDep,
    NowDep,
    PrincipalDep,
    RowId,
    SessionDep,
    SettingsDep,
    client_address,
    make_router,
    require,
    secure_cookies,
)
from app.permissions import Role

router = make_router(prefix="/api", tags=["accounts"])


def user_out(user: User) -> schemas.UserOut:
    return schemas.UserOut(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        agency_id=user.agency_id,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


@router.post("/session", response_model=schemas.LoginOut)
def login(
    body: schemas.LoginIn,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    now: NowDep,
) -> schemas.LoginOut:
    """Sign in with user name and password; sets the session cookie (ending the one sent)."""
    started = accounts.login(
        session,
        hasher,
        settings,
        body.username,
        body.password,
        client_address(request),
        now,
        previous_token=request.cookies.get(SESSION_COOKIE),
    )
    response.set_cookie(
        SESSION_COOKIE,
        started.token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        max_age=settings.session_hours * 3600,
        path="/",
    )
    return schemas.LoginOut(
        user=user_out(started.user),
        csrf_token=started.web_session.csrf_token,
        expires_at=started.web_session.expires_at,
    )


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def logout(principal: PrincipalDep, response: Response, session: SessionDep, now: NowDep) -> None:
    """End the current web session."""
    if principal.web_session is not None:
        accounts.end_session(session, principal.web_session, now)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", response_model=schemas.UserOut)
def me(user: Annotated[User, Depends(require("account:self"))]) -> schemas.UserOut:
    """The signed-in person."""
    return user_out(user)


@router.post("/tokens", response_model=schemas.TokenCreated, status_code=201)
def create_token(
    body: schemas.TokenIn,
    user: Annotated[User, Depends(require("account:self"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.TokenCreated:
    """Create an API token for the command line (shown once)."""
    api_token, secret = accounts.create_api_token(session, user, body.name, now)
    return schemas.TokenCreated(
        id=api_token.id,
        name=api_token.name,
        created_at=api_token.created_at,
        revoked_at=None,
        token=secret,
    )


@router.get("/tokens", response_model=list[schemas.TokenOut])
def list_tokens(
    user: Annotated[User, Depends(require("account:self"))], session: SessionDep
) -> list[schemas.TokenOut]:
    """One's own API tokens (never their secrets)."""
    return [
        schemas.TokenOut(id=t.id, name=t.name, created_at=t.created_at, revoked_at=t.revoked_at)
        for t in accounts.list_api_tokens(session, user)
    ]


@router.delete("/tokens/{token_id}", response_model=schemas.TokenOut)
def revoke_token(
    token_id: RowId,
    user: Annotated[User, Depends(require("account:self"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.TokenOut:
    """Revoke one of one's own API tokens."""
    t = accounts.revoke_api_token(session, user, token_id, now)
    return schemas.TokenOut(id=t.id, name=t.name, created_at=t.created_at, revoked_at=t.revoked_at)


@router.post("/invites", response_model=schemas.InviteCreated, status_code=201)
def create_invite(
    body: schemas.InviteIn,
    user: Annotated[User, Depends(require("invite:create"))],
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> schemas.InviteCreated:
    """Issue a single-use, expiring invite code for a role (requesters name their agency)."""
    invite, code = accounts.create_invite(session, user, body.role, body.agency_id, settings, now)
    return schemas.InviteCreated(
        id=invite.id,
        role=Role(invite.role),
        agency_id=invite.agency_id,
        expires_at=invite.expires_at,
        code=code,
    )


@router.get("/invites", response_model=list[schemas.InviteOut])
def list_invites(
    _: Annotated[User, Depends(require("invite:create"))], session: SessionDep
) -> list[schemas.InviteOut]:
    """Every invite and whether it was used (never the codes)."""
    return [
        schemas.InviteOut(
            id=i.id,
            role=Role(i.role),
            agency_id=i.agency_id,
            expires_at=i.expires_at,
            used_at=i.used_at,
        )
        for i in accounts.list_invites(session)
    ]


@router.post("/invites/accept", response_model=schemas.UserOut, status_code=201)
def accept_invite(
    body: schemas.AcceptInviteIn, session: SessionDep, hasher: HasherDep, now: NowDep
) -> schemas.UserOut:
    """Create one's account from an invite code."""
    return user_out(
        accounts.accept_invite(session, hasher, body.code, body.username, body.password, now)
    )


@router.get("/people", response_model=list[schemas.UserOut])
def list_people(
    _: Annotated[User, Depends(require("person:manage"))], session: SessionDep
) -> list[schemas.UserOut]:
    """Everyone with an account and their role."""
    return [user_out(u) for u in accounts.list_users(session)]


@router.post("/people/{user_id}/disable", response_model=schemas.UserOut)
def disable_person(
    user_id: RowId,
    admin: Annotated[User, Depends(require("person:manage"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.UserOut:
    """Disable someone's account (their sessions and tokens stop working)."""
    return user_out(accounts.disable_user(session, admin, user_id, now))
