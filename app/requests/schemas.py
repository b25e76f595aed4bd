"""Requests, reviews, asks and shared clips on the wire (docs/requests-api.md).

Requester-facing shapes carry nothing about devices, locations, other asks or declines.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from app.text import MultiLineText, OneLineText


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Warrants and footage windows lie within years of today; the years 2000 to 2100 admit any
# real one. The bound keeps every date a day's arithmetic or a time-zone conversion away from
# the ends of Python's range (years 1 and 9999, where `astimezone` or adding a day raises
# OverflowError), and turns a mistyped year (0202, 9999) into a clear 422 naming the field
# before any rule of the service runs.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2100, 12, 31)
_OUT_OF_RANGE = "must be in the years {earliest} to {latest}"


def _in_range(day: date) -> None:
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise PydanticCustomError(
            "date_out_of_range",
            _OUT_OF_RANGE,
            {"earliest": EARLIEST_DATE.year, "latest": LATEST_DATE.year},
        )


def _date_in_range(day: date) -> date:
    _in_range(day)
    return day


def _moment_in_range(moment: datetime) -> datetime:
    # The local date, before any conversion: converting first is what could overflow.
    _in_range(moment.date())
    return moment


WarrantDate = Annotated[date, AfterValidator(_date_in_range)]
WindowMoment = Annotated[AwareDatetime, AfterValidator(_moment_in_range)]


class WarrantIn(Strict):
    court: OneLineText = Field(min_length=1, max_length=200)
    docket_number: OneLineText = Field(min_length=1, max_length=100)
    judge: OneLineText = Field(min_length=1, max_length=200)
    issued_on: WarrantDate
    expires_on: WarrantDate
    document_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AreaIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: int = Field(ge=1)


class RequestIn(Strict):
    warrant: WarrantIn
    offence: MultiLineText = Field(min_length=1, max_length=2000)
    window_start: WindowMoment
    window_end: WindowMoment
    area: AreaIn


class Warrant(BaseModel):
    court: str
    docket_number: str
    judge: str
    issued_on: date
    expires_on: date
    document_sha256: str


class Area(BaseModel):
    lat: float
    lon: float
    radius_m: int


class RequestSummary(BaseModel):
    id: int
    state: str
    offence: str
    window_start: datetime
    window_end: datetime
    created_at: datetime


class RequestOut(RequestSummary):
    agency: str
    jurisdiction: str
    officer: str
    warrant: Warrant
    area: Area
    decided_at: datetime | None
    decision_reason: str | None
    deadline: datetime | None
    closed_at: datetime | None
    access_until: datetime | None


class ReviewIn(Strict):
    decision: Literal["approve", "reject"]
    # The requester, auditors and the public log read it (a textarea on the reviewer's form).
    reason: MultiLineText = Field(min_length=1, max_length=2000)


class AskRequest(BaseModel):
    """What a resident (and their device) sees of the request behind an ask."""

    id: int
    agency: str
    jurisdiction: str
    officer: str
    warrant: Warrant
    offence: str
    window_start: datetime
    window_end: datetime
    area: Area
    state: str


class DeviceAskOut(BaseModel):
    ask_id: str
    state: str
    deadline: datetime
    request: AskRequest
    agency_recipient: str
    clip_ids: list[str]
    uploaded_clip_ids: list[str]


class ResidentAskOut(DeviceAskOut):
    device_id: int
    device_name: str
    revocable: bool


class AskStateOut(BaseModel):
    ask_id: str
    state: str


class UploadOut(BaseModel):
    clip_id: str
    size: int
    ciphertext_sha256: str


class SharedClipOut(BaseModel):
    shared_clip_id: str
    pseudonym: str
    start: datetime
    end: datetime
    size: int
    manifest: dict[str, Any]
    manifest_signature: str
    signer_public_key: str
    downloadable: bool
