"""The community's one policy row (absent until an admin first changes it: defaults apply)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class CommunityPolicy(Base):
    __tablename__ = "community_policy"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    max_window_hours: Mapped[int]
    max_radius_m: Mapped[int]
    max_open_per_agency: Mapped[int]
    ask_deadline_days: Mapped[int]
    access_window_days: Mapped[int]
    reviewers_required: Mapped[int]
    max_clip_bytes: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
