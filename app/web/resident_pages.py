"""Resident pages: my devices (status, last seen, location, enrol, revoke), my asks, history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy import select

from app.accounts.models import User
from app.clipstore import ClipStore
from app.deps import NowDep, PrincipalDep, RowId, SessionDep, SettingsDep, require
from app.devices import service as devices
from app.devices.location import to_degrees
from app.devices.models import Device
from app.errors import AppError
from app.requests import asks as ask_service
from app.requests.models import SharedClip
from app.requests.schemas import ResidentAskOut
from app.web.render import attempt, page_router, public_url, render, see_other

router = page_router(prefix="/resident", tags=["pages"])

Resident = Annotated[User, Depends(require("device:own"))]

DONE = {
    "located": "Location saved (rounded to about 100 m).",
    "revoked": "Device revoked: it can no longer talk to the server.",
}


def _devices_page(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    *,
    enrolment_code: str | None = None,
    errors: dict[int, dict[str, str]] | None = None,
    values: dict[int, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    rows = devices.own_devices(session, principal.user)
    return render(
        request,
        "resident/devices.html",
        {
            "title": "My devices",
            "devices": [
                {
                    "device": d,
                    "latitude": to_degrees(d.lat_milli),
                    "longitude": to_degrees(d.lon_milli),
                }
                for d in rows
            ],
            "enrolment_code": enrolment_code,
            "server_url": public_url(request),
            "errors": errors or {},
            "values": values or {},
            "done": DONE.get(request.query_params.get("done", "")),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("/devices")
def devices_page(
    request: Request, _: Resident, principal: PrincipalDep, session: SessionDep
) -> Response:
    """The resident's cameras."""
    return _devices_page(request, principal, session)


@router.post("/devices/enrolment-code")
def create_enrolment_code(
    request: Request,
    user: Resident,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> Response:
    """Create a one-time enrolment code and show it once."""
    _, code = devices.create_enrolment_code(session, user, settings, now)
    return _devices_page(request, principal, session, enrolment_code=code)


def _coordinate(raw: str, name: str, limit: float) -> float | str:
    try:
        value = float(raw.strip())
    except ValueError:
        return f"{name} must be a number in decimal degrees, like 51.5072"
    if not -limit <= value <= limit:
        return f"{name} must be between -{limit:g} and {limit:g}"
    return value


@router.post("/devices/{device_id}/location")
def set_location(
    request: Request,
    device_id: RowId,
    user: Resident,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    latitude: Annotated[str, Form()] = "",
    longitude: Annotated[str, Form()] = "",
) -> Response:
    """Set a device's location from typed coordinates (stored rounded to about 100 m)."""
    lat = _coordinate(latitude, "Latitude", 90)
    lon = _coordinate(longitude, "Longitude", 180)
    problems = {
        name: value
        for name, value in (("latitude", lat), ("longitude", lon))
        if isinstance(value, str)
    }
    if not problems:
        assert isinstance(lat, float) and isinstance(lon, float)
        outcome = attempt(
            session, lambda: devices.set_location(session, user, device_id, lat, lon, now)
        )
        if not isinstance(outcome, AppError):
            return see_other("/resident/devices?done=located")
        problems = {"": outcome.message}
    return _devices_page(
        request,
        principal,
        session,
        errors={device_id: problems},
        values={device_id: {"latitude": latitude, "longitude": longitude}},
        status_code=422,
    )


@router.post("/devices/{device_id}/revoke")
def revoke_device(device_id: RowId, user: Resident, session: SessionDep, now: NowDep) -> Response:
    """Revoke one of one's own devices."""
    device: Device = devices.own_device(session, user, device_id)
    devices.revoke(session, user, device, now)
    return see_other("/resident/devices?done=revoked")


Answerer = Annotated[User, Depends(require("ask:answer"))]

ASK_DONE = {
    "declined": "You said no. The requester is not told who was asked or who said no.",
    "revoked": "Consent withdrawn: the shared clips were deleted from the server.",
}
# What a resident is told about each ask state, in plain words.
ASK_STATES = {
    "pending": "Waiting for your answer (not answering means no)",
    "closed": "Closed before you answered: nothing was shared and no answer is needed",
    "consented": "You shared clips",
    "declined": "You said no",
    "expired": "Not answered in time: treated as no",
    "revoked": "You withdrew your consent",
}


def _shared_by_ask(session: SessionDep, ask_ids: list[str]) -> dict[str, list[SharedClip]]:
    # The clips this resident shared per ask (purged ones included, to show what happened).
    rows = session.scalars(
        select(SharedClip).where(SharedClip.ask_id.in_(ask_ids)).order_by(SharedClip.start)
    ).all()
    grouped: dict[str, list[SharedClip]] = {}
    for clip in rows:
        grouped.setdefault(clip.ask_id, []).append(clip)
    return grouped


def _shown_state(ask: ResidentAskOut, now: datetime) -> str:
    """The ask's state as the resident is told it: a pending ask that can no longer be
    answered (the requester closed the request, its deadline passed or its warrant expired,
    and the scheduler has not yet marked it expired) is "closed", so no one is told to answer
    what would be refused."""
    if ask.state == "pending":
        closed = ask_service.closed_reason(
            ask.request.state, ask.request.warrant.expires_on, ask.deadline, now
        )
        if closed is not None:
            return "closed"
    return ask.state


def _asks_context(session: SessionDep, user: User, now: datetime) -> dict[str, object]:
    all_asks = ask_service.resident_asks(session, user, now)
    shared = _shared_by_ask(session, [a.ask_id for a in all_asks])
    return {
        "asks": all_asks,
        "shared": shared,
        "ask_states": ASK_STATES,
        "shown": {a.ask_id: _shown_state(a, now) for a in all_asks},
    }


@router.get("/asks")
def asks_page(
    request: Request, user: Answerer, principal: PrincipalDep, session: SessionDep, now: NowDep
) -> Response:
    """Asks for my devices that still need or allow an action: the whole request is shown."""
    context = _asks_context(session, user, now)
    asks = context["asks"]
    assert isinstance(asks, list)
    context["asks"] = [a for a in asks if a.state == "pending" or a.revocable]
    return render(
        request,
        "resident/asks.html",
        {"title": "My asks", "done": ASK_DONE.get(request.query_params.get("done", "")), **context},
        principal=principal,
    )


@router.get("/history")
def history_page(
    request: Request, user: Answerer, principal: PrincipalDep, session: SessionDep, now: NowDep
) -> Response:
    """Every request that ever reached my devices, and what I shared."""
    return render(
        request,
        "resident/history.html",
        {"title": "History", **_asks_context(session, user, now)},
        principal=principal,
    )


@router.post("/asks/{ask_id}/decline")
def decline_ask(ask_id: str, user: Answerer, session: SessionDep, now: NowDep) -> Response:
    """Say no to an ask."""
    ask_service.decline(
        session, ask_service.resident_ask(session, user, ask_id), f"user:{user.id}", now
    )
    return see_other("/resident/asks?done=declined")


@router.post("/asks/{ask_id}/revoke")
def revoke_consent(
    request: Request,
    ask_id: str,
    user: Answerer,
    session: SessionDep,
    background: BackgroundTasks,
    now: NowDep,
) -> Response:
    """Withdraw a consent before the requester's first download; the blobs are deleted."""
    keys = ask_service.revoke(session, user, ask_id, now)
    store: ClipStore = request.app.state.clip_store
    # After the commit, as the API route does; purged clips are never served meanwhile.
    for key in keys:
        background.add_task(store.delete, key)
    response = see_other("/resident/asks?done=revoked")
    response.background = background
    return response
