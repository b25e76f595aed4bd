"""Devices: enrolment, signed replay-safe calls, coarse locations, revocation, the enroll CLI."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.devices.models import Device
from app.permissions import Role
from app.settings import Settings
from device import sync_cli
from porchlight.cli import CommandError, build_parser
from porchlight.client import PorchlightClient, raw_public_key, sign_device_call
from tests.server.factories import Clock, Community
from tests.server.live import live_server
from tests.server.log.helpers import integrate_log


def test_enrolment_code_is_single_use(community: Community, client: TestClient) -> None:
    resident = community.person(Role.resident)
    code = client.post("/api/devices/enrolment-codes", headers=community.auth(resident)).json()
    key = base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()
    first = client.post("/api/devices/enroll", json={"code": code["code"], "public_key": key})
    assert first.status_code == 201
    before = community.counts()
    other = base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()
    second = client.post("/api/devices/enroll", json={"code": code["code"], "public_key": other})
    assert second.status_code == 409
    assert "already been used" in second.json()["message"]
    assert community.counts() == before


def test_bad_enrolments_change_nothing(
    community: Community, client: TestClient, clock: Clock, settings: Settings
) -> None:
    resident = community.person(Role.resident)
    code = client.post("/api/devices/enrolment-codes", headers=community.auth(resident)).json()[
        "code"
    ]
    before = community.counts()
    for public_key, status in [("not base64!", 422), (base64.b64encode(b"short").decode(), 422)]:
        response = client.post("/api/devices/enroll", json={"code": code, "public_key": public_key})
        assert response.status_code == status
        assert response.json()["message"]
    key = base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()
    unknown = client.post("/api/devices/enroll", json={"code": "enr_nope", "public_key": key})
    assert unknown.status_code == 404
    clock.advance(minutes=settings.enrolment_code_minutes + 1)
    expired = client.post("/api/devices/enroll", json={"code": code, "public_key": key})
    assert expired.status_code == 409
    assert "expired" in expired.json()["message"]
    assert community.counts() == before


def test_signed_calls_and_replays(
    community: Community, client: TestClient, clock: Clock, settings: Settings
) -> None:
    device = community.enrol_device(community.person(Role.resident))
    headers = community.device_headers(device, "GET", "/api/device/self")
    ok = client.get("/api/device/self", headers=headers)
    assert ok.status_code == 200
    assert ok.json()["id"] == device.id
    before = community.counts()
    replay = client.get("/api/device/self", headers=headers)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["message"]
    assert community.counts() == before

    # A signature over another path, a wrong key, a wrong credential, a stale clock: refused.
    other_path = community.device_headers(device, "GET", "/api/device/other")
    assert client.get("/api/device/self", headers=other_path).status_code == 401
    forged = community.device_headers(device, "GET", "/api/device/self")
    forged["X-Porchlight-Signature"] = base64.b64encode(
        Ed25519PrivateKey.generate().sign(b"x")
    ).decode()
    assert client.get("/api/device/self", headers=forged).status_code == 401
    wrong_credential = community.device_headers(device, "GET", "/api/device/self")
    wrong_credential["Authorization"] = "Device dev_wrong"
    assert client.get("/api/device/self", headers=wrong_credential).status_code == 401
    stale = community.device_headers(
        device,
        "GET",
        "/api/device/self",
        timestamp=int(time.time()) - 2 * settings.device_clock_skew_seconds,
    )
    response = client.get("/api/device/self", headers=stale)
    assert response.status_code == 401
    assert "clock" in response.json()["message"]
    assert community.counts() == before


def test_location_is_coarse_and_private(community: Community, client: TestClient) -> None:
    resident = community.person(Role.resident)
    device = community.enrol_device(resident)
    response = client.put(
        f"/api/devices/{device.id}/location",
        headers=community.auth(resident),
        json={"latitude": 51.501364, "longitude": -0.14189},
    )
    assert response.status_code == 200
    assert response.json()["latitude"] == 51.501
    assert response.json()["longitude"] in (-0.142, -0.141, -0.14)
    with community.session() as session:
        stored = session.scalar(select(Device).where(Device.id == device.id))
        assert stored is not None
        assert (stored.lat_milli, stored.lon_milli) == (51501, round(-141.89 / 2) * 2)
    # Not on the log, not visible to admins, not settable by another resident.
    integrate_log(community.app)
    with community.session() as session:
        from app.audit.models import LogEntry

        entries = session.scalars(select(LogEntry.entry)).all()
    assert not any(b"51.5" in e or b"51501" in e for e in entries)
    admin = community.person(Role.admin)
    listed = client.get("/api/admin/devices", headers=community.auth(admin)).json()
    assert listed and all("latitude" not in d for d in listed)
    stranger = community.person(Role.resident)
    before = community.counts()
    theirs = client.put(
        f"/api/devices/{device.id}/location",
        headers=community.auth(stranger),
        json={"latitude": 1.0, "longitude": 1.0},
    )
    assert theirs.status_code == 404
    assert client.get("/api/devices", headers=community.auth(stranger)).json() == []
    bad = client.put(
        f"/api/devices/{device.id}/location",
        headers=community.auth(resident),
        json={"latitude": 91, "longitude": 0},
    )
    assert bad.status_code == 422
    assert community.counts() == before


def test_revoked_device_is_refused(community: Community, client: TestClient) -> None:
    resident = community.person(Role.resident)
    device = community.enrol_device(resident)
    revoked = client.post(f"/api/devices/{device.id}/revoke", headers=community.auth(resident))
    assert revoked.status_code == 200
    headers = community.device_headers(device, "GET", "/api/device/self")
    assert client.get("/api/device/self", headers=headers).status_code == 401
    again = client.post(f"/api/devices/{device.id}/revoke", headers=community.auth(resident))
    assert again.status_code == 409


@pytest.mark.sqlite_only
def test_enroll_command_against_a_live_server(
    community: Community, database_url: str, tmp_path: Path
) -> None:
    resident = community.person(Role.resident)
    with live_server(database_url, tmp_path / "data") as url:
        code = community.client.post(
            "/api/devices/enrolment-codes", headers=community.auth(resident)
        ).json()["code"]
        parser = build_parser(["device"])
        data_dir = tmp_path / "device"
        args = parser.parse_args(
            ["device", "enroll", "--server", url, "--code", code, "--data-dir", str(data_dir)]
        )
        assert args.handler(args) == 0
        for name in (sync_cli.KEY_FILE, sync_cli.ENROLMENT_FILE):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
        saved = sync_cli.load_enrolment(data_dir)
        assert saved is not None
        key = sync_cli.load_or_create_key(data_dir)
        with PorchlightClient(url) as client:
            me = client.device_call(key, saved.enrolment, "GET", "/api/device/self")
        assert me["id"] == saved.device_id
        reused = parser.parse_args(
            ["device", "enroll", "--server", url, "--code", code, "--data-dir", str(data_dir)]
        )
        with pytest.raises(CommandError, match="already been used"):
            reused.handler(reused)


def test_streamed_body_digest_signs_the_same_as_the_body(community: Community) -> None:
    import hashlib

    from app.devices import service as devices

    device = community.enrol_device(community.person(Role.resident))
    body = b"\x00age-ciphertext" * 1000
    headers = community.device_headers(device, "PUT", "/api/device/x", body)
    digest_headers = sign_device_call(
        device.private_key,
        device.id,
        device.credential,
        "PUT",
        "/api/device/x",
        body_sha256=hashlib.sha256(body).hexdigest(),
        timestamp=int(headers["X-Porchlight-Timestamp"]),
        nonce=headers["X-Porchlight-Nonce"],
    )
    assert digest_headers == headers
    with community.session() as session:
        settings = community.app.state.settings
        found = devices.authenticate_call(
            session,
            settings,
            headers,
            "PUT",
            "/api/device/x",
            b"",
            community.now(),
            body_sha256=hashlib.sha256(body).hexdigest(),
        )
        assert found.id == device.id
