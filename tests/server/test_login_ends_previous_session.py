"""Signing in ends the session the browser already held: a token that leaked before the login,
or the last person's session on a shared computer, stops working. A failed login ends nothing."""

from __future__ import annotations

import json
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.accounts.models import WebSession
from app.audit.models import LogEntry
from app.deps import SESSION_COOKIE
from app.permissions import Role
from app.tokens import digest
from tests.server.factories import Community, Person

HTML = {"Accept": "text/html"}


def _api_login(client: TestClient, person: Person, password: str | None = None) -> int:
    response = client.post(
        "/api/session",
        json={"username": person.username, "password": password or person.password},
    )
    return response.status_code


def _form_login(client: TestClient, person: Person, password: str | None = None) -> int:
    form = client.get("/login", headers=HTML)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = client.post(
        "/login",
        headers=HTML,
        data={
            "username": person.username,
            "password": password or person.password,
            "csrf_token": token.group(1),
        },
    )
    return response.status_code


def _me(app: FastAPI, cookie: str) -> int:
    """/api/me from a fresh client sending only this session cookie."""
    with TestClient(app) as other:
        other.cookies.set(SESSION_COOKIE, cookie)
        return other.get("/api/me").status_code


def _session_of(community: Community, cookie: str) -> WebSession:
    with community.session() as session:
        found = session.scalar(select(WebSession).where(WebSession.token_hash == digest(cookie)))
        assert found is not None
        session.expunge(found)
        return found


def _reasons(community: Community) -> list[str]:
    """The `reason` of every `session:end` entry, in log order."""
    community.counts()
    with community.session() as session:
        rows = session.scalars(
            select(LogEntry.entry).where(LogEntry.action == "session:end").order_by(LogEntry.index)
        ).all()
        return [json.loads(row)["details"]["reason"] for row in rows]


def _log(community: Community, action: str) -> list[tuple[str, str]]:
    community.counts()  # integrates pending log entries first
    with community.session() as session:
        rows = session.execute(
            select(LogEntry.actor, LogEntry.subject)
            .where(LogEntry.action == action)
            .order_by(LogEntry.index)
        ).all()
        return [(row.actor, row.subject) for row in rows]


def _signed_in(community: Community, app: FastAPI, person: Person) -> tuple[TestClient, str]:
    browser = TestClient(app, follow_redirects=False)
    community.login(person, browser)
    old = browser.cookies.get(SESSION_COOKIE)
    assert old is not None and _me(app, old) == 200
    return browser, old


def test_api_login_ends_the_session_the_cookie_held(community: Community, app: FastAPI) -> None:
    first = community.person(Role.auditor)
    second = community.person(Role.resident)
    browser, old = _signed_in(community, app, first)
    old_session = _session_of(community, old)
    assert _log(community, "session:end") == []

    assert _api_login(browser, second) == 200
    new = browser.cookies.get(SESSION_COOKIE)
    assert new is not None and new != old
    assert _me(app, old) == 401
    assert _me(app, new) == 200
    assert _session_of(community, old).ended_at is not None
    assert _log(community, "session:end") == [(f"user:{first.id}", f"session:{old_session.id}")]
    assert _reasons(community) == ["sign-in"]


def test_form_login_ends_the_session_the_cookie_held(community: Community, app: FastAPI) -> None:
    person = community.person(Role.auditor)
    browser, old = _signed_in(community, app, person)
    old_session = _session_of(community, old)

    # The same person signing in again (a token that leaked before this login).
    assert _form_login(browser, person) == 303
    new = browser.cookies.get(SESSION_COOKIE)
    assert new is not None and new != old
    assert _me(app, old) == 401
    assert _me(app, new) == 200
    assert _log(community, "session:end") == [(f"user:{person.id}", f"session:{old_session.id}")]
    # Ended by the login itself: its entry comes right before the new session's.
    community.counts()
    with community.session() as session:
        last_two = session.execute(
            select(LogEntry.action, LogEntry.subject).order_by(LogEntry.index.desc()).limit(2)
        ).all()
    assert [tuple(row) for row in reversed(last_two)] == [
        ("session:end", f"session:{old_session.id}"),
        ("session:create", f"session:{_session_of(community, new).id}"),
    ]


def test_a_failed_login_ends_nothing(community: Community, app: FastAPI) -> None:
    first = community.person(Role.auditor)
    second = community.person(Role.resident)
    browser, old = _signed_in(community, app, first)
    before = community.counts()

    assert _api_login(browser, second, password="not-the-password-at-all") == 401
    assert _form_login(browser, second, password="not-the-password-at-all") == 401
    assert browser.cookies.get(SESSION_COOKIE) == old
    assert _me(app, old) == 200
    assert _session_of(community, old).ended_at is None
    assert _log(community, "session:end") == []
    after = community.counts()
    # Only what a failure always records: two attempts and their two login:fail entries.
    assert after["login_attempts"] == before["login_attempts"] + 2
    assert after["log_entries"] == before["log_entries"] + 2
    assert after["web_sessions"] == before["web_sessions"]
    assert len(_log(community, "login:fail")) == 2


def test_a_throttled_login_ends_nothing(community: Community, app: FastAPI) -> None:
    person = community.person(Role.auditor)
    browser, old = _signed_in(community, app, person)
    # Wrong passwords until the account closes to this address (bounded: the per-address
    # limit throttles at the latest).
    for _ in range(app.state.settings.login_max_failures_per_address + 1):
        if _api_login(browser, person, password="not-the-password-at-all") == 429:
            break
    else:
        raise AssertionError("never throttled")
    # The right password now: refused unchecked, through either door.
    assert _api_login(browser, person) == 429
    assert _form_login(browser, person) == 429
    assert _me(app, old) == 200
    assert _log(community, "session:end") == []


def test_an_ended_or_unknown_cookie_is_ignored(community: Community, app: FastAPI) -> None:
    person = community.person(Role.auditor)
    browser, old = _signed_in(community, app, person)
    csrf = _session_of(community, old).csrf_token
    assert browser.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert _log(community, "session:end") == [
        (f"user:{person.id}", f"session:{_session_of(community, old).id}")
    ]
    for stale in (old, "ses_not-a-session"):
        browser.cookies.set(SESSION_COOKIE, stale)
        assert _api_login(browser, person) == 200
        browser.cookies.delete(SESSION_COOKIE)
    # Logging out ended it once; neither login found a live session to end.
    assert len(_log(community, "session:end")) == 1
    assert _reasons(community) == ["sign-out"]
