"""Resident pages: my devices (status, last seen, coarse location, enrol, revoke)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import Response

from app.accounts.models import User
from app.deps import NowDep, PrincipalDep, SessionDep, SettingsDep, require
from app.devices import service as devices
from app.devices.location import to_degrees
from app.devices.models import Device
from app.errors import AppError
from app.web.render import attempt, page_router, render, see_other

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
    device_id: int,
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
def revoke_device(device_id: int, user: Resident, session: SessionDep, now: NowDep) -> Response:
    """Revoke one of one's own devices."""
    device: Device = devices.own_device(session, user, device_id)
    devices.revoke(session, user, device, now)
    return see_other("/resident/devices?done=revoked")
