"""Deadlines and retention: silence becomes "declined", requests close at their deadline,
blobs go at the end of the access window; runs are idempotent (app/scheduler.py)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from app.audit.models import LogEntry
from app.permissions import Role
from app.requests.models import Ask
from app.scheduler import Scheduler, run_once
from tests.server.factories import Clock, Community
from tests.server.requests.helpers import make_world


def _count(community: Community, action: str) -> int:
    with community.session() as session:
        return (
            session.scalar(
                select(func.count()).select_from(LogEntry).where(LogEntry.action == action)
            )
            or 0
        )


def test_deadline_expires_silent_asks_and_closes(community: Community, clock: Clock) -> None:
    world = make_world(community)
    talker = world.located_device(community.person(Role.resident), 10, 10)
    silent = world.located_device(community.person(Role.resident), 20, 20)
    opened = world.open_request()
    talker_ask = world.device_asks(talker)[0]["ask_id"]
    silent_ask = world.device_asks(silent)[0]["ask_id"]
    assert world.consent(talker, talker_ask, opened["id"], ["clip-1"]).status_code == 200
    assert world.upload(talker, talker_ask, world.clip("clip-1")).status_code == 201
    factory, store = community.app.state.sessionmaker, community.app.state.clip_store

    early = run_once(factory, store, community.now())
    assert early.asks_expired == early.requests_closed == 0

    clock.advance(days=7, seconds=1)
    report = run_once(factory, store, community.now())
    assert (report.asks_expired, report.requests_closed) == (1, 1)
    assert run_once(factory, store, community.now()).asks_expired == 0
    assert _count(community, "ask:expire") == 1 and _count(community, "request:close") == 1
    with community.session() as session:
        assert session.get(Ask, silent_ask).state == "expired"  # type: ignore[union-attr]
    late = world.consent(silent, silent_ask, opened["id"], ["clip-9"])
    assert late.status_code == 409
    assert world.device_asks(silent) == []
    # Closed: still listed and downloadable for the access window.
    assert len(world.shared(opened["id"])) == 1
    request = community.client.get(
        f"/api/requests/{opened['id']}", headers=community.auth(world.agency.requester)
    ).json()
    assert request["state"] == "closed" and request["access_until"]


def test_background_scheduler_runs_and_stops(community: Community, clock: Clock) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    opened = world.open_request()
    clock.advance(days=8)
    scheduler = Scheduler(
        community.app.state.sessionmaker, community.app.state.clip_store, clock, interval=0.05
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while _count(community, "request:close") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert _count(community, "ask:expire") == 1
    status = community.client.get(
        f"/api/requests/{opened['id']}", headers=community.auth(world.agency.requester)
    ).json()["state"]
    assert status == "closed"
    assert world.device_asks(device) == []
