"""A warrant authorises nothing after its expiry day (DESIGN promise 2): no approval, no ask
open past it, no consent under it. Checked at review and at consent, not only at submission."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import update

from app.permissions import Role
from app.requests.models import Ask
from app.scheduler import run_once
from tests.server.factories import Clock, Community
from tests.server.requests.helpers import make_world, utc
from tests.server.requests.test_lifecycle import _log_actions


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


def expiring(day: date) -> dict[str, Any]:
    """Request changes for a warrant that expires at the end of `day`."""
    return {"warrant.expires_on": day.isoformat()}


def test_an_expired_warrant_cannot_be_approved_only_rejected(
    community: Community, clock: Clock
) -> None:
    world = make_world(community)
    world.located_device(community.person(Role.resident), 20, 10)
    created = world.submit(**expiring(community.now().date()))
    clock.advance(days=5)

    before = community.counts()
    refused = world.review(created["id"])
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    assert "warrant expired on" in message and "reject it" in message
    # Nothing happened: no review recorded, no ask, no log entry; the request awaits a decision.
    assert community.counts() == before
    auditor = community.auth(community.person(Role.auditor))
    record = community.client.get(f"/api/requests/{created['id']}", headers=auditor).json()
    assert record["state"] == "submitted"

    rejected = world.review(created["id"], "reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"
    assert "request:approve" not in _log_actions(community)


def test_asks_close_when_the_warrant_expires_and_consent_is_refused_after(
    community: Community, clock: Clock
) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 20, 10)
    expires_on = community.now().date()
    opened = world.open_request(**expiring(expires_on))
    # The policy gives 7 days; the warrant's last day ends sooner, and the asks with it.
    assert utc(opened["deadline"]) == _end_of(expires_on)
    ask = world.device_asks(device)[0]
    assert utc(ask["deadline"]) == _end_of(expires_on)

    clock.advance(seconds=(_end_of(expires_on) - community.now()).total_seconds() + 60)
    # An ask made before its deadline was bounded (or any ask) still refuses consent once the
    # warrant has expired.
    with community.session() as session:
        session.execute(
            update(Ask)
            .where(Ask.id == ask["ask_id"])
            .values(deadline=community.now() + timedelta(days=6))
        )
    before = community.counts()
    refused = world.consent(device, ask["ask_id"], opened["id"], ["clip-1"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["message"] == (
        f"the warrant expired on {expires_on}; no consent can be given under it"
    )
    after = community.counts()
    # The refused call burned its nonce (a replay guard) and changed nothing else; checkpoints
    # are published on a timer.
    for table in ("device_nonces", "log_checkpoints"):
        before.pop(table), after.pop(table)
    assert after == before
    assert "ask:consent" not in _log_actions(community)


def test_the_scheduler_closes_a_request_when_its_warrant_expires(
    community: Community, clock: Clock
) -> None:
    world = make_world(community)
    world.located_device(community.person(Role.resident), 20, 10)
    expires_on = community.now().date() + timedelta(days=2)
    opened = world.open_request(**expiring(expires_on))
    assert utc(opened["deadline"]) == _end_of(expires_on)
    clock.advance(seconds=(_end_of(expires_on) - community.now()).total_seconds())
    report = run_once(
        community.app.state.sessionmaker, community.app.state.clip_store, community.now()
    )
    assert report.asks_expired == 1 and report.requests_closed == 1
