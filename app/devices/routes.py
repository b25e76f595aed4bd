"""JSON API for devices: own devices, admin revocation, enrolment, signed device calls."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from app.accounts.models import User
from app.deps import NowDep, RowId, SessionDep, SettingsDep, make_router, require
from app.devices import schemas
from app.devices import service as devices
from app.devices.location import to_degrees
from app.devices.models import Device

router = make_router(prefix="/api", tags=["devices"])


async def signed_device(
    request: Request, session: SessionDep, settings: SettingsDep, now: NowDep
) -> Device:
    """Dependency for device routes: the device whose signed, fresh, unreplayed call this is."""
    body = await request.body()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return await run_in_threadpool(
        devices.authenticate_call,
        session,
        settings,
        request.headers,
        request.method,
        path,
        body,
        now,
    )


DeviceDep = Annotated[Device, Depends(signed_device)]


def device_out(device: Device) -> schemas.DeviceOut:
    return schemas.DeviceOut(
        id=device.id,
        name=device.name,
        enrolled_at=device.enrolled_at,
        last_seen_at=device.last_seen_at,
        revoked_at=device.revoked_at,
        latitude=to_degrees(device.lat_milli),
        longitude=to_degrees(device.lon_milli),
    )


@router.post("/devices/enrolment-codes", response_model=schemas.EnrolmentCodeOut, status_code=201)
def create_enrolment_code(
    user: Annotated[User, Depends(require("device:own"))],
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> schemas.EnrolmentCodeOut:
    """A one-time code to enrol a new camera (shown once)."""
    row, code = devices.create_enrolment_code(session, user, settings, now)
    return schemas.EnrolmentCodeOut(code=code, expires_at=row.expires_at)


@router.post("/devices/enroll", response_model=schemas.EnrolOut, status_code=201)
def enrol(body: schemas.EnrolIn, session: SessionDep, now: NowDep) -> schemas.EnrolOut:
    """Called by the device: register its Ed25519 key with an enrolment code."""
    device, credential = devices.enrol(session, body.code, body.public_key, body.name, now)
    return schemas.EnrolOut(device_id=device.id, credential=credential)


@router.get("/devices", response_model=list[schemas.DeviceOut])
def list_own_devices(
    user: Annotated[User, Depends(require("device:own"))], session: SessionDep
) -> list[schemas.DeviceOut]:
    """One's own devices."""
    return [device_out(d) for d in devices.own_devices(session, user)]


@router.put("/devices/{device_id}/location", response_model=schemas.DeviceOut)
def set_location(
    device_id: RowId,
    body: schemas.LocationIn,
    user: Annotated[User, Depends(require("device:own"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.DeviceOut:
    """Set one's device's location (stored rounded to about 100 m)."""
    return device_out(
        devices.set_location(session, user, device_id, body.latitude, body.longitude, now)
    )


@router.post("/devices/{device_id}/revoke", response_model=schemas.DeviceOut)
def revoke_own_device(
    device_id: RowId,
    user: Annotated[User, Depends(require("device:own"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.DeviceOut:
    """Revoke one's own device."""
    return device_out(
        devices.revoke(session, user, devices.own_device(session, user, device_id), now)
    )


def admin_out(device: Device) -> schemas.DeviceAdminOut:
    return schemas.DeviceAdminOut(
        id=device.id,
        owner_id=device.owner_id,
        name=device.name,
        enrolled_at=device.enrolled_at,
        revoked_at=device.revoked_at,
    )


@router.get("/admin/devices", response_model=list[schemas.DeviceAdminOut])
def list_all_devices(
    _: Annotated[User, Depends(require("device:admin"))], session: SessionDep
) -> list[schemas.DeviceAdminOut]:
    """Every device, without locations."""
    return [admin_out(d) for d in devices.all_devices(session)]


@router.post("/admin/devices/{device_id}/revoke", response_model=schemas.DeviceAdminOut)
def admin_revoke_device(
    device_id: RowId,
    user: Annotated[User, Depends(require("device:admin"))],
    session: SessionDep,
    now: NowDep,
) -> schemas.DeviceAdminOut:
    """Revoke any device (a lost or compromised camera)."""
    return admin_out(devices.revoke(session, user, devices.get_device(session, device_id), now))


@router.get("/device/self", response_model=schemas.DeviceSelfOut)
def device_self(device: DeviceDep) -> schemas.DeviceSelfOut:
    """Called by the device (signed): who the server thinks it is."""
    return schemas.DeviceSelfOut(
        id=device.id, name=device.name, located=device.lat_milli is not None
    )
