"""The public transparency report publishes completed quarters only (DESIGN promises 3 and 5):
a requester who reads it before and after their request opens learns nothing about who was
asked or who declined, and the quarter appears, whole, once it has ended."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from app.log import reports
from app.permissions import Role
from tests.server.factories import Community
from tests.server.requests.helpers import make_world

HTML = {"Accept": "text/html"}


def _report(community: Community, headers: dict[str, str]) -> tuple[list[Any], str]:
    # Integrate every pending entry first: the report counts integrated entries only.
    community.counts()
    body = community.client.get("/api/transparency", headers=headers)
    page = community.client.get("/transparency", headers={**headers, **HTML})
    assert body.status_code == page.status_code == 200
    return body.json()["quarters"], page.text


def test_a_requester_learns_nothing_from_the_report_while_their_request_is_open(
    community: Community,
) -> None:
    # The app's clock, fixed in mid-quarter; the test moves it below.
    clock = [datetime(2026, 5, 20, 12, 0, tzinfo=UTC)]
    community.app.state.clock = lambda: clock[0]
    world = make_world(community)
    devices = [
        world.located_device(community.person(Role.resident), 10 * i, 5 * i) for i in range(5)
    ]
    requester = community.auth(world.agency.requester)

    before, before_page = _report(community, requester)
    world.open_request()
    asks = [world.device_asks(device)[0]["ask_id"] for device in devices]
    for device, ask_id in zip(devices[:2], asks[:2], strict=True):
        declined = world.device_call(device, "POST", f"/api/device/asks/{ask_id}/decline")
        assert declined.status_code == 200, declined.text
    after, after_page = _report(community, requester)

    # Nothing about this quarter is published while it runs: no count moved.
    assert before == after == []
    assert before_page == after_page
    assert reports.PUBLICATION_NOTE in after_page
    assert "2026-Q2 (2026-04-01 to 2026-07-01, end exclusive) appears here on 2026-07-01" in (
        after_page
    )
    assert "2026-Q2</h2>" not in after_page

    # The quarter is published whole at the first instant of the next one.
    clock[0] = datetime(2026, 7, 1, tzinfo=UTC)
    published, page = _report(community, {})
    assert [q["quarter"] for q in published] == ["2026-Q2"]
    counts = published[0]["counts"]
    assert counts["requests_received"] == counts["approved"] == 1
    assert counts["residents_asked"] == 5 and counts["declines"] == 2
    assert "2026-Q2</h2>" in page and "Residents asked 5" in page
    assert re.search(r"Requests received 1\b", page)
    assert "2026-Q3 (2026-07-01 to 2026-10-01, end exclusive) appears here on 2026-10-01" in page


def test_an_empty_log_publishes_no_quarter(community: Community) -> None:
    quarters, page = _report(community, {})
    assert quarters == []
    assert "No completed quarter has anything to report yet." in page
