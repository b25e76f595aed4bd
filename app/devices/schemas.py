"""Device bodies. Locations appear only in the owner's view."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.text import OneLineText


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolmentCodeOut(BaseModel):
    # Shown once; only its hash is stored.
    code: str
    expires_at: datetime


class EnrolIn(Strict):
    code: str = Field(max_length=200)
    # Raw 32-byte Ed25519 public key, standard base64.
    public_key: str = Field(max_length=100)
    # Shown in residents' and admins' pages and beside each ask: no control or formatting
    # characters, as in a requester's text.
    name: OneLineText = Field(default="camera", min_length=1, max_length=100)


class EnrolOut(BaseModel):
    device_id: int
    # The device's bearer credential; shown once. Calls must also be signed with its key.
    credential: str


class LocationIn(Strict):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class DeviceOut(BaseModel):
    """The owner's view of a device."""

    id: int
    name: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None
    # Rounded to about 100 m.
    latitude: float | None
    longitude: float | None


class DeviceAdminOut(BaseModel):
    """What an admin sees: no location."""

    id: int
    owner_id: int
    name: str
    enrolled_at: datetime
    revoked_at: datetime | None


class DeviceSelfOut(BaseModel):
    id: int
    name: str
    located: bool
