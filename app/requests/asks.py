"""Asks and consents: what a device and its resident see, consent, decline, revoke.

Ownership lives in the queries: a device sees only its own asks, a resident only the asks of
their own devices; anything else is "not found".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, Join, Select, Table, and_, bindparam, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.agencies.models import Agency
from app.audit import service as audit
from app.devices import service as device_service
from app.devices.models import Device
from app.errors import Conflict, InvalidInput, NotFound
from app.requests import schemas
from app.requests.models import Ask, FootageRequest, SharedClip
from app.requests.service import area_out, warrant_end, warrant_out
from app.requests.transitions import ask_transition
from porchlight.consent import ConsentError, verify_receipt

LIVE_REQUEST_STATES = ("open", "closed")


def _ask_out(
    session: Session, ask: Ask, footage_request: FootageRequest, agency: Agency, officer: User
) -> schemas.DeviceAskOut:
    return _device_ask_out(
        uploaded_clip_ids(session.connection(), ask.id, ask.state),
        ask_id=ask.id,
        state=ask.state,
        deadline=ask.deadline,
        receipt=ask.receipt,
        request=schemas.AskRequest(
            id=footage_request.id,
            agency=agency.name,
            jurisdiction=agency.jurisdiction,
            officer=officer.username,
            warrant=warrant_out(footage_request),
            offence=footage_request.offence,
            window_start=footage_request.window_start,
            window_end=footage_request.window_end,
            area=area_out(footage_request),
            state=footage_request.state,
        ),
        recipient=agency.recipient,
    )


def uploaded_clip_ids(connection: Connection, ask_id: str, state: str) -> Sequence[str]:
    """An ask's clips not purged, by clip id."""
    # Only a consented ask can have clips: a pending one (every poll's case) needs no query.
    if state != "consented":
        return ()
    return connection.execute(UPLOADED_CLIPS, {"ask_id": ask_id}).scalars().all()


def _device_ask_out(
    uploaded: Sequence[str],
    *,
    ask_id: str,
    state: str,
    deadline: datetime,
    receipt: str | None,
    request: schemas.AskRequest,
    recipient: str,
) -> schemas.DeviceAskOut:
    """One ask as a device sees it, whether read as ORM objects or as a Core row."""
    return schemas.DeviceAskOut(
        ask_id=ask_id,
        state=state,
        deadline=deadline,
        request=request,
        agency_recipient=recipient,
        clip_ids=list(json.loads(receipt)["clip_ids"]) if receipt else [],
        uploaded_clip_ids=list(uploaded),
    )


def _joined(
    session: Session, *conditions: object
) -> Sequence[tuple[Ask, FootageRequest, Agency, User]]:
    rows = session.execute(
        select(Ask, FootageRequest, Agency, User)
        .join(FootageRequest, FootageRequest.id == Ask.request_id)
        .join(Agency, Agency.id == FootageRequest.agency_id)
        .join(User, User.id == FootageRequest.requester_id)
        .join(Device, Device.id == Ask.device_id)
        .where(*conditions)  # type: ignore[arg-type]
        .order_by(Ask.created_at, Ask.id)
    ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


_DEVICE_ASK_OUT = TypeAdapter(schemas.DeviceAskOut)
_ASKS = cast(Table, Ask.__table__)
_REQUESTS = cast(Table, FootageRequest.__table__)
_AGENCIES = cast(Table, Agency.__table__)
_USERS = cast(Table, User.__table__)
_SHARED = cast(Table, SharedClip.__table__)


def device_ask_columns() -> list[Any]:
    """The columns of an ask as a device sees it, named as `device_ask_json` reads them."""
    a, r, agency, officer = _ASKS.c, _REQUESTS.c, _AGENCIES.c, _USERS.c
    return [
        a.id,
        a.state,
        a.deadline,
        a.delivered_at,
        a.receipt,
        a.request_id,
        r.state.label("request_state"),
        r.warrant_court,
        r.warrant_docket_number,
        r.warrant_judge,
        r.warrant_issued_on,
        r.warrant_expires_on,
        r.warrant_document_sha256,
        r.offence,
        r.window_start,
        r.window_end,
        r.area_lat,
        r.area_lon,
        r.area_radius_m,
        agency.name.label("agency"),
        agency.jurisdiction,
        agency.recipient,
        officer.username.label("officer"),
    ]


def device_ask_joins() -> Join:
    """An ask with its request, the request's agency and its officer."""
    r = _REQUESTS.c
    return (
        _ASKS.join(_REQUESTS, r.id == _ASKS.c.request_id)
        .join(_AGENCIES, _AGENCIES.c.id == r.agency_id)
        .join(_USERS, _USERS.c.id == r.requester_id)
    )


def open_asks_of(device_id: Any) -> ColumnElement[bool]:
    """The asks of `device_id` (a bind or a column) it can still act on."""
    a, r = _ASKS.c, _REQUESTS.c
    # ix_asks_device_id_state serves this: a device has few asks in any state.
    return and_(
        a.device_id == device_id,
        or_(
            and_(a.state == "pending", r.state == "open"),
            and_(a.state == "consented", or_(*(r.state == s for s in LIVE_REQUEST_STATES))),
        ),
    )


def device_asks_query() -> Select[Any]:
    """A device's open asks (the `device_id` bind) as rows, oldest first."""
    return (
        select(*device_ask_columns())
        .select_from(device_ask_joins())
        .where(open_asks_of(bindparam("device_id")))
        .order_by(_ASKS.c.created_at, _ASKS.c.id)
    )


# Built once: building a statement costs more than running it, on the busiest call.
_DEVICE_ASKS = device_asks_query()


def uploaded_clips_of(ask_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The condition on shared_clips for an ask's uploaded clips: shared for it, not purged."""
    return and_(_SHARED.c.ask_id == ask_id, _SHARED.c.purged_at.is_(None))


UPLOADED_CLIPS = (
    select(_SHARED.c.clip_id)
    .where(uploaded_clips_of(bindparam("ask_id")))
    .order_by(_SHARED.c.clip_id)
)
_DELIVER = (
    update(_ASKS)
    .where(_ASKS.c.id == bindparam("ask_id"), _ASKS.c.delivered_at.is_(None))
    .values(delivered_at=bindparam("now"))
)


def device_asks(session: Session, device_id: int, now: datetime) -> bytes:
    """The device's asks it can still act on, as the JSON body of `GET /api/device/asks`.

    The first delivery of each is logged (a read of the warrant details) and made durable
    (`device_service.make_durable`) in the same transaction; later polls are not logged. This is the
    busiest call in the system (every camera, every few seconds), so it reads rows with Core
    in one query rather than loading ORM objects.
    """
    connection = session.connection()
    rows = connection.execute(_DEVICE_ASKS, {"device_id": device_id}).all()
    if not rows:
        return b"[]"
    first_deliveries = [row for row in rows if row.delivered_at is None]
    if first_deliveries:
        device_service.make_durable(session)
    for row in first_deliveries:
        # The condition on delivered_at makes a concurrent first poll log it once, not twice.
        marked = connection.execute(_DELIVER, {"ask_id": row.id, "now": now})
        if marked.rowcount == 1:
            audit.append(
                session,
                f"device:{device_id}",
                "ask:deliver",
                f"ask:{row.id}",
                {"request": row.request_id},
                now=now,
            )
    parts = [device_ask_json(row, uploaded_clip_ids(connection, row.id, row.state)) for row in rows]
    return b"[" + b",".join(parts) + b"]"


def device_ask_json(row: Any, uploaded: Sequence[str]) -> bytes:
    """One ask (a row of `device_asks_query`) as JSON, exactly as `DeviceAskOut` dumps it.

    `uploaded`: its clips not purged, by clip id (only a consented ask has any).
    """
    return _DEVICE_ASK_OUT.dump_json(
        _device_ask_out(
            uploaded,
            ask_id=row.id,
            state=row.state,
            deadline=row.deadline,
            receipt=row.receipt,
            request=schemas.AskRequest(
                id=row.request_id,
                agency=row.agency,
                jurisdiction=row.jurisdiction,
                officer=row.officer,
                warrant=schemas.Warrant(
                    court=row.warrant_court,
                    docket_number=row.warrant_docket_number,
                    judge=row.warrant_judge,
                    issued_on=row.warrant_issued_on,
                    expires_on=row.warrant_expires_on,
                    document_sha256=row.warrant_document_sha256,
                ),
                offence=row.offence,
                window_start=row.window_start,
                window_end=row.window_end,
                area=schemas.Area(lat=row.area_lat, lon=row.area_lon, radius_m=row.area_radius_m),
                state=row.request_state,
            ),
            recipient=row.recipient,
        )
    )


def resident_asks(session: Session, resident: User, now: datetime) -> list[schemas.ResidentAskOut]:
    """Every ask for the resident's own devices, newest first (a logged read)."""
    rows = _joined(session, Device.owner_id == resident.id)
    devices = {
        d.id: d for d in session.scalars(select(Device).where(Device.owner_id == resident.id))
    }
    audit.append(
        session,
        f"user:{resident.id}",
        "ask:list",
        f"user:{resident.id}",
        {"asks": len(rows)},
        now=now,
    )
    result = []
    for ask, footage_request, agency, officer in reversed(rows):
        base = _ask_out(session, ask, footage_request, agency, officer)
        result.append(
            schemas.ResidentAskOut(
                **base.model_dump(),
                device_id=ask.device_id,
                device_name=devices[ask.device_id].name,
                revocable=ask.state == "consented" and ask.first_download_at is None,
            )
        )
    return result


def device_ask(session: Session, device: Device, ask_id: str) -> Ask:
    ask = session.scalar(
        select(Ask).where(Ask.id == ask_id, Ask.device_id == device.id).with_for_update()
    )
    if ask is None:
        raise NotFound("ask not found")
    return ask


def resident_ask(session: Session, resident: User, ask_id: str) -> Ask:
    ask = session.scalar(
        select(Ask)
        .join(Device, Device.id == Ask.device_id)
        .where(Ask.id == ask_id, Device.owner_id == resident.id)
        .with_for_update()
    )
    if ask is None:
        raise NotFound("ask not found")
    return ask


def closed_reason(
    request_state: str, warrant_expires_on: date, deadline: datetime, now: datetime
) -> str | None:
    """Why a pending ask can no longer be consented to (None while it can): its request is
    not open, its deadline has passed, or the warrant behind it has expired."""
    if now >= warrant_end(warrant_expires_on):
        return f"the warrant expired on {warrant_expires_on}; no consent can be given under it"
    if request_state != "open" or now >= deadline:
        return "the request is no longer open for consent"
    return None


def decline(session: Session, ask: Ask, actor: str, now: datetime) -> Ask:
    """Say no (from the device or the resident's account); final."""
    ask_transition(session, ask, "decline", actor, now)
    ask.answered_at = now
    return ask


def consent(session: Session, device: Device, ask_id: str, body: object, now: datetime) -> Ask:
    """Accept a consent receipt signed by the device key; it endorses the per-ask key."""
    ask = device_ask(session, device, ask_id)
    device_key = base64.b64encode(device.public_key).decode("ascii")
    try:
        receipt = verify_receipt(body, device_key)
    except ConsentError as error:
        raise InvalidInput(f"receipt: {error}") from None
    if receipt.ask_id != ask.id or receipt.request_id != str(ask.request_id):
        raise InvalidInput("receipt: the receipt names a different ask or request")
    footage_request = session.get(FootageRequest, ask.request_id)
    assert footage_request is not None
    if ask.state != "pending":
        raise Conflict(f"this ask is already {ask.state}; a consent is given once")
    closed = closed_reason(
        footage_request.state, footage_request.warrant_expires_on, ask.deadline, now
    )
    if closed is not None:
        raise Conflict(closed)
    if session.scalar(select(Ask.id).where(Ask.ask_public_key == receipt.ask_public_key)):
        raise Conflict("receipt: this ask key was already used; make a fresh key per ask")
    ask.receipt = json.dumps(receipt.to_json(), sort_keys=True, separators=(",", ":"))
    ask.device_signature = body["device_signature"]  # type: ignore[index]
    ask.ask_public_key = receipt.ask_public_key
    ask.answered_at = now
    ask_transition(
        session,
        ask,
        "consent",
        f"device:{device.id}",
        now,
        {
            "receipt": receipt.to_json(),
            "device_signature": ask.device_signature,
            "device_key": device_key,
        },
    )
    return ask


def revoke(session: Session, resident: User, ask_id: str, now: datetime) -> list[str]:
    """Withdraw a consent before the requester's first download; returns blob keys to delete."""
    ask = resident_ask(session, resident, ask_id)
    if ask.state == "consented" and ask.first_download_at is not None:
        raise Conflict(
            "the requester has already downloaded this footage; it can no longer be revoked"
        )
    clips = session.scalars(
        select(SharedClip).where(SharedClip.ask_id == ask.id, SharedClip.purged_at.is_(None))
    ).all()
    ask_transition(
        session,
        ask,
        "revoke",
        f"user:{resident.id}",
        now,
        {"purged": [clip.id for clip in clips]},
    )
    ask.revoked_at = now
    for clip in clips:
        clip.purged_at = now
    return [clip.blob_key for clip in clips]
