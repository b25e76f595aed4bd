"""The two lifecycles as transition tables (DESIGN "Request lifecycle").

`(state, event) -> new state`; anything not in a table is an InvalidTransition (409). Each
transition writes exactly one log entry, action `request:<event>` or `ask:<event>`, in the
caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.entry import JSONValue
from app.errors import InvalidTransition
from app.requests.models import Ask, FootageRequest

REQUEST_TRANSITIONS: dict[tuple[str, str], str] = {
    ("submitted", "approve"): "approved",
    ("submitted", "reject"): "rejected",
    ("approved", "open"): "open",
    ("open", "close"): "closed",
    ("closed", "expire"): "expired",
}

ASK_TRANSITIONS: dict[tuple[str, str], str] = {
    ("pending", "consent"): "consented",
    ("pending", "decline"): "declined",
    ("pending", "expire"): "expired",
    ("consented", "revoke"): "revoked",
}


def request_transition(
    session: Session,
    footage_request: FootageRequest,
    event: str,
    actor: str,
    now: datetime,
    details: dict[str, JSONValue] | None = None,
) -> None:
    target = REQUEST_TRANSITIONS.get((footage_request.state, event))
    if target is None:
        raise InvalidTransition(
            f"request {footage_request.id} is {footage_request.state}; it cannot {event}"
        )
    previous = footage_request.state
    footage_request.state = target
    session.flush()
    audit.append(
        session,
        actor,
        f"request:{event}",
        f"request:{footage_request.id}",
        {"from": previous, "to": target, **(details or {})},
        now=now,
    )


def ask_transition(
    session: Session,
    ask: Ask,
    event: str,
    actor: str,
    now: datetime,
    details: dict[str, JSONValue] | None = None,
) -> None:
    target = ASK_TRANSITIONS.get((ask.state, event))
    if target is None:
        raise InvalidTransition(f"this ask is {ask.state}; it cannot {event}")
    previous = ask.state
    ask.state = target
    session.flush()
    audit.append(
        session,
        actor,
        f"ask:{event}",
        f"ask:{ask.id}",
        {"request": ask.request_id, "from": previous, "to": target, **(details or {})},
        now=now,
    )
