"""Registering and reading requesting agencies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.agencies.models import Agency
from app.agencies.recipients import check_recipient
from app.audit import service as audit
from app.errors import Conflict, NotFound


def create_agency(
    session: Session, by: User, name: str, jurisdiction: str, recipient: str, now: datetime
) -> Agency:
    """Register an agency with the age recipient its shared clips will be addressed to."""
    recipient = check_recipient(recipient)
    name = name.strip()
    if session.scalar(select(Agency.id).where(Agency.name == name)) is not None:
        raise Conflict(f"an agency named {name!r} is already registered")
    agency = Agency(
        name=name, jurisdiction=jurisdiction.strip(), recipient=recipient, created_at=now
    )
    session.add(agency)
    session.flush()
    audit.append(
        session,
        f"user:{by.id}",
        "agency:create",
        f"agency:{agency.id}",
        {"name": agency.name, "jurisdiction": agency.jurisdiction, "recipient": recipient},
        now=now,
    )
    return agency


def list_agencies(session: Session) -> Sequence[Agency]:
    return session.scalars(select(Agency).order_by(Agency.id)).all()


def get_agency(session: Session, agency_id: int) -> Agency:
    agency = session.get(Agency, agency_id)
    if agency is None:
        raise NotFound(f"agency {agency_id} not found")
    return agency
