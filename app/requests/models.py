"""Requests, reviews, asks and shared clips.

Ask and shared-clip ids are random (not sequential) so an id a resident or requester sees
says nothing about how many others exist.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class FootageRequest(Base):
    __tablename__ = "footage_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The structured warrant reference (DESIGN "Submitted").
    warrant_court: Mapped[str] = mapped_column(String(200))
    warrant_docket_number: Mapped[str] = mapped_column(String(100))
    warrant_judge: Mapped[str] = mapped_column(String(200))
    warrant_issued_on: Mapped[date] = mapped_column(Date)
    warrant_expires_on: Mapped[date] = mapped_column(Date)
    warrant_document_sha256: Mapped[str] = mapped_column(String(64))
    offence: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    area_lat: Mapped[float] = mapped_column(Float)
    area_lon: Mapped[float] = mapped_column(Float)
    area_radius_m: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_reason: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Asks unanswered at the deadline are declined; the request closes then at the latest.
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Shared clips are purged at the end of the access window (counted from closing).
    access_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RequestReview(Base):
    __tablename__ = "request_reviews"
    __table_args__ = (UniqueConstraint("request_id", "reviewer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("footage_requests.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Ask(Base):
    __tablename__ = "asks"
    __table_args__ = (
        UniqueConstraint("request_id", "device_id"),
        Index("ix_asks_device_id_state", "device_id", "state"),
        Index("ix_asks_state_deadline", "state", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("footage_requests.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    # First time the device fetched the ask (its warrant details): logged once.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The consent receipt (canonical JSON), the device key's signature over it, and the
    # per-ask key it endorses; unique so a key can never link two asks.
    receipt: Mapped[str | None] = mapped_column(Text)
    device_signature: Mapped[str | None] = mapped_column(String(88))
    ask_public_key: Mapped[str | None] = mapped_column(String(44), unique=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The requester's first download of any of this ask's clips ends revocability.
    first_download_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SharedClip(Base):
    __tablename__ = "shared_clips"
    __table_args__ = (UniqueConstraint("ask_id", "clip_id"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    ask_id: Mapped[str] = mapped_column(ForeignKey("asks.id"), index=True)
    clip_id: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(140), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    # The signed manifest document (signed by the ask key), as uploaded.
    manifest: Mapped[str] = mapped_column(Text)
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Purged (revoked or access window over): never served again; blob_deleted_at once the
    # bytes are gone from the clip store (deleted after the purge commits).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    blob_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
