"""Agency bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.text import OneLineText


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Shown to residents beside every ask (web pages, and the Pi's terminal): no control or
    # formatting characters, as in a requester's text.
    name: OneLineText = Field(min_length=2, max_length=200)
    jurisdiction: OneLineText = Field(min_length=2, max_length=200)
    recipient: str = Field(min_length=10, max_length=8000)


class AgencyOut(BaseModel):
    id: int
    name: str
    jurisdiction: str
    recipient: str
    # True for an mlkem768x25519 (age1pq1...) recipient.
    post_quantum: bool
    created_at: datetime
