"""JSON API for the community policy: anyone signed in reads it, admins change it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import Depends

from app.accounts.models import User
from app.deps import NowDep, SessionDep, make_router, require
from app.policy import schemas
from app.policy import service as policies

router = make_router(prefix="/api", tags=["policy"])


@router.get("/policy", response_model=schemas.PolicyOut)
def read_policy(
    _: Annotated[User, Depends(require("account:self"))], session: SessionDep
) -> schemas.PolicyOut:
    """The limits requests are checked against."""
    return schemas.PolicyOut(**asdict(policies.current(session)))


@router.put("/policy", response_model=schemas.PolicyOut)
def update_policy(
    body: schemas.PolicyIn,
    user: Annotated[User, Depends(require("policy:manage"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.PolicyOut:
    """Change the community's limits (logged with old and new values)."""
    policy = policies.update(session, user, policies.Policy(**body.model_dump()), now)
    return schemas.PolicyOut(**asdict(policy))
