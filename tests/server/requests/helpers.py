"""A small community with footage requests in flight, built through the real API.

Agencies here keep their age identity so tests can decrypt what was shared; devices sign
their calls with their enrolled keys, consents are real `porchlight.consent` receipts and
clips real age files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from app.accounts.models import User
from app.agencies import service as agencies
from app.devices.models import DeviceNonce
from app.permissions import Role
from porchlight import consent
from porchlight.age import encryptor, generate_identity, parse_recipient
from porchlight.age.keys import HybridIdentity, X25519Identity
from porchlight.manifest import ClipManifest, format_time, public_key_text, sign_manifest
from tests.server.factories import Community, EnrolledDevice, Person

# A point in a town; devices are placed at metre offsets from it.
CENTRE = (51.5010, -0.1420)


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    import math

    lat = CENTRE[0] + north_m / 111_320.0
    lon = CENTRE[1] + east_m / (111_320.0 * math.cos(math.radians(CENTRE[0])))
    return lat, lon


@dataclass
class SharedFile:
    clip_id: str
    data: bytes
    plaintext: bytes
    start: datetime
    end: datetime


@dataclass
class Agency:
    id: int
    identity: X25519Identity | HybridIdentity
    requester: Person


@dataclass
class World:
    community: Community
    agency: Agency
    reviewer: Person
    ask_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        return self.community.client

    # -- people ------------------------------------------------------------------------
    def new_agency(self, name: str | None = None) -> Agency:
        admin = self.community.person(Role.admin)
        identity = generate_identity("x25519")
        with self.community.session() as session:
            by = session.get(User, admin.id)
            assert by is not None
            row = agencies.create_agency(
                session,
                by,
                name or f"Agency {os.urandom(4).hex()}",
                "Testshire",
                str(identity.recipient()),
                self.community.now(),
            )
            agency_id = row.id
        requester = self.community.person(Role.requester, agency_id=agency_id)
        return Agency(agency_id, identity, requester)

    def located_device(
        self, owner: Person, north_m: float = 0, east_m: float = 0
    ) -> EnrolledDevice:
        device = self.community.enrol_device(owner)
        lat, lon = offset(north_m, east_m)
        response = self.client.put(
            f"/api/devices/{device.id}/location",
            json={"latitude": lat, "longitude": lon},
            headers=self.community.auth(owner),
        )
        assert response.status_code == 200, response.text
        return device

    # -- requests ----------------------------------------------------------------------
    def request_body(self, **changes: Any) -> dict[str, Any]:
        now = self.community.now()
        today = now.date()
        body: dict[str, Any] = {
            "warrant": {
                "court": "Testshire Magistrates' Court",
                "docket_number": "TS-2026-0042",
                "judge": "HHJ Example",
                "issued_on": (today - timedelta(days=1)).isoformat(),
                "expires_on": (today + timedelta(days=30)).isoformat(),
                "document_sha256": hashlib.sha256(b"warrant").hexdigest(),
            },
            "offence": "Burglary at 12 Example Road",
            "window_start": (now - timedelta(hours=3)).isoformat(),
            "window_end": (now - timedelta(hours=1)).isoformat(),
            "area": {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 300},
        }
        for key, value in changes.items():
            if key.startswith("warrant."):
                body["warrant"][key.removeprefix("warrant.")] = value
            elif key.startswith("area."):
                body["area"][key.removeprefix("area.")] = value
            elif value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def submit(self, agency: Agency | None = None, **changes: Any) -> dict[str, Any]:
        agency = agency or self.agency
        response = self.client.post(
            "/api/requests",
            json=self.request_body(**changes),
            headers=self.community.auth(agency.requester),
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def review(
        self, request_id: int, decision: str = "approve", reviewer: Person | None = None
    ) -> httpx.Response:
        return self.client.post(  # type: ignore[no-any-return]
            f"/api/requests/{request_id}/review",
            json={"decision": decision, "reason": "warrant checked against the court record"},
            headers=self.community.auth(reviewer or self.reviewer),
        )

    def open_request(self, agency: Agency | None = None, **changes: Any) -> dict[str, Any]:
        created = self.submit(agency, **changes)
        response = self.review(created["id"])
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "open"
        return dict(response.json())

    def stamp(self) -> int:
        """Devices sign with the server's (test-moved) clock, as a synced Pi would."""
        return int(self.community.now().timestamp())

    # -- device calls ------------------------------------------------------------------
    def device_call(
        self, device: EnrolledDevice, method: str, path: str, body: Any = None
    ) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = self.community.device_headers(
            device, method, path, content, timestamp=self.stamp()
        )
        if content:
            headers["Content-Type"] = "application/json"
        return self.client.request(method, path, content=content, headers=headers)  # type: ignore[no-any-return]

    def device_asks(self, device: EnrolledDevice) -> list[dict[str, Any]]:
        response = self.device_call(device, "GET", "/api/device/asks")
        assert response.status_code == 200, response.text
        return list(response.json())

    def consent_body(
        self, device: EnrolledDevice, ask_id: str, request_id: int, clip_ids: list[str]
    ) -> dict[str, Any]:
        ask_key = consent.new_ask_key()
        self.ask_keys[ask_id] = ask_key
        receipt = consent.make_receipt(
            ask_id, str(request_id), clip_ids, ask_key, self.community.now()
        )
        return consent.sign_receipt(receipt, device.private_key)

    def consent(
        self, device: EnrolledDevice, ask_id: str, request_id: int, clip_ids: list[str]
    ) -> httpx.Response:
        body = self.consent_body(device, ask_id, request_id, clip_ids)
        return self.device_call(device, "POST", f"/api/device/asks/{ask_id}/consent", body)

    def clip(
        self,
        clip_id: str,
        start: datetime | None = None,
        seconds: int = 20,
        size: int = 150_000,
        recipient: str | None = None,
    ) -> SharedFile:
        """A real age file of random "footage" for the agency (as a rewrap would produce)."""
        start = start or (self.community.now() - timedelta(hours=2))
        plaintext = os.urandom(size)
        target = parse_recipient(recipient or str(self.agency.identity.recipient()))
        buffer = io.BytesIO()
        with encryptor(buffer, [target]) as writer:
            writer.write(plaintext)
        return SharedFile(
            clip_id, buffer.getvalue(), plaintext, start, start + timedelta(seconds=seconds)
        )

    def upload_headers(
        self,
        device: EnrolledDevice,
        ask_id: str,
        shared: SharedFile,
        *,
        body: bytes | None = None,
        manifest_key: Ed25519PrivateKey | None = None,
        manifest_changes: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        data = shared.data if body is None else body
        key = manifest_key or self.ask_keys[ask_id]
        fields: dict[str, Any] = {
            "clip_id": shared.clip_id,
            "device_key": public_key_text(key.public_key()),
            "start": format_time(shared.start),
            "end": format_time(shared.end),
            "plaintext_sha256": hashlib.sha256(shared.plaintext).hexdigest(),
            "ciphertext_sha256": hashlib.sha256(shared.data).hexdigest(),
            "ciphertext_size": len(shared.data),
        } | (manifest_changes or {})
        document = sign_manifest(ClipManifest(**fields), key)
        path = f"/api/device/asks/{ask_id}/clips/{shared.clip_id}"
        headers = self.community.device_headers(device, "PUT", path, data, timestamp=self.stamp())
        headers[consent.MANIFEST_HEADER] = consent.manifest_header(document)
        headers["Content-Type"] = "application/octet-stream"
        return headers

    def upload(
        self, device: EnrolledDevice, ask_id: str, shared: SharedFile, **options: Any
    ) -> httpx.Response:
        body = options.pop("body", None)
        data = shared.data if body is None else body
        headers = self.upload_headers(device, ask_id, shared, body=data, **options)
        return self.client.put(  # type: ignore[no-any-return]
            f"/api/device/asks/{ask_id}/clips/{shared.clip_id}", content=data, headers=headers
        )

    def shared(self, request_id: int, agency: Agency | None = None) -> list[dict[str, Any]]:
        agency = agency or self.agency
        response = self.client.get(
            f"/api/requests/{request_id}/shared", headers=self.community.auth(agency.requester)
        )
        assert response.status_code == 200, response.text
        return list(response.json())


def make_world(community: Community) -> World:
    placeholder = World(community, None, None)  # type: ignore[arg-type]
    agency = placeholder.new_agency("Testshire Police")
    return World(community, agency, community.person(Role.reviewer))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def nonces_used(community: Community, device: EnrolledDevice) -> int:
    """How many signed-call nonces the device has burned (what the server remembers)."""
    with community.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(DeviceNonce)
                .where(DeviceNonce.device_id == device.id)
            )
            or 0
        )
