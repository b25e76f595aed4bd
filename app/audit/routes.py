"""Reading the log as JSON (auditors). Tiles and checkpoints come with the verifiable log."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import BaseModel

from app.accounts.models import User
from app.audit import service as audit
from app.deps import SessionDep, make_router, require

router = make_router(prefix="/api/log", tags=["log"])


class LogEntryOut(BaseModel):
    index: int
    created_at: datetime
    actor: str
    action: str
    subject: str
    # The canonical entry bytes (base64) and RFC 6962 leaf hash (hex).
    entry: str
    leaf_hash: str


class LogPage(BaseModel):
    size: int
    entries: list[LogEntryOut]


@router.get("/entries", response_model=LogPage)
def list_entries(
    _: Annotated[User, Depends(require("log:read"))],
    session: SessionDep,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LogPage:
    """Log entries from `start`, in order."""
    rows = audit.entries(session, start, limit)
    return LogPage(
        size=audit.size(session),
        entries=[
            LogEntryOut(
                index=e.index,
                created_at=e.created_at,
                actor=e.actor,
                action=e.action,
                subject=e.subject,
                entry=base64.b64encode(e.entry).decode("ascii"),
                leaf_hash=e.leaf_hash.hex(),
            )
            for e in rows
        ],
    )
