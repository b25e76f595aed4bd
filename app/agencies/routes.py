"""JSON API for agencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.accounts.models import User
from app.agencies import schemas
from app.agencies import service as agencies
from app.agencies.models import Agency
from app.agencies.recipients import is_post_quantum
from app.deps import NowDep, RowId, SessionDep, make_router, require

router = make_router(prefix="/api/agencies", tags=["agencies"])


def agency_out(agency: Agency) -> schemas.AgencyOut:
    return schemas.AgencyOut(
        id=agency.id,
        name=agency.name,
        jurisdiction=agency.jurisdiction,
        recipient=agency.recipient,
        post_quantum=is_post_quantum(agency.recipient),
        created_at=agency.created_at,
    )


@router.post("", response_model=schemas.AgencyOut, status_code=201)
def create_agency(
    body: schemas.AgencyIn,
    user: Annotated[User, Depends(require("agency:manage"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.AgencyOut:
    """Register a requesting agency."""
    return agency_out(
        agencies.create_agency(session, user, body.name, body.jurisdiction, body.recipient, now)
    )


@router.get("", response_model=list[schemas.AgencyOut])
def list_agencies(
    _: Annotated[User, Depends(require("agency:read"))], session: SessionDep
) -> list[schemas.AgencyOut]:
    """All registered agencies."""
    return [agency_out(a) for a in agencies.list_agencies(session)]


@router.get("/{agency_id}", response_model=schemas.AgencyOut)
def get_agency(
    agency_id: RowId, _: Annotated[User, Depends(require("agency:read"))], session: SessionDep
) -> schemas.AgencyOut:
    """One agency."""
    return agency_out(agencies.get_agency(session, agency_id))
