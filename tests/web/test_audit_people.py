"""The auditors' page of who holds the reviewer, auditor and admin roles and who appointed
them (/audit/people): nothing inside one server stops an admin from inviting a second account
of their own as a reviewer, so auditors must be able to see who appointed whom.

In-process on SQLite and PostgreSQL, signed in with a browser's cookie session; one browser
test (SQLite, live server) runs axe-core over the page."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.accounts import service as accounts
from app.accounts.models import User
from app.permissions import Role
from tests.server.factories import Community, Person
from tests.server.requests.helpers import make_world
from tests.web.browser import Journey
from tests.web.conftest import Site
from tests.web.test_request_pages import HTML, Browser

PASSWORD = "lantern-quiet-harbour-appointed"


def _invite(community: Community, by: Person | None, role: Role) -> str:
    """An invite code for `role`, issued by an admin through the API or, with `by` None, as
    `porchlight server invite` issues it."""
    if by is not None:
        response = community.client.post(
            "/api/invites", json={"role": role.value}, headers=community.auth(by)
        )
        assert response.status_code == 201, response.text
        return str(response.json()["code"])
    with community.session() as session:
        _, code = accounts.create_invite(
            session, None, role, None, community.app.state.settings, community.now()
        )
        return code


def _accept(community: Community, code: str, username: str) -> Person:
    """Accept an invite through the API; the new person gets an API token to act with."""
    response = community.client.post(
        "/api/invites/accept", json={"code": code, "username": username, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    user_id = int(response.json()["id"])
    with community.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        _, token = accounts.create_api_token(session, user, "tests", community.now())
        return Person(user_id, username, PASSWORD, Role(user.role), None, token)


def _rows(page: str) -> dict[str, str]:
    """The table's rows by user name (the first cell)."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows: dict[str, str] = {}
    for row in re.findall(r"<tr>.*?</tr>", body, re.S):
        name = re.match(r"<tr>\s*<td>([^<]*)</td>", row)
        assert name is not None, row
        assert name.group(1) not in rows, f"{name.group(1)} listed twice"
        rows[name.group(1)] = row
    return rows


def _cells(row: str) -> list[str]:
    return [re.sub(r"\s+", " ", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


def test_a_reviewer_an_admin_invited_shows_who_appointed_them_and_what_they_reviewed(
    app: FastAPI, community: Community
) -> None:
    world = make_world(community)  # its requester and a reviewer made without an invite
    admin = community.person(Role.admin, username="estate-admin")
    second_look = _accept(community, _invite(community, admin, Role.reviewer), "second-look")
    approved = world.submit()["id"]
    rejected = world.submit()["id"]
    assert world.review(approved, reviewer=second_look).status_code == 200
    assert world.review(rejected, "reject", reviewer=second_look).status_code == 200
    untouched = world.submit()["id"]  # reviewed by no one: not on the page
    resident = community.person(Role.resident, username="resident-at-number-12")
    requester = world.agency.requester
    auditor = community.person(Role.auditor)

    page = Browser(app, community, auditor).get("/audit/people")
    rows = _rows(page)

    cells = _cells(rows["second-look"])
    assert cells[:3] == ["second-look", "reviewer", "—"]
    assert cells[4] == "estate-admin (admin)"
    assert cells[5] == "Active"
    assert f'<a href="/audit/requests/{approved}">Request #{approved}</a> (approved)' in cells[6]
    assert f'<a href="/audit/requests/{rejected}">Request #{rejected}</a> (rejected)' in cells[6]
    assert f"/audit/requests/{untouched}" not in page
    # Made by a server command (create-admin, or the factory's equivalent), not by an invite.
    assert _cells(rows["estate-admin"])[4] == "server command"
    assert _cells(rows[world.reviewer.username])[4:7] == ["server command", "Active", "None"]
    assert _cells(rows[auditor.username])[6] == "—"
    # The page is not a list of residents or of officers.
    for absent in (resident.username, requester.username):
        assert absent not in page
    # By role (reviewers, auditors, admins), then by when the account was created.
    order = list(rows)
    assert order.index(world.reviewer.username) < order.index("second-look")
    assert order.index("second-look") < order.index(auditor.username)
    assert order.index(auditor.username) < order.index("estate-admin")
    assert {_cells(row)[1] for row in rows.values()} == {"reviewer", "auditor", "admin"}


def test_a_server_invite_shows_as_a_server_command_and_a_disabled_account_as_disabled(
    app: FastAPI, community: Community
) -> None:
    admin = community.person(Role.admin)
    founder = _accept(community, _invite(community, None, Role.admin), "founding-admin")
    auditor_by_admin = _accept(community, _invite(community, founder, Role.auditor), "watcher")
    response = community.client.post(
        f"/api/people/{auditor_by_admin.id}/disable", headers=community.auth(admin)
    )
    assert response.status_code == 200, response.text

    page = Browser(app, community, community.person(Role.auditor)).get("/audit/people")
    rows = _rows(page)

    assert _cells(rows["founding-admin"])[4:6] == ["server command", "Active"]
    watcher = _cells(rows["watcher"])
    assert watcher[4] == "founding-admin (admin)"
    assert watcher[5].startswith('<span class="bad">Disabled</span> 20')  # and when


def test_user_names_are_escaped(app: FastAPI, community: Community) -> None:
    admin = community.person(Role.admin, username="<b>admin</b>")
    _accept(community, _invite(community, admin, Role.reviewer), "reviewer-two")
    page = Browser(app, community, community.person(Role.auditor)).get("/audit/people")
    assert "&lt;b&gt;admin&lt;/b&gt; (admin)" in page
    assert "<b>admin</b>" not in page


def test_only_auditors_see_the_page_and_reading_it_writes_no_entry(
    app: FastAPI, community: Community
) -> None:
    for role in Role:
        if role is not Role.auditor:
            browser = Browser(app, community, community.person(role))
            response = browser.client.get("/audit/people", headers=HTML)
            assert response.status_code == 403, (role, response.status_code)
            assert "Not allowed" in response.text
    with TestClient(app, follow_redirects=False) as anonymous:
        response = anonymous.get("/audit/people", headers=HTML)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Faudit%2Fpeople"
    browser = Browser(app, community, community.person(Role.auditor))
    before = community.counts()["log_entries"]
    browser.get("/audit/people")
    assert community.counts()["log_entries"] == before


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements this thread runs on `engine` inside the block (the app's own
    background work, publishing checkpoints say, shares the engine from other threads)."""
    seen: list[str] = []
    me = threading.get_ident()

    def record(*args: object) -> None:
        if threading.get_ident() == me:
            seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_list_takes_the_same_two_queries_however_many_people(
    app: FastAPI, community: Community
) -> None:
    def queries() -> int:
        with community.session() as session, _statements(app.state.engine) as seen:
            assert accounts.appointments(session)
        return sum(statement.startswith("SELECT") for statement in seen)

    world = make_world(community)
    few = queries()
    admin = community.person(Role.admin)
    for number in range(4):
        reviewer = _accept(community, _invite(community, admin, Role.reviewer), f"rev-{number}")
        assert world.review(world.submit()["id"], reviewer=reviewer).status_code == 200
    assert queries() == few == 2


def test_the_page_passes_axe(site: Site, page: Page, tmp_path: Path) -> None:
    community = site.community
    admin = community.person(Role.admin)
    _accept(community, _invite(community, admin, Role.reviewer), "axe-reviewer")
    auditor = community.person(Role.auditor)
    journey = Journey(page, site.url, "audit-people", tmp_path)
    journey.sign_in(auditor.username, auditor.password)
    page.get_by_role("link", name="Roles").click()
    expect(
        page.get_by_role("heading", name="Who holds which role, and who appointed them")
    ).to_be_visible()
    journey.check()
    expect(page.get_by_role("cell", name=f"{admin.username} (admin)")).to_be_visible()
    journey.screenshot()
