"""Agencies: registered by admins with a valid age recipient; bad input changes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.permissions import Role
from tests.server.factories import Community, bech32_encode, pq_recipient, x25519_recipient


def test_admin_registers_agencies(community: Community, client: TestClient) -> None:
    admin = community.person(Role.admin)
    pq = client.post(
        "/api/agencies",
        headers=community.auth(admin),
        json={"name": "Testshire Police", "jurisdiction": "Testshire", "recipient": pq_recipient()},
    )
    assert pq.status_code == 201, pq.text
    assert pq.json()["post_quantum"] is True
    classic = client.post(
        "/api/agencies",
        headers=community.auth(admin),
        json={
            "name": "Court Investigator",
            "jurisdiction": "Testshire",
            "recipient": x25519_recipient(),
        },
    )
    assert classic.status_code == 201
    assert classic.json()["post_quantum"] is False
    auditor = community.person(Role.auditor)
    listed = client.get("/api/agencies", headers=community.auth(auditor)).json()
    assert {a["name"] for a in listed} >= {"Testshire Police", "Court Investigator"}


def test_bad_agencies_change_nothing(community: Community, client: TestClient) -> None:
    admin = community.person(Role.admin)
    client.post(
        "/api/agencies",
        headers=community.auth(admin),
        json={"name": "Taken", "jurisdiction": "Testshire", "recipient": x25519_recipient()},
    )
    good = x25519_recipient()
    flipped = good[:-1] + ("q" if good[-1] != "q" else "p")
    before = community.counts()
    cases: list[tuple[dict[str, object], int]] = [
        ({"name": "A", "jurisdiction": "T", "recipient": good}, 422),
        ({"name": "Bad checksum", "jurisdiction": "Testshire", "recipient": flipped}, 422),
        (
            {
                "name": "Wrong kind",
                "jurisdiction": "Testshire",
                "recipient": bech32_encode("age", b"\x01" * 31),
            },
            422,
        ),
        (
            {
                "name": "Secret key",
                "jurisdiction": "Testshire",
                "recipient": "AGE-SECRET-KEY-1" + "Q" * 58,
            },
            422,
        ),
        ({"name": "Taken", "jurisdiction": "Testshire", "recipient": good}, 409),
        ({"name": "Extra", "jurisdiction": "Testshire", "recipient": good, "x": 1}, 422),
    ]
    for body, status in cases:
        response = client.post("/api/agencies", headers=community.auth(admin), json=body)
        assert response.status_code == status, (body["name"], response.text)
        assert response.json()["message"]
    assert community.counts() == before
