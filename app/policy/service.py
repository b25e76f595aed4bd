"""Reading and changing the community policy (the defaults are DESIGN's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.accounts.models import User
from app.audit import service as audit
from app.policy.models import CommunityPolicy

POLICY_ROW = 1


@dataclass(frozen=True)
class Policy:
    max_window_hours: int = 48
    max_radius_m: int = 500
    max_open_per_agency: int = 5
    ask_deadline_days: int = 7
    access_window_days: int = 30
    reviewers_required: int = 1
    max_clip_bytes: int = 2 * 1024**3


DEFAULTS = Policy()


def current(session: Session) -> Policy:
    """The policy in force: the stored row, or the defaults when none was ever set."""
    row = session.get(CommunityPolicy, POLICY_ROW)
    if row is None:
        return DEFAULTS
    return Policy(**{name: getattr(row, name) for name in asdict(DEFAULTS)})


def update(session: Session, by: User, policy: Policy, now: datetime) -> Policy:
    """Replace the policy; the log records the old and new values."""
    before = current(session)
    row = session.get(CommunityPolicy, POLICY_ROW, with_for_update=True)
    if row is None:
        row = CommunityPolicy(id=POLICY_ROW, updated_at=now, **asdict(policy))
        session.add(row)
    else:
        for name, value in asdict(policy).items():
            setattr(row, name, value)
        row.updated_at = now
    session.flush()
    audit.append(
        session,
        f"user:{by.id}",
        "policy:update",
        "policy:community",
        {"before": dict(asdict(before)), "after": dict(asdict(policy))},
        now=now,
    )
    return policy
