"""Asks and consents: what a device and its resident see, consent, decline, revoke.

Ownership lives in the queries: a device sees only its own asks, a resident only the asks of
their own devices; anything else is "not found".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.agencies.models import Agency
from app.audit import service as audit
from app.devices.models import Device
from app.errors import Conflict, InvalidInput, NotFound
from app.requests import schemas
from app.requests.models import Ask, FootageRequest, SharedClip
from app.requests.service import area_out, warrant_out
from app.requests.transitions import ask_transition
from porchlight.consent import ConsentError, verify_receipt

LIVE_REQUEST_STATES = ("open", "closed")


def _ask_out(
    session: Session, ask: Ask, footage_request: FootageRequest, agency: Agency, officer: User
) -> schemas.DeviceAskOut:
    # Only a consented ask can have clips: a pending one (every poll's case) needs no query.
    uploaded = (
        session.scalars(
            select(SharedClip.clip_id)
            .where(SharedClip.ask_id == ask.id, SharedClip.purged_at.is_(None))
            .order_by(SharedClip.clip_id)
        ).all()
        if ask.state == "consented"
        else []
    )
    receipt = json.loads(ask.receipt) if ask.receipt else {"clip_ids": []}
    return schemas.DeviceAskOut(
        ask_id=ask.id,
        state=ask.state,
        deadline=ask.deadline,
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
        agency_recipient=agency.recipient,
        clip_ids=list(receipt["clip_ids"]),
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


def device_asks(session: Session, device: Device, now: datetime) -> list[schemas.DeviceAskOut]:
    """The device's asks it can still act on; the first delivery of each is logged (a read of
    the warrant details), later polls are not."""
    rows = _joined(
        session,
        Ask.device_id == device.id,
        or_(
            and_(Ask.state == "pending", FootageRequest.state == "open"),
            and_(Ask.state == "consented", FootageRequest.state.in_(LIVE_REQUEST_STATES)),
        ),
    )
    for ask, _, _, _ in rows:
        if ask.delivered_at is None:
            ask.delivered_at = now
            audit.append(
                session,
                f"device:{device.id}",
                "ask:deliver",
                f"ask:{ask.id}",
                {"request": ask.request_id},
                now=now,
            )
    return [_ask_out(session, *row) for row in rows]


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
    if footage_request.state != "open" or now >= ask.deadline:
        raise Conflict("the request is no longer open for consent")
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
