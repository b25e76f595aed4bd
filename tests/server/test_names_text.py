"""An agency's name and jurisdiction, and a device's name, reach residents' screens (web pages,
and the Pi's terminal beside every ask), so they follow a requester's text rule: letters of any
script, no character that drives a terminal or reorders what it shows. A refusal is a 422 naming
the field (the admin form: the error beside the field) and changes nothing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from app.permissions import Role
from porchlight.client import raw_public_key
from tests.server.factories import Community, x25519_recipient

HIDDEN = {"escape": ("\x1b[2J", "001B"), "bidi override": ("\u202e", "202E")}


def _agency_body() -> dict[str, str]:
    return {
        "name": "Testshire Police",
        "jurisdiction": "Testshire",
        "recipient": x25519_recipient(),
    }


@pytest.mark.parametrize("kind", sorted(HIDDEN))
@pytest.mark.parametrize("field", ["name", "jurisdiction"])
def test_agency_text_with_hidden_characters_is_refused(
    community: Community, client: TestClient, field: str, kind: str
) -> None:
    admin = community.person(Role.admin)
    hidden, code = HIDDEN[kind]
    body = _agency_body() | {field: f"Testshire{hidden} Elm Street Watch"}
    before = community.counts()
    response = client.post("/api/agencies", json=body, headers=community.auth(admin))
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(f"{field}: "), response.text
    assert f"U+{code}" in response.json()["message"]
    assert community.counts() == before  # no agency, no log entry


def test_agency_text_in_any_script_is_accepted(community: Community, client: TestClient) -> None:
    admin = community.person(Role.admin)
    body = _agency_body() | {
        "name": "Polizei München – Kriminalfachdezernat 北京\u00a0ТС",
        "jurisdiction": "Bayern; سرقة; चोरी",
    }
    response = client.post("/api/agencies", json=body, headers=community.auth(admin))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == body["name"]
    assert response.json()["jurisdiction"] == body["jurisdiction"]


def _register_by_form(community: Community, client: TestClient, **fields: str) -> tuple[int, str]:
    """Post the admin's agency form; a refusal must leave every table as it was."""
    csrf = community.login(community.person(Role.admin), client)
    before = community.counts()
    response = client.post(
        "/admin/agencies",
        data=_agency_body() | fields | {"csrf_token": csrf},
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    if response.status_code != 303:
        assert community.counts() == before
    return response.status_code, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Testshire Police\x1b[2K"),
        ("name", "Testshire\u202e Police"),
        ("jurisdiction", "Test\x1b[2Jshire"),
        ("jurisdiction", "Testshire\u202e"),
    ],
)
def test_the_agency_form_shows_the_refusal_beside_the_field(
    community: Community, client: TestClient, field: str, value: str
) -> None:
    status, text = _register_by_form(community, client, **{field: value})
    assert status == 422, text
    assert f'id="e-{field}"' in text
    assert "must not contain control or formatting characters" in text


def test_the_agency_form_takes_text_in_any_script(community: Community, client: TestClient) -> None:
    status, text = _register_by_form(
        community, client, name="Polizei München 北京", jurisdiction="Île-de-France"
    )
    assert status == 303, text
    auditor = community.person(Role.auditor)
    listed = client.get("/api/agencies", headers=community.auth(auditor)).json()
    assert {(a["name"], a["jurisdiction"]) for a in listed} == {
        ("Polizei München 北京", "Île-de-France")
    }


def _enrol(community: Community, client: TestClient, name: str) -> tuple[int, str]:
    owner = community.person(Role.resident)
    code = client.post("/api/devices/enrolment-codes", headers=community.auth(owner))
    assert code.status_code == 201, code.text
    key = Ed25519PrivateKey.generate()
    body = {
        "code": code.json()["code"],
        "public_key": base64.b64encode(raw_public_key(key)).decode(),
        "name": name,
    }
    before = community.counts()
    response = client.post("/api/devices/enroll", json=body)
    if response.status_code != 201:
        assert community.counts() == before  # no device, code not used, no log entry
    return response.status_code, response.text


@pytest.mark.parametrize("kind", sorted(HIDDEN))
def test_a_device_name_with_hidden_characters_is_refused(
    community: Community, client: TestClient, kind: str
) -> None:
    hidden, code = HIDDEN[kind]
    status, text = _enrol(community, client, f"porch{hidden}camera")
    assert status == 422, text
    assert '"name: must not contain control or formatting characters' in text
    assert f"U+{code}" in text


def test_a_device_name_in_any_script_is_accepted(community: Community, client: TestClient) -> None:
    status, text = _enrol(community, client, "Vordertür – 北京 ТС")
    assert status == 201, text
