"""A failure after a state change and before the commit leaves neither the change nor its
log entry (issue 6, item 2): one transaction per request, services never commit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.audit import service as audit
from app.permissions import Role
from app.requests import matching
from app.requests.models import Ask, FootageRequest
from tests.server.factories import Community
from tests.server.requests.helpers import make_world


class Injected(RuntimeError):
    pass


def test_failed_fan_out_rolls_back_the_approval(
    community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(community)
    world.located_device(community.person(Role.resident), 10, 10)
    created = world.submit()
    before = community.counts()

    def failing_create_asks(*args: Any, **kwargs: Any) -> int:
        # The approve transition (state change + its log entry) has already been flushed.
        raise Injected("database went away during fan-out")

    monkeypatch.setattr(matching, "create_asks", failing_create_asks)
    with pytest.raises(Injected):
        world.review(created["id"])
    assert community.counts() == before
    with community.session() as session:
        row = session.get(FootageRequest, created["id"])
        assert row is not None and row.state == "submitted"
    monkeypatch.undo()
    assert world.review(created["id"]).json()["state"] == "open"


def test_failure_after_the_log_entry_rolls_back_both(
    community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    opened = world.open_request()
    ask = world.device_asks(device)[0]
    before = community.counts()
    real_append = audit.append
    appended: list[str] = []

    def append_then_fail(*args: Any, **kwargs: Any) -> Any:
        entry = real_append(*args, **kwargs)
        appended.append(entry.action)
        if entry.action == "ask:consent":
            raise Injected("crash between the log entry and the commit")
        return entry

    monkeypatch.setattr(audit, "append", append_then_fail)
    with pytest.raises(Injected):
        world.consent(device, ask["ask_id"], opened["id"], ["clip-1"])
    assert appended == ["ask:consent"]  # the entry was written inside the transaction...
    monkeypatch.undo()
    # ...and rolled back with the state change (the nonce of the failed call too).
    assert community.counts() == before
    with community.session() as session:
        row = session.scalar(select(Ask).where(Ask.id == ask["ask_id"]))
        assert row is not None and row.state == "pending" and row.receipt is None
    retry = world.consent(device, ask["ask_id"], opened["id"], ["clip-1"])
    assert retry.status_code == 200, retry.text
