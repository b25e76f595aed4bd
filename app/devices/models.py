"""Devices, one-time enrolment codes, and the nonces that make device calls replay-safe."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Coarse location only (about 100 m): degrees scaled by 1000 and rounded. Never shown to
    # requesters; exact coordinates are never stored.
    lat_milli: Mapped[int | None]
    lon_milli: Mapped[int | None]
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EnrolmentCode(Base):
    __tablename__ = "enrolment_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))


class DeviceNonce(Base):
    """A nonce seen from a device; the primary key rejects a second use within the window."""

    __tablename__ = "device_nonces"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
