"""The public transparency report publishes completed quarters only (DESIGN promises 3 and 5):
a requester who reads it before and after their request opens learns nothing about who was
asked or who declined, and the quarter appears, whole, once it has ended."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from app.audit import service as audit
from app.log import reports
from app.permissions import Role
from app.scheduler import run_once
from tests.server.factories import Community
from tests.server.requests.helpers import make_world

HTML = {"Accept": "text/html"}
# Counted from asks and clips: withheld from a quarter with too few approved requests.
ASK_LINES = (
    "residents_asked",
    "consents",
    "declines",
    "asks_expired",
    "clips_shared",
    "downloads",
    "purges",
)
REVIEW_LINES = ("requests_received", "rejected_at_review", "approved")


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

    # The quarter is published at the first instant of the next one (its one request's asks
    # withheld: test_a_quarter_with_one_approved_request_withholds_what_residents_did).
    clock[0] = datetime(2026, 7, 1, tzinfo=UTC)
    published, page = _report(community, {})
    assert [q["quarter"] for q in published] == ["2026-Q2"]
    counts = published[0]["counts"]
    assert counts["requests_received"] == counts["approved"] == 1
    assert counts["residents_asked"] is None and counts["declines"] is None
    assert "2026-Q2</h2>" in page and "Residents asked withheld" in page
    assert re.search(r"Requests received 1\b", page)
    assert "2026-Q3 (2026-07-01 to 2026-10-01, end exclusive) appears here on 2026-10-01" in page


def test_an_empty_log_publishes_no_quarter(community: Community) -> None:
    quarters, page = _report(community, {})
    assert quarters == []
    assert "No completed quarter has anything to report yet." in page


def _values_of(document: Any, key: str) -> list[Any]:
    """Every count under `key` anywhere in a JSON document (a total row would hold one); the
    `actions` strings, which say how each line is counted, are not counts."""
    if isinstance(document, dict):
        found = [document[key]] if key in document and not isinstance(document[key], str) else []
        return found + [v for value in document.values() for v in _values_of(value, key)]
    if isinstance(document, list):
        return [v for item in document for v in _values_of(item, key)]
    return []


def test_a_quarter_with_one_approved_request_withholds_what_residents_did(
    community: Community,
) -> None:
    """DESIGN promise 3: the quarter's only requester knows the request was theirs, so exact
    ask counts would tell them how many residents were asked, said no or stayed silent."""
    clock = [datetime(2026, 5, 20, 12, 0, tzinfo=UTC)]
    community.app.state.clock = lambda: clock[0]
    world = make_world(community)
    devices = [
        world.located_device(community.person(Role.resident), 10 * i, 5 * i) for i in range(6)
    ]
    opened = world.open_request()
    rejected = world.submit()
    assert world.review(rejected["id"], "reject").status_code == 200
    asks = [world.device_asks(device)[0]["ask_id"] for device in devices]
    for device, ask_id in zip(devices[:3], asks[:3], strict=True):
        declined = world.device_call(device, "POST", f"/api/device/asks/{ask_id}/decline")
        assert declined.status_code == 200, declined.text
    assert world.consent(devices[3], asks[3], opened["id"], ["clip-1"]).status_code == 200
    clock[0] += timedelta(days=8)  # the other two stay silent past the deadline
    run_once(community.app.state.sessionmaker, community.app.state.clip_store, clock[0])

    clock[0] = datetime(2026, 7, 1, tzinfo=UTC)
    community.counts()  # integrate every pending entry
    body = community.client.get("/api/transparency").json()
    page = html.unescape(community.client.get("/transparency", headers=HTML).text)
    [quarter] = body["quarters"]
    assert quarter["quarter"] == "2026-Q2"
    # What the review did is published: the requester knows their own request's fate.
    assert {line: quarter["counts"][line] for line in REVIEW_LINES} == {
        "requests_received": 2,
        "rejected_at_review": 1,
        "approved": 1,
    }
    # What residents did is not: null, with the reason, and said once in the note.
    assert {line: quarter["counts"][line] for line in ASK_LINES} == dict.fromkeys(ASK_LINES)
    assert set(quarter["counts"]) == {*REVIEW_LINES, *ASK_LINES}
    assert quarter["withheld"] == reports.WITHHELD_REASON
    assert quarter["withheld"].startswith("fewer than 5 approved requests this quarter")
    assert body["min_approved_requests"] == reports.MIN_APPROVED_REQUESTS == 5
    assert reports.PUBLICATION_NOTE in body["note"] and reports.WITHHOLDING_NOTE in body["note"]
    # No total (or any other place) carries a withheld line's number, so none can be worked
    # out by subtracting the published quarters from it.
    assert set(body) == {"generated_at", "note", "min_approved_requests", "actions", "quarters"}
    for line in ASK_LINES:
        assert _values_of(body, line) == [None], line

    # The page says "withheld", in words, with the reason, and explains the rule once.
    assert page.count(reports.WITHHOLDING_NOTE) == 1
    assert (
        "<strong>Withheld for 2026-Q2:</strong> Residents asked, Residents who shared, "
        "Residents who said no, Asks not answered (no), Clips shared, Clip downloads, "
        f"Clips deleted. Reason: {reports.WITHHELD_REASON}." in page
    )
    assert "Residents asked withheld" in page and "Residents who said no withheld" in page
    assert page.count("<td>withheld (see the reason above)</td>") == len(ASK_LINES)
    assert re.search(r"Requests received 2\b", page) and re.search(r"Approved 1\b", page)
    assert not re.search(r"Residents asked \d", page)
    assert not re.search(r"Residents who said no \d", page)
    assert not re.search(r"<t[dh][^>]*>\s*(all-time )?total", page, re.IGNORECASE)


def test_a_quarter_with_five_approved_requests_publishes_every_count(
    community: Community,
) -> None:
    q3, q4 = datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    plan = [
        # 2026-Q3: five approved requests, published in full.
        (q3, "request:submit", 6),
        (q3, "request:reject", 1),
        (q3, "request:approve", 5),
        (q3, "ask:create", 9),
        (q3, "ask:consent", 4),
        (q3, "ask:decline", 3),
        (q3, "ask:expire", 2),
        (q3, "clip:share", 4),
        (q3, "clip:download", 5),
        (q3, "clip:purge", 4),
        # 2026-Q4: four, one short: withheld.
        (q4, "request:submit", 4),
        (q4, "request:approve", 4),
        (q4, "ask:create", 7),
        (q4, "ask:decline", 2),
    ]
    with community.session() as session:
        for moment, action, count in plan:
            for number in range(count):
                audit.append(session, "system", action, f"request:{number}", now=moment)
    now = datetime(2027, 1, 15, tzinfo=UTC)
    community.app.state.clock = lambda: now
    body = community.client.get("/api/transparency").json()
    page = community.client.get("/transparency", headers=HTML).text
    quarters = {q["quarter"]: q for q in body["quarters"]}
    assert list(quarters) == ["2026-Q3", "2026-Q4"]
    assert quarters["2026-Q3"]["withheld"] is None
    assert quarters["2026-Q3"]["counts"] == {
        "requests_received": 6,
        "rejected_at_review": 1,
        "approved": 5,
        "residents_asked": 9,
        "consents": 4,
        "declines": 3,
        "asks_expired": 2,
        "clips_shared": 4,
        "downloads": 5,
        "purges": 4,
    }
    assert quarters["2026-Q4"]["withheld"] == reports.WITHHELD_REASON
    assert quarters["2026-Q4"]["counts"] == {
        **dict.fromkeys(ASK_LINES),
        "requests_received": 4,
        "rejected_at_review": 0,
        "approved": 4,
    }
    # Only the published quarter's numbers appear: no total over both to subtract from.
    assert _values_of(body, "residents_asked") == [9, None]
    assert _values_of(body, "declines") == [3, None]
    published = page.split('<h2 id="q-2026-Q3">')[1]
    assert "withheld" not in published.split("</section>")[0]
    for line in ("Residents asked 9", "Residents who said no 3", "Clip downloads 5"):
        assert line in published
    assert "<strong>Withheld for 2026-Q4:</strong>" in page
    assert "Residents asked 7" not in page and "Residents who said no 2" not in page
