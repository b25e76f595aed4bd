"""Bad input gets a clear 4xx naming what is wrong, and changes nothing (issue 6, item 3)."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from typing import Any

import pytest

from app.permissions import Role
from porchlight import consent
from porchlight.age import parse_header
from tests.server.factories import Community
from tests.server.requests.helpers import World, make_world


@pytest.fixture
def world(community: Community) -> World:
    return make_world(community)


def _refused(world: World, response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message"}
    assert words in body["message"], body["message"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"warrant.court": None}, "warrant.court"),
        ({"warrant": None}, "warrant"),
        ({"offence": None}, "offence"),
        ({"warrant.document_sha256": "not-a-hash"}, "warrant.document_sha256"),
        ({"area.radius_m": 501}, "area.radius_m"),
        ({"window_start": "2026-01-01T00:00:00"}, "window_start"),  # no time zone
    ],
)
def test_malformed_or_over_policy_request(
    world: World, changes: dict[str, Any], words: str
) -> None:
    body = world.request_body()
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            if value is None:
                del body[outer][inner]
            else:
                body[outer][inner] = value
        elif value is None:
            del body[key]
        else:
            body[key] = value
    before = world.community.counts()
    response = world.client.post(
        "/api/requests", json=body, headers=world.community.auth(world.agency.requester)
    )
    _refused(world, response, 422, words)
    assert world.community.counts() == before


def test_warrant_and_window_rules(world: World) -> None:
    now = world.community.now()
    today = now.date()
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {
                "warrant.issued_on": (today - timedelta(days=40)).isoformat(),
                "warrant.expires_on": (today - timedelta(days=1)).isoformat(),
            },
            "warrant.expires_on: the warrant expired",
        ),
        (
            {"window_start": (now - timedelta(days=3)).isoformat()},
            "window_start: the window starts before the warrant was issued",
        ),
        (
            {
                "warrant.expires_on": today.isoformat(),
                "window_start": (now + timedelta(days=1)).isoformat(),
                "window_end": (now + timedelta(days=1, hours=1)).isoformat(),
            },
            "window_end: the window ends after the warrant expires",
        ),
        (
            {
                "window_start": (now - timedelta(hours=30)).isoformat(),
                "window_end": (now + timedelta(hours=20)).isoformat(),
                "warrant.issued_on": (today - timedelta(days=3)).isoformat(),
            },
            "exceeds this community's maximum of 48 h",
        ),
        ({"window_end": (now - timedelta(hours=4)).isoformat()}, "window_end: the time window"),
    ]
    before = world.community.counts()
    for changes, words in cases:
        response = world.client.post(
            "/api/requests",
            json=world.request_body(**changes),
            headers=world.community.auth(world.agency.requester),
        )
        _refused(world, response, 422, words)
    assert world.community.counts() == before


def test_open_request_cap_per_agency(world: World) -> None:
    admin = world.community.person(Role.admin)
    policy = world.client.get("/api/policy", headers=world.community.auth(admin)).json()
    changed = world.client.put(
        "/api/policy", json=policy | {"max_open_per_agency": 2}, headers=world.community.auth(admin)
    )
    assert changed.status_code == 200, changed.text
    world.submit()
    world.submit()
    before = world.community.counts()
    response = world.client.post(
        "/api/requests",
        json=world.request_body(),
        headers=world.community.auth(world.agency.requester),
    )
    _refused(world, response, 422, "agency: your agency already has 2")
    assert world.community.counts() == before
    # Another agency is not affected.
    other = world.new_agency()
    assert world.submit(other)["state"] == "submitted"


def _consented(world: World) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    resident = world.community.person(Role.resident)
    device = world.located_device(resident, 10, 10)
    opened = world.open_request()
    ask = world.device_asks(device)[0]
    response = world.consent(device, ask["ask_id"], opened["id"], ["clip-1", "clip-2"])
    assert response.status_code == 200, response.text
    return device, ask, opened


def test_consent_replay_and_other_devices_ask(world: World) -> None:
    resident = world.community.person(Role.resident)
    device = world.located_device(resident, 10, 10)
    other = world.located_device(world.community.person(Role.resident), 20, 20)
    opened = world.open_request()
    ask = world.device_asks(device)[0]
    body = world.consent_body(device, ask["ask_id"], opened["id"], ["clip-1"])

    before = world.community.counts()
    # Another device cannot answer this ask (not even see it).
    stolen = world.device_call(other, "POST", f"/api/device/asks/{ask['ask_id']}/consent", body)
    _refused(world, stolen, 404, "ask not found")
    # A receipt signed by a different key.
    forged = world.consent_body(other, ask["ask_id"], opened["id"], ["clip-1"])
    wrong = world.device_call(device, "POST", f"/api/device/asks/{ask['ask_id']}/consent", forged)
    _refused(world, wrong, 422, "not signed by this device's key")
    # A receipt for another request.
    elsewhere = world.consent_body(device, ask["ask_id"], opened["id"] + 1, ["clip-1"])
    misdirected = world.device_call(
        device, "POST", f"/api/device/asks/{ask['ask_id']}/consent", elsewhere
    )
    _refused(world, misdirected, 422, "different ask or request")
    assert world.community.counts() == before

    first = world.device_call(device, "POST", f"/api/device/asks/{ask['ask_id']}/consent", body)
    assert first.status_code == 200, first.text
    after = world.community.counts()
    replay = world.device_call(device, "POST", f"/api/device/asks/{ask['ask_id']}/consent", body)
    _refused(world, replay, 409, "already consented")
    decline = world.device_call(device, "POST", f"/api/device/asks/{ask['ask_id']}/decline")
    _refused(world, decline, 409, "consented; it cannot decline")
    assert world.community.counts() == after


def test_bad_uploads_change_nothing(world: World) -> None:
    device, ask, _ = _consented(world)
    ask_id = ask["ask_id"]
    good = world.clip("clip-1")
    outside = world.clip("clip-2", start=world.community.now() - timedelta(hours=5))
    unlisted = world.clip("clip-9")
    before = world.community.counts()
    tampered = bytearray(good.data)
    tampered[-40] ^= 1
    cases: list[tuple[Any, int, str]] = [
        (world.upload(device, ask_id, outside), 422, "not inside the request's time window"),
        (world.upload(device, ask_id, unlisted), 422, "not in this ask's consent receipt"),
        (
            world.upload(device, ask_id, good, manifest_key=consent.new_ask_key()),
            422,
            "signed by a different device",
        ),
        (
            world.upload(device, ask_id, good, body=good.data[: len(good.data) // 2]),
            422,
            "Content-Length",
        ),
        (
            world.upload(device, ask_id, good, body=bytes(tampered)),
            422,
            "differs from the manifest",
        ),
        (
            world.upload(
                device,
                ask_id,
                good,
                body=b"not an age file" + good.data[15:],
                manifest_changes={
                    "ciphertext_sha256": hashlib.sha256(
                        b"not an age file" + good.data[15:]
                    ).hexdigest()
                },
            ),
            422,
            "not a well-formed age file",
        ),
    ]
    for response, status, words in cases:
        _refused(world, response, status, words)
    # A truncated body whose manifest claims the truncated size: the age payload is missing.
    header = parse_header(io.BytesIO(good.data))
    header_only = good.data[: header.payload_offset + 16]  # the nonce, no sealed chunk
    truncated = world.upload(
        device,
        ask_id,
        good,
        body=header_only,
        manifest_changes={
            "ciphertext_sha256": hashlib.sha256(header_only).hexdigest(),
            "ciphertext_size": len(header_only),
        },
    )
    assert truncated.status_code == 422, truncated.text
    # More bytes than the manifest says, sent chunked (no Content-Length to refuse early).
    padded = good.data + b"extra"
    headers = world.upload_headers(device, ask_id, good, body=padded)
    oversized = world.client.put(
        f"/api/device/asks/{ask_id}/clips/{good.clip_id}", content=iter([padded]), headers=headers
    )
    _refused(world, oversized, 413, "more bytes than the manifest")
    assert world.community.counts() == before
    store = world.community.app.state.clip_store
    assert list(store.blob_dir.iterdir()) == []
    assert list(store.temp_dir.iterdir()) == []


def test_upload_is_idempotent_by_clip_id(world: World) -> None:
    device, ask, opened = _consented(world)
    clip = world.clip("clip-1")
    first = world.upload(device, ask["ask_id"], clip)
    assert first.status_code == 201, first.text
    after = world.community.counts()
    again = world.upload(device, ask["ask_id"], clip)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # Only the retry's own nonce is remembered (replay protection); nothing else changed.
    after["device_nonces"] += 1
    assert world.community.counts() == after
    different = world.clip("clip-1")
    conflict = world.upload(device, ask["ask_id"], different)
    _refused(world, conflict, 409, "different bytes")
    assert world.community.counts() == after
    download = world.client.get(
        f"/api/requests/{opened['id']}/shared/{world.shared(opened['id'])[0]['shared_clip_id']}",
        headers=world.community.auth(world.agency.requester),
    )
    assert download.content == clip.data


def test_download_after_revocation_or_expiry(world: World) -> None:
    device, ask, opened = _consented(world)
    clip = world.clip("clip-1")
    assert world.upload(device, ask["ask_id"], clip).status_code == 201
    shared_id = world.shared(opened["id"])[0]["shared_clip_id"]
    owner = world.community.auth(device.owner)
    revoked = world.client.post(f"/api/asks/{ask['ask_id']}/revoke", headers=owner)
    assert revoked.status_code == 200, revoked.text
    store = world.community.app.state.clip_store
    assert not store.exists(f"{ask['ask_id']}-clip-1")  # deleted once the revocation committed
    before = world.community.counts()
    path = f"/api/requests/{opened['id']}/shared/{shared_id}"
    response = world.client.get(path, headers=world.community.auth(world.agency.requester))
    _refused(world, response, 404, "no longer available")
    assert world.shared(opened["id"]) == []
    # Uploading again after revocation is refused too.
    _refused(world, world.upload(device, ask["ask_id"], clip), 409, "only after consent")
    twice = world.client.post(f"/api/asks/{ask['ask_id']}/revoke", headers=owner)
    _refused(world, twice, 409, "revoked; it cannot revoke")
    assert world.community.counts() == before


def test_illegal_review_transitions(world: World) -> None:
    opened = world.open_request()
    second = world.community.person(Role.reviewer)
    before = world.community.counts()
    again = world.review(opened["id"], reviewer=second)
    _refused(world, again, 409, "not awaiting review")
    assert world.community.counts() == before
