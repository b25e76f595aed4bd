"""Devices: enrolment codes, enrolment, location, revocation, and checking signed device calls."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import tokens
from app.accounts.models import User
from app.audit import service as audit
from app.devices.location import coarsen
from app.devices.models import Device, DeviceNonce, EnrolmentCode
from app.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from app.settings import Settings
from porchlight.client import (
    DEVICE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    device_signing_message,
)

_NONCE = re.compile(r"^[0-9a-f]{32}$")


def create_enrolment_code(
    session: Session, owner: User, settings: Settings, now: datetime
) -> tuple[EnrolmentCode, str]:
    """A one-time code the resident types into `porchlight device enroll`."""
    code = tokens.new_secret("enr")
    row = EnrolmentCode(
        code_hash=tokens.digest(code),
        owner_id=owner.id,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.enrolment_code_minutes),
    )
    session.add(row)
    session.flush()
    audit.append(
        session, f"user:{owner.id}", "enrolment:create", f"enrolment:{row.id}", {}, now=now
    )
    return row, code


def _public_key(encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("public_key must be standard base64") from None
    if len(raw) != 32:
        raise InvalidInput("public_key must be a raw 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidInput("public_key is not a valid Ed25519 key") from None
    return raw


def enrol(
    session: Session, code: str, public_key_b64: str, name: str, now: datetime
) -> tuple[Device, str]:
    """Use an enrolment code: register the device key, return the device and its credential."""
    public_key = _public_key(public_key_b64)
    row = session.scalar(
        select(EnrolmentCode)
        .where(EnrolmentCode.code_hash == tokens.digest(code))
        .with_for_update()  # single use even under concurrent enrolments
    )
    if row is None:
        raise NotFound("enrolment code not recognised")
    if row.used_at is not None:
        raise Conflict("enrolment code has already been used")
    if row.expires_at <= now:
        raise Conflict("enrolment code has expired; create a new one")
    if session.scalar(select(Device.id).where(Device.public_key == public_key)) is not None:
        raise Conflict("this device key is already enrolled")
    credential = tokens.new_secret("dev")
    device = Device(
        owner_id=row.owner_id,
        name=name,
        public_key=public_key,
        credential_hash=tokens.digest(credential),
        enrolled_at=now,
    )
    session.add(device)
    session.flush()
    row.used_at = now
    row.device_id = device.id
    audit.append(
        session,
        f"device:{device.id}",
        "device:enrol",
        f"device:{device.id}",
        {
            "owner": f"user:{row.owner_id}",
            "enrolment": row.id,
            "public_key": base64.b64encode(public_key).decode("ascii"),
        },
        now=now,
    )
    return device, credential


def own_devices(session: Session, owner: User) -> Sequence[Device]:
    return session.scalars(
        select(Device).where(Device.owner_id == owner.id).order_by(Device.id)
    ).all()


def all_devices(session: Session) -> Sequence[Device]:
    return session.scalars(select(Device).order_by(Device.id)).all()


def own_device(session: Session, owner: User, device_id: int) -> Device:
    # Ownership in the query: someone else's device is "not found", not "forbidden".
    device = session.scalar(
        select(Device).where(Device.id == device_id, Device.owner_id == owner.id)
    )
    if device is None:
        raise NotFound(f"device {device_id} not found")
    return device


def set_location(
    session: Session,
    owner: User,
    device_id: int,
    latitude: float,
    longitude: float,
    now: datetime,
) -> Device:
    """Store the device's location rounded to about 100 m (the log records only that it moved)."""
    device = own_device(session, owner, device_id)
    if device.revoked_at is not None:
        raise Conflict(f"device {device_id} is revoked")
    device.lat_milli, device.lon_milli = coarsen(latitude, longitude)
    audit.append(session, f"user:{owner.id}", "device:locate", f"device:{device.id}", {}, now=now)
    return device


def revoke(session: Session, by: User, device: Device, now: datetime) -> Device:
    """Revoke a device: its credential stops working at once."""
    if device.revoked_at is not None:
        raise Conflict(f"device {device.id} is already revoked")
    device.revoked_at = now
    audit.append(session, f"user:{by.id}", "device:revoke", f"device:{device.id}", {}, now=now)
    return device


def get_device(session: Session, device_id: int) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found")
    return device


_REFUSED = "device call not authenticated"


def authenticate_call(
    session: Session,
    settings: Settings,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    *,
    body_sha256: str | None = None,
) -> Device:
    """Check a signed device call (see porchlight.client) and burn its nonce.

    A route that streams a large body to disk passes `body=b""` and the hex `body_sha256` it
    computed while streaming, instead of holding the body in memory.

    Every failure but a replay or a stale clock gets the same message, so a caller learns
    nothing about which part was wrong.
    """
    # Header names are case-insensitive in HTTP; compare them in lower case.
    lowered = {name.lower(): value for name, value in headers.items()}

    def header(name: str) -> str:
        return lowered.get(name.lower(), "")

    scheme, _, credential = header("authorization").partition(" ")
    device_id, stamp = header(DEVICE_HEADER), header(TIMESTAMP_HEADER)
    nonce, signature_b64 = header(NONCE_HEADER), header(SIGNATURE_HEADER)
    if (
        scheme != "Device"
        or not device_id.isdigit()
        or not stamp.isdigit()
        or not _NONCE.match(nonce)
    ):
        raise NotAuthenticated(_REFUSED)
    device = session.get(Device, int(device_id))
    if (
        device is None
        or device.revoked_at is not None
        or device.credential_hash != tokens.digest(credential)
    ):
        raise NotAuthenticated(_REFUSED)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(device.public_key).verify(
            signature,
            device_signing_message(method, path, stamp, nonce, body, body_sha256=body_sha256),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise NotAuthenticated(_REFUSED) from None
    sent_at = datetime.fromtimestamp(int(stamp), UTC)
    skew = timedelta(seconds=settings.device_clock_skew_seconds)
    if abs(sent_at - now) > skew:
        raise NotAuthenticated("device clock is off or the call is stale; check the device time")
    # Nonces older than twice the skew can no longer pass the timestamp check: forget them.
    session.execute(
        delete(DeviceNonce).where(
            DeviceNonce.device_id == device.id, DeviceNonce.seen_at < now - 2 * skew
        )
    )
    if session.get(DeviceNonce, (device.id, nonce)) is not None:
        raise NotAuthenticated("replayed device call refused")
    try:
        with session.begin_nested():
            session.add(DeviceNonce(device_id=device.id, nonce=nonce, seen_at=now))
    except IntegrityError:
        raise NotAuthenticated("replayed device call refused") from None
    # Operational metadata for the owner's device list; not a log-worthy change.
    device.last_seen_at = now
    return device
