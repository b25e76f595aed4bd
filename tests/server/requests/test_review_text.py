"""A reviewer's reason is read by the requester, auditors and the log's readers, so it follows
the offence's rule: letters of any script and line feeds (the reviewer form's textarea), no
other control or formatting character. A refusal is a 422 naming `reason` (the form: the error
beside it) and decides nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.audit.models import LogEntry
from tests.server.factories import Community
from tests.server.requests.helpers import World, make_world


@pytest.fixture
def world(community: Community) -> World:
    return make_world(community)


def _review_api(world: World, request_id: int, reason: str) -> tuple[int, dict[str, str]]:
    response = world.client.post(
        f"/api/requests/{request_id}/review",
        json={"decision": "reject", "reason": reason},
        headers=world.community.auth(world.reviewer),
    )
    return response.status_code, response.json()


def _state(world: World, request_id: int) -> str:
    response = world.client.get(
        f"/api/requests/{request_id}", headers=world.community.auth(world.agency.requester)
    )
    return str(response.json()["state"])


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("Docket not found\x1b[2J  approved by the court", "001B"),
        ("Docket not found\u202e", "202E"),
        ("Docket not found\r  approved", "000D"),
    ],
)
def test_a_reason_with_hidden_characters_is_refused(world: World, reason: str, code: str) -> None:
    request_id = world.submit()["id"]
    before = world.community.counts()
    status, body = _review_api(world, request_id, reason)
    assert status == 422, body
    assert body["message"].startswith("reason: "), body
    assert f"U+{code}" in body["message"]
    assert world.community.counts() == before  # no review, no log entry
    assert _state(world, request_id) == "submitted"


def test_a_reason_in_any_script_with_line_feeds_is_accepted(world: World) -> None:
    request_id = world.submit()["id"]
    reason = "Aktenzeichen nicht gefunden – Müller, 北京\nbitte neu einreichen"
    status, body = _review_api(world, request_id, reason)
    assert status == 200, body
    assert body["decision_reason"] == reason


def _new_actions(world: World, after: int) -> list[str]:
    with world.community.session() as session:
        query = select(LogEntry.action).where(LogEntry.index >= after).order_by(LogEntry.index)
        return list(session.scalars(query))


def _review_form(world: World, request_id: int, reason: str) -> tuple[int, str]:
    """Post the reviewer form. A refusal shows the queue again (a logged read of its warrants,
    `review:list`) and changes nothing else."""
    csrf = world.community.login(world.reviewer)
    before = world.community.counts()
    response = world.client.post(
        f"/review/{request_id}",
        data={"decision": "reject", "reason": reason, "csrf_token": csrf},
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    if response.status_code != 303:
        after = world.community.counts()
        log_tables = {"log_entries", "log_tree_nodes"}
        assert {t: n for t, n in after.items() if t not in log_tables} == {
            t: n for t, n in before.items() if t not in log_tables
        }
        assert _new_actions(world, before["log_entries"]) == ["review:list"]
    return response.status_code, response.text


@pytest.mark.parametrize("reason", ["Docket not found\x1b[2K", "Docket\u202e not found"])
def test_the_review_form_shows_the_refusal_beside_the_reason(world: World, reason: str) -> None:
    request_id = world.submit()["id"]
    status, text = _review_form(world, request_id, reason)
    assert status == 422, text
    assert f'id="reason-e-{request_id}"' in text
    assert "must not contain control or formatting characters" in text
    assert _state(world, request_id) == "submitted"


def test_the_review_form_takes_a_textareas_line_breaks(world: World) -> None:
    request_id = world.submit()["id"]
    status, text = _review_form(world, request_id, "Docket not found\r\nplease refile – Müller")
    assert status == 303, text
    response = world.client.get(
        f"/api/requests/{request_id}", headers=world.community.auth(world.agency.requester)
    )
    assert response.json()["state"] == "rejected"
    assert response.json()["decision_reason"] == "Docket not found\nplease refile – Müller"
