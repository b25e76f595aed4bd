"""Devices: enrolment codes, enrolment, location, revocation, and checking signed device calls."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Insert, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app import tokens
from app.accounts.models import User
from app.audit import service as audit
from app.db import MAX_ROW_ID
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
_DEVICE, _TIMESTAMP = DEVICE_HEADER.lower(), TIMESTAMP_HEADER.lower()
_NONCE_NAME, _SIGNATURE = NONCE_HEADER.lower(), SIGNATURE_HEADER.lower()
# Core tables for the signed-call path, which loads no ORM objects.
_DEVICES = cast(Table, Device.__table__)
_NONCES = cast(Table, DeviceNonce.__table__)


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
# last_seen_at is operational metadata for the owner's device list: refreshing it at most once
# a minute keeps a steadily polling device from rewriting its row on every poll.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


class CheckedCall(NamedTuple):
    """The device a signed call came from (a Core row: the poll path loads no ORM object)."""

    id: int
    public_key: bytes


@lru_cache(maxsize=16384)
def verifier(public_key: bytes) -> Ed25519PublicKey:
    # Parsing the key is a measurable share of a poll; the raw bytes name the key exactly.
    return Ed25519PublicKey.from_public_bytes(public_key)


# The signed-call statements, built once: building a statement costs more than running it.
_CALLER = select(
    _DEVICES.c.public_key,
    _DEVICES.c.credential_hash,
    _DEVICES.c.revoked_at,
    _DEVICES.c.last_seen_at,
).where(_DEVICES.c.id == bindparam("device_id"))
# PostgreSQL only, in the same round trip: this transaction's commit will not wait for the
# write-ahead log to reach the disk (see make_durable for why a poll may do this).
_CALLER_NO_WAIT = _CALLER.add_columns(func.set_config("synchronous_commit", "off", True))
_DURABLE_AGAIN = select(func.set_config("synchronous_commit", "on", True))
_BURN_NONCE: dict[str, Insert] = {
    dialect: insert(_NONCES).on_conflict_do_nothing().returning(_NONCES.c.nonce)
    for dialect, insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}
_TOUCH = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("device_id"))
    .values(last_seen_at=bindparam("seen"))
)


def device_number(text: str) -> int | None:
    """The device id a call's header names, or None where it can name no device (anything but
    ASCII digits, or past the largest row id, which the database could not even compare)."""
    # isdecimal() alone admits other scripts' digits, which int() may refuse or misread; ten
    # digits bound the work before the comparison.
    if not (text.isascii() and text.isdecimal() and len(text) <= 10):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ROW_ID else None


def check_call(
    session: Session,
    settings: Settings,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    *,
    body_sha256: str | None = None,
    durable: bool = True,
) -> CheckedCall:
    """Check a signed device call (see porchlight.client) and burn its nonce.

    A route that streams a large body to disk passes `body=b""` and the hex `body_sha256` it
    computed while streaming, instead of holding the body in memory.

    Every failure but a replay or a stale clock gets the same message, so a caller learns
    nothing about which part was wrong. On failure the caller rolls back, so a refused call
    burns no nonce and touches no row.

    `durable=False` (PostgreSQL only; see `make_durable`) lets the transaction commit without
    waiting for the write-ahead log to reach the disk. Only a call that changes nothing but
    the nonce bookkeeping may ask for it: the steady device poll.
    """
    # Header names are case-insensitive in HTTP; compare them in lower case.
    lowered = {name.lower(): value for name, value in headers.items()}
    scheme, _, credential = lowered.get("authorization", "").partition(" ")
    device_id = lowered.get(_DEVICE, "")
    stamp = lowered.get(_TIMESTAMP, "")
    nonce = lowered.get(_NONCE_NAME, "")
    signature_b64 = lowered.get(_SIGNATURE, "")
    if (
        scheme != "Device"
        or device_number(device_id) is None
        # A Unix time in seconds: more than 12 digits is past the year 33658, which no clock
        # within the allowed skew can send (and which datetime cannot hold).
        or not (stamp.isascii() and stamp.isdecimal() and len(stamp) <= 12)
        or not _NONCE.match(nonce)
    ):
        raise NotAuthenticated(_REFUSED)
    connection = session.connection()
    dialect = connection.dialect.name
    caller = _CALLER if durable or dialect != "postgresql" else _CALLER_NO_WAIT
    row = connection.execute(caller, {"device_id": int(device_id)}).first()
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.credential_hash, tokens.digest(credential))
    ):
        raise NotAuthenticated(_REFUSED)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        verifier(row.public_key).verify(
            signature,
            device_signing_message(method, path, stamp, nonce, body, body_sha256=body_sha256),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise NotAuthenticated(_REFUSED) from None
    sent_at = datetime.fromtimestamp(int(stamp), UTC)
    if abs(sent_at - now) > timedelta(seconds=settings.device_clock_skew_seconds):
        raise NotAuthenticated("device clock is off or the call is stale; check the device time")
    # The primary key (device_id, nonce) refuses a second use; ON CONFLICT turns that into "no
    # row returned" instead of an error, so no savepoint is needed. Two processes inserting
    # the same nonce at once: the second waits for the first to commit, then gets no row.
    # Nonces older than twice the skew can no longer pass the timestamp check; the scheduler
    # forgets them (app/scheduler.py), not every call.
    burned = connection.execute(
        _BURN_NONCE[dialect], {"device_id": int(device_id), "nonce": nonce, "seen_at": now}
    )
    if burned.first() is None:
        raise NotAuthenticated("replayed device call refused")
    if row.last_seen_at is None or now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
        connection.execute(_TOUCH, {"device_id": int(device_id), "seen": now})
    return CheckedCall(int(device_id), row.public_key)


def make_durable(session: Session) -> None:
    """Undo `check_call(durable=False)`: this transaction's commit waits for the disk again.

    Why a poll may skip the wait: a steady poll changes no state; it writes only its nonce
    (and at most once a minute the device's last_seen_at). If PostgreSQL crashes within the
    fraction of a second before the write-ahead log reaches the disk, those rows are lost and
    nothing else: no log entry, no ask, no consent is ever committed this way, because
    anything that changes state calls this first (a poll that delivers an ask for the first
    time writes an `ask:deliver` log entry in the same transaction). The lost nonce means a
    copy of that one poll, captured on the wire, could be replayed until its timestamp leaves
    the skew window (device_clock_skew_seconds); a replayed poll is still a valid signature by
    the device's key over that exact request, it changes nothing the device's own next poll
    would not, and it returns what any poll by that device returns, to a party that would have
    had to break TLS to capture it.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_DURABLE_AGAIN)


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
    """`check_call` (durable), returning the device as an ORM object for routes that use it."""
    checked = check_call(
        session, settings, headers, method, path, body, now, body_sha256=body_sha256
    )
    device = session.get(Device, checked.id)
    assert device is not None  # check_call just read it in this transaction
    return device


def forget_nonces(session: Session, seen_before: datetime) -> int:
    """Delete nonces seen before `seen_before`; the scheduler passes now - 2 x the clock skew,
    past which a call's timestamp check refuses it anyway, so forgetting it reopens nothing."""
    result = session.connection().execute(delete(_NONCES).where(_NONCES.c.seen_at < seen_before))
    return int(result.rowcount)
