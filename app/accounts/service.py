"""Accounts: creating people, invites, logging in (throttled), sessions and API tokens.

Every state change appends a log entry in the caller's transaction; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from app import tokens
from app.accounts import passwords
from app.accounts.models import ApiToken, Invite, LoginAttempt, User, WebSession
from app.agencies.models import Agency
from app.audit import service as audit
from app.errors import (
    Conflict,
    InvalidInput,
    LoginFailed,
    NotAuthenticated,
    NotFound,
    TooManyAttempts,
)
from app.permissions import Role
from app.requests.models import RequestReview
from app.settings import Settings


def actor_of(user: User | None) -> str:
    return f"user:{user.id}" if user is not None else "system"


def _check_agency(session: Session, role: Role, agency_id: int | None) -> None:
    if role is Role.requester:
        if agency_id is None:
            raise InvalidInput("a requester must belong to an agency: give agency_id")
        if session.get(Agency, agency_id) is None:
            raise NotFound(f"agency {agency_id} does not exist")
    elif agency_id is not None:
        raise InvalidInput("only requesters belong to an agency")


def create_user(
    session: Session,
    hasher: PasswordHasher,
    *,
    username: str,
    password: str,
    role: Role,
    agency_id: int | None,
    actor: str,
    now: datetime,
) -> User:
    """Create a person (no self sign-up: called for invites and by `server create-admin`)."""
    username = username.lower()
    _check_agency(session, role, agency_id)
    passwords.check_strength(password, username)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user name {username!r} is taken")
    user = User(
        username=username,
        role=role.value,
        agency_id=agency_id,
        password_hash=hasher.hash(password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    audit.append(
        session,
        actor,
        "user:create",
        f"user:{user.id}",
        {"role": role.value, "agency": agency_id},
        now=now,
    )
    return user


def admin_exists(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == Role.admin.value).limit(1)) is not None


def create_invite(
    session: Session,
    by: User | None,
    role: Role,
    agency_id: int | None,
    settings: Settings,
    now: datetime,
) -> tuple[Invite, str]:
    """A single-use, expiring invite for a role; returns the code (shown once)."""
    _check_agency(session, role, agency_id)
    code = tokens.new_secret("inv")
    invite = Invite(
        code_hash=tokens.digest(code),
        role=role.value,
        agency_id=agency_id,
        created_by=by.id if by else None,
        created_at=now,
        expires_at=now + timedelta(hours=settings.invite_hours),
    )
    session.add(invite)
    session.flush()
    audit.append(
        session,
        actor_of(by),
        "invite:create",
        f"invite:{invite.id}",
        {"role": role.value, "agency": agency_id, "expires_at": invite.expires_at.isoformat()},
        now=now,
    )
    return invite, code


def list_invites(session: Session) -> Sequence[Invite]:
    return session.scalars(select(Invite).order_by(Invite.id)).all()


def accept_invite(
    session: Session,
    hasher: PasswordHasher,
    code: str,
    username: str,
    password: str,
    now: datetime,
) -> User:
    """Create the invited person's account and use up the invite."""
    # FOR UPDATE: two concurrent accepts of one code on PostgreSQL must not both succeed.
    invite = session.scalar(
        select(Invite).where(Invite.code_hash == tokens.digest(code)).with_for_update()
    )
    if invite is None:
        raise NotFound("invite code not recognised")
    if invite.used_at is not None:
        raise Conflict("invite code has already been used")
    if invite.expires_at <= now:
        raise Conflict("invite code has expired; ask an admin for a new one")
    user = create_user(
        session,
        hasher,
        username=username,
        password=password,
        role=Role(invite.role),
        agency_id=invite.agency_id,
        actor="anonymous",
        now=now,
    )
    invite.used_at = now
    invite.used_by = user.id
    audit.append(session, f"user:{user.id}", "invite:accept", f"invite:{invite.id}", {}, now=now)
    return user


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.id)).all()


# The roles whose holders the community must trust, in the order auditors see them.
APPOINTED_ROLES = (Role.reviewer, Role.auditor, Role.admin)


@dataclass(frozen=True)
class Review:
    request_id: int
    decision: str


@dataclass(frozen=True)
class Appointment:
    """A holder of a trusted role and who appointed them: the creator of the invite they
    accepted, or None (`appointer`) when a server command made the account or the invite."""

    user_id: int
    username: str
    role: str
    agency: str | None
    created_at: datetime
    disabled_at: datetime | None
    appointer: str | None
    appointer_role: str | None
    reviews: tuple[Review, ...]


def appointments(session: Session) -> list[Appointment]:
    """Every reviewer, auditor and admin (never residents or requesters), by role then age,
    with who appointed them and the requests they reviewed: two queries for the whole list."""
    appointer = aliased(User)
    roles = [role.value for role in APPOINTED_ROLES]
    # `used_by` is set once, by the accept that created the account; an account with no
    # invite was made by `server create-admin`.
    rows = session.execute(
        select(
            User.id,
            User.username,
            User.role,
            Agency.name,
            User.created_at,
            User.disabled_at,
            appointer.username,
            appointer.role,
        )
        .outerjoin(Agency, Agency.id == User.agency_id)
        .outerjoin(Invite, Invite.used_by == User.id)
        .outerjoin(appointer, appointer.id == Invite.created_by)
        .where(User.role.in_(roles))
        .order_by(User.created_at, User.id)
    ).all()
    reviews: dict[int, list[Review]] = {}
    for reviewer_id, request_id, decision in session.execute(
        select(RequestReview.reviewer_id, RequestReview.request_id, RequestReview.decision)
        .join(User, User.id == RequestReview.reviewer_id)
        .where(User.role.in_(roles))
        .order_by(RequestReview.request_id)
    ):
        reviews.setdefault(reviewer_id, []).append(Review(request_id, decision))
    held = [
        Appointment(
            user_id,
            username,
            role,
            agency,
            created,
            disabled,
            by,
            by_role,
            reviews=tuple(reviews.get(user_id, ())),
        )
        for user_id, username, role, agency, created, disabled, by, by_role in rows
    ]
    return sorted(held, key=lambda a: roles.index(a.role))


def disable_user(session: Session, by: User, user_id: int, now: datetime) -> User:
    """Disable an account: its sessions and API tokens stop working at once."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if user.id == by.id:
        raise Conflict("you cannot disable your own account")
    if user.disabled_at is not None:
        raise Conflict(f"user {user_id} is already disabled")
    user.disabled_at = now
    audit.append(session, f"user:{by.id}", "user:disable", f"user:{user.id}", {}, now=now)
    return user


# A valid hash of a random password: verifying against it when the user does not exist keeps
# the response time the same, so timing does not reveal which user names exist.
_dummy_hashes: dict[int, str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    key = id(hasher)
    if key not in _dummy_hashes:
        _dummy_hashes[key] = hasher.hash(tokens.new_secret("dummy"))
    return _dummy_hashes[key]


def _recent_failures(
    session: Session, column: InstrumentedAttribute[str], value: str, since: datetime
) -> int:
    return (
        session.scalar(
            select(func.count(LoginAttempt.id)).where(
                column == value,
                LoginAttempt.succeeded.is_(False),
                LoginAttempt.attempted_at > since,
            )
        )
        or 0
    )


def _failed_here(session: Session, username: str, address: str, since: datetime) -> bool:
    """Has a login to this account from this address failed since `since`?"""
    found = session.scalar(
        select(LoginAttempt.id)
        .where(
            LoginAttempt.username == username,
            LoginAttempt.address == address,
            LoginAttempt.succeeded.is_(False),
            LoginAttempt.attempted_at > since,
        )
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True)
class NewSession:
    user: User
    web_session: WebSession
    token: str


def login(
    session: Session,
    hasher: PasswordHasher,
    settings: Settings,
    username: str,
    password: str,
    address: str,
    now: datetime,
    previous_token: str | None = None,
) -> NewSession:
    """Check a password, throttled per account and per address; start a web session.

    `previous_token` is the session cookie the request carried, if any: a successful login ends
    that session (if still live), so a token that leaked before signing in stops working and the
    last person's session on a shared browser ends when the next one signs in. A failed or
    throttled login ends nothing.
    """
    username = username.lower()
    since = now - timedelta(minutes=settings.login_window_minutes)
    # Attempts older than the window no longer count; the log keeps the history.
    session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at <= since))
    user = session.scalar(select(User).where(User.username == username))
    subject = f"user:{user.id}" if user else "user:unknown"
    # An account under attack (too many recent failures) is closed to every address that has
    # itself failed on it in the window, not to all: otherwise anyone who knows a user name
    # could keep that person locked out with a few wrong passwords. Guessing from fresh
    # addresses still costs one address per guess, and the per-address limit still holds.
    throttled = (
        _recent_failures(session, LoginAttempt.username, username, since)
        >= settings.login_max_failures_per_account
        and _failed_here(session, username, address, since)
    ) or (
        _recent_failures(session, LoginAttempt.address, address, since)
        >= settings.login_max_failures_per_address
    )
    if throttled:
        session.add(
            LoginAttempt(username=username, address=address, succeeded=False, attempted_at=now)
        )
        audit.append(session, "anonymous", "login:throttle", subject, {}, now=now)
        error = TooManyAttempts(
            f"too many failed logins; try again in {settings.login_window_minutes} minutes"
        )
        error.commit = True
        raise error
    ok = passwords.verify(hasher, user.password_hash if user else _dummy_hash(hasher), password)
    if user is None or not ok or user.disabled_at is not None:
        session.add(
            LoginAttempt(username=username, address=address, succeeded=False, attempted_at=now)
        )
        audit.append(session, "anonymous", "login:fail", subject, {}, now=now)
        raise LoginFailed("wrong user name or password")
    session.add(LoginAttempt(username=username, address=address, succeeded=True, attempted_at=now))
    previous = session_for_token(session, previous_token, now) if previous_token else None
    if previous is not None:
        end_session(session, previous, now, reason="sign-in")
    token = tokens.new_secret("ses")
    web_session = WebSession(
        token_hash=tokens.digest(token),
        csrf_token=tokens.new_secret("csrf"),
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(hours=settings.session_hours),
    )
    session.add(web_session)
    session.flush()
    audit.append(
        session, f"user:{user.id}", "session:create", f"session:{web_session.id}", {}, now=now
    )
    return NewSession(user, web_session, token)


def session_for_token(session: Session, token: str, now: datetime) -> WebSession | None:
    web_session = session.scalar(
        select(WebSession).where(WebSession.token_hash == tokens.digest(token))
    )
    if web_session is None or web_session.ended_at is not None or web_session.expires_at <= now:
        return None
    return web_session


def end_session(
    session: Session, web_session: WebSession, now: datetime, *, reason: str = "sign-out"
) -> None:
    """End a web session: `sign-out` by its user, or `sign-in` when someone signed in from the
    browser still holding it (the new session's user need not be this one)."""
    web_session.ended_at = now
    audit.append(
        session,
        f"user:{web_session.user_id}",
        "session:end",
        f"session:{web_session.id}",
        {"reason": reason},
        now=now,
    )


def create_api_token(
    session: Session, user: User, name: str, now: datetime
) -> tuple[ApiToken, str]:
    """A bearer token for the command line; acts with its owner's role. Shown once."""
    secret = tokens.new_secret("plt")
    api_token = ApiToken(
        token_hash=tokens.digest(secret), name=name, user_id=user.id, created_at=now
    )
    session.add(api_token)
    session.flush()
    audit.append(session, f"user:{user.id}", "token:create", f"token:{api_token.id}", {}, now=now)
    return api_token, secret


def list_api_tokens(session: Session, user: User) -> Sequence[ApiToken]:
    return session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()


def revoke_api_token(session: Session, user: User, token_id: int, now: datetime) -> ApiToken:
    # Ownership in the query: another person's token id is simply not found.
    api_token = session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
    )
    if api_token is None:
        raise NotFound(f"token {token_id} not found")
    if api_token.revoked_at is not None:
        raise Conflict(f"token {token_id} is already revoked")
    api_token.revoked_at = now
    audit.append(session, f"user:{user.id}", "token:revoke", f"token:{api_token.id}", {}, now=now)
    return api_token


# A token's owner, read with the token in one statement. Nothing about a token is cached:
# every request reads it, so a revocation takes effect at the next request.
_API_TOKEN_OWNER = (
    select(User)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)
# For routes that read outside a session (app.log.routes): the role of a live token's
# owner, no row when the token is unknown or revoked or its owner is disabled.
LIVE_API_TOKEN_ROLE = (
    select(User.role)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        User.disabled_at.is_(None),
    )
)


def api_token_params(secret: str) -> dict[str, str]:
    """The parameters of `LIVE_API_TOKEN_ROLE` for a presented secret (it is stored hashed)."""
    return {"token_hash": tokens.digest(secret)}


def user_for_api_token(session: Session, secret: str) -> User | None:
    """The owner of an unrevoked API token (disabled or not: the caller decides), one query."""
    return session.scalars(_API_TOKEN_OWNER, api_token_params(secret)).first()


def require_active(user: User | None) -> User:
    if user is None or user.disabled_at is not None:
        raise NotAuthenticated("not signed in")
    return user
