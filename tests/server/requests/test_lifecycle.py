"""The request lifecycle through the real API: submit, review, fan-out, answers, sharing,
download, close and expiry (DESIGN "Request lifecycle")."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from app.audit.models import LogEntry, PendingEntry
from app.permissions import Role
from app.scheduler import run_once
from porchlight.age import decryptor
from porchlight.manifest import ClipManifest
from porchlight.warrant import warrant_commitment
from tests.server.factories import Clock, Community
from tests.server.requests.helpers import make_world


def _log_entries(community: Community) -> list[dict[str, Any]]:
    auditor = community.person(Role.auditor)
    response = community.client.get(
        "/api/log/entries", params={"start": 0, "limit": 1000}, headers=community.auth(auditor)
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def _log_actions(community: Community) -> list[str]:
    return [entry["action"] for entry in _log_entries(community)]


def test_the_log_commits_to_the_warrant_and_never_holds_its_fields(community: Community) -> None:
    world = make_world(community)
    world.located_device(community.person(Role.resident), 50, 20)
    created = world.submit()
    world.review(created["id"])
    warrant = world.request_body()["warrant"]

    # Reading the log (bundles, /api/log/entries) must not be an unlogged read of warrant
    # details: no entry, integrated or pending, holds any of the warrant's fields.
    with community.session() as session:
        stored = [
            *session.scalars(select(LogEntry.entry)),
            *session.scalars(select(PendingEntry.entry)),
        ]
    assert len(stored) >= 3
    for field in ("court", "docket_number", "judge", "document_sha256"):
        needle = json.dumps(warrant[field])[1:-1].encode()
        assert not [entry for entry in stored if needle in entry], field

    # The entry commits to the warrant: whoever reads the request (a logged read) checks it.
    auditor = community.person(Role.auditor)
    record = community.client.get(
        f"/api/requests/{created['id']}", headers=community.auth(auditor)
    ).json()
    assert record["warrant"] == warrant
    submitted = [e for e in _log_entries(community) if e["action"] == "request:submit"]
    assert [e["subject"] for e in submitted] == [f"request:{created['id']}"]
    assert submitted[0]["details"]["warrant_sha256"] == warrant_commitment(record["warrant"])
    assert warrant_commitment({**warrant, "judge": "Another Judge"}) != warrant_commitment(warrant)
    reads = [e for e in _log_entries(community) if e["action"] == "request:read"]
    assert reads and reads[-1]["actor"] == f"user:{auditor.id}"


def test_full_lifecycle(community: Community, clock: Clock) -> None:
    world = make_world(community)
    alice, bob, carol = (community.person(Role.resident) for _ in range(3))
    near_a = world.located_device(alice, 50, 20)
    near_b = world.located_device(bob, -120, 90)
    far = world.located_device(carol, 5000, 0)

    created = world.submit()
    assert created["state"] == "submitted"
    assert world.device_asks(near_a) == []  # nothing goes out before review
    opened = world.review(created["id"]).json()
    assert opened["state"] == "open" and opened["deadline"]

    asks_a, asks_b = world.device_asks(near_a), world.device_asks(near_b)
    assert world.device_asks(far) == []
    assert len(asks_a) == len(asks_b) == 1
    ask_a, ask_b = asks_a[0], asks_b[0]
    assert ask_a["request"]["warrant"]["docket_number"] == "TS-2026-0042"
    assert ask_a["agency_recipient"] == str(world.agency.identity.recipient())
    assert ask_a["request"]["agency"] == "Testshire Police"

    # Residents see only their own devices' asks.
    mine = community.client.get("/api/asks", headers=community.auth(alice)).json()
    assert [a["ask_id"] for a in mine] == [ask_a["ask_id"]]

    shared_file = world.clip("clip-0001")
    consented = world.consent(near_a, ask_a["ask_id"], created["id"], ["clip-0001"])
    assert consented.status_code == 200, consented.text
    assert consented.json()["state"] == "consented"
    declined = world.device_call(near_b, "POST", f"/api/device/asks/{ask_b['ask_id']}/decline")
    assert declined.json()["state"] == "declined"

    upload = world.upload(near_a, ask_a["ask_id"], shared_file)
    assert upload.status_code == 201, upload.text
    assert upload.json()["ciphertext_sha256"] == hashlib.sha256(shared_file.data).hexdigest()

    listed = world.shared(created["id"])
    assert len(listed) == 1
    item = listed[0]
    assert item["pseudonym"] == "Resident A"
    assert set(item) == {
        "shared_clip_id",
        "pseudonym",
        "start",
        "end",
        "size",
        "manifest",
        "manifest_signature",
        "signer_public_key",
        "downloadable",
    }
    # The manifest is signed by the per-ask key, not the device key.
    manifest = ClipManifest(**item["manifest"])
    assert item["signer_public_key"] == manifest.device_key
    device_key = base64.b64encode(near_a.private_key.public_key().public_bytes_raw()).decode()
    assert manifest.device_key != device_key
    Ed25519PublicKey.from_public_bytes(base64.b64decode(manifest.device_key)).verify(
        base64.b64decode(item["manifest_signature"]), manifest.canonical_bytes()
    )

    requester = community.auth(world.agency.requester)
    download = community.client.get(
        f"/api/requests/{created['id']}/shared/{item['shared_clip_id']}", headers=requester
    )
    assert download.status_code == 200
    assert download.content == shared_file.data
    with decryptor(io.BytesIO(download.content), [world.agency.identity]) as reader:
        assert reader.read() == shared_file.plaintext
    assert hashlib.sha256(shared_file.plaintext).hexdigest() == manifest.plaintext_sha256

    # The first download ends revocability.
    revoke = community.client.post(
        f"/api/asks/{ask_a['ask_id']}/revoke", headers=community.auth(alice)
    )
    assert revoke.status_code == 409, revoke.text

    closed = community.client.post(f"/api/requests/{created['id']}/close", headers=requester)
    assert closed.json()["state"] == "closed"
    again = community.client.post(f"/api/requests/{created['id']}/close", headers=requester)
    assert again.status_code == 409 and again.json()["error"] == "invalid_transition"
    # Still downloadable within the access window.
    assert len(world.shared(created["id"])) == 1

    store = community.app.state.clip_store
    blob_key = f"{ask_a['ask_id']}-clip-0001"
    assert store.exists(blob_key)
    clock.advance(days=31)
    report = run_once(community.app.state.sessionmaker, store, community.now())
    assert report.requests_expired == 1 and report.clips_purged == 1 and report.blobs_deleted == 1
    assert not store.exists(blob_key)
    again_report = run_once(community.app.state.sessionmaker, store, community.now())
    assert again_report.requests_expired == again_report.blobs_deleted == 0
    assert world.shared(created["id"]) == []
    gone = community.client.get(
        f"/api/requests/{created['id']}/shared/{item['shared_clip_id']}", headers=requester
    )
    assert gone.status_code == 404

    actions = _log_actions(community)
    for action in (
        "request:submit",
        "request:approve",
        "request:open",
        "ask:consent",
        "ask:decline",
        "clip:share",
        "clip:download",
        "request:close",
        "request:expire",
        "clip:delete",
    ):
        assert action in actions, action
    entries = community.client.get(
        "/api/log/entries",
        params={"start": 0, "limit": 1000},
        headers=community.auth(community.person(Role.auditor)),
    ).json()["entries"]
    consent_entry = next(e for e in entries if e["action"] == "ask:consent")
    assert json.dumps(consent_entry).count("device_signature") == 1
