"""Request and response bodies for accounts, invites, sessions and API tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.db import MAX_ROW_ID
from app.permissions import Role

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    agency_id: int | None
    created_at: datetime
    disabled_at: datetime | None = None


class LoginIn(Strict):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class LoginOut(BaseModel):
    user: UserOut
    # Echo this in the X-CSRF-Token header (or a csrf_token form field) on every write.
    csrf_token: str
    expires_at: datetime


class InviteIn(Strict):
    role: Role
    # A row id (beyond the range, no agency could exist; SQLite could not even look it up).
    agency_id: int | None = Field(default=None, ge=1, le=MAX_ROW_ID)


class InviteOut(BaseModel):
    id: int
    role: Role
    agency_id: int | None
    expires_at: datetime
    used_at: datetime | None = None


class InviteCreated(InviteOut):
    # Shown once; only its hash is stored.
    code: str


class AcceptInviteIn(Strict):
    code: str = Field(max_length=200)
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(max_length=1024)


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    # Shown once; only its hash is stored.
    token: str
