"""Agency bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=2, max_length=200)
    jurisdiction: str = Field(min_length=2, max_length=200)
    recipient: str = Field(min_length=10, max_length=8000)


class AgencyOut(BaseModel):
    id: int
    name: str
    jurisdiction: str
    recipient: str
    # True for an mlkem768x25519 (age1pq1...) recipient.
    post_quantum: bool
    created_at: datetime
