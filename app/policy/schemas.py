"""Policy on the wire: every field bounded so a typo cannot switch protection off."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_window_hours: int = Field(ge=1, le=24 * 31)
    max_radius_m: int = Field(ge=10, le=50_000)
    max_open_per_agency: int = Field(ge=1, le=1000)
    ask_deadline_days: int = Field(ge=1, le=90)
    access_window_days: int = Field(ge=1, le=365)
    reviewers_required: int = Field(ge=1, le=2)
    max_clip_bytes: int = Field(ge=1024, le=16 * 1024**3)


class PolicyOut(PolicyIn):
    pass
