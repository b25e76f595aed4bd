"""Building a community for tests: people of each role, agencies, logins, tokens, devices.

Reuse it from any server-side test:

    def test_something(community: Community) -> None:
        admin = community.person(Role.admin)
        response = community.client.get("/api/people", headers=community.auth(admin))

People and agencies are created through the real services (so they are logged like any other
change) in their own committed transaction; `login` goes through the real endpoint.
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.agencies import service as agencies
from app.audit import integrator
from app.models import metadata
from app.permissions import Role
from porchlight.age import generate_identity
from porchlight.client import Enrolment, raw_public_key, sign_device_call

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_numbers = itertools.count(1)


def _polymod(values: list[int]) -> int:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(generators):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def bech32_encode(hrp: str, data: bytes) -> str:
    """BIP 173 bech32 (no length limit, as age uses it)."""
    acc, bits, values = 0, 0, []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            values.append((acc >> bits) & 31)
    if bits:
        values.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _polymod(expanded + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def x25519_recipient() -> str:
    """A well-formed age X25519 recipient (random key)."""
    return bech32_encode("age", os.urandom(32))


def pq_recipient() -> str:
    """A real post-quantum (mlkem768x25519) age recipient, as agencies should register."""
    return str(generate_identity().recipient())


class Clock:
    """The app's injectable clock: real time plus an offset tests can advance."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class Person:
    id: int
    username: str
    password: str
    role: Role
    agency_id: int | None
    # An API token for this person (Bearer); see Community.auth.
    token: str


@dataclass
class EnrolledDevice:
    id: int
    credential: str
    private_key: Ed25519PrivateKey
    owner: Person

    @property
    def enrolment(self) -> Enrolment:
        return Enrolment(self.id, self.credential)


class Community:
    """Helpers over one app and its TestClient."""

    def __init__(self, app: FastAPI, client: TestClient) -> None:
        self.app = app
        self.client = client

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A committed-at-exit session on the app's database (like one request)."""
        with self.app.state.sessionmaker() as session:
            yield session
            session.commit()

    def now(self) -> datetime:
        return self.app.state.clock()  # type: ignore[no-any-return]

    def agency(self, name: str | None = None) -> int:
        """Register an agency (by a fresh admin) and return its id."""
        admin = self.person(Role.admin)
        with self.session() as session:
            by = session.get(User, admin.id)
            assert by is not None
            agency = agencies.create_agency(
                session,
                by,
                name or f"Agency {next(_numbers)}",
                "Testshire",
                pq_recipient(),
                self.now(),
            )
            return agency.id

    def person(
        self,
        role: Role,
        *,
        agency_id: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Person:
        """Create a person of `role` (requesters get a new agency unless one is given)."""
        if role is Role.requester and agency_id is None:
            agency_id = self.agency()
        number = next(_numbers)
        username = username or f"{role.value}{number}"
        password = password or f"lantern-{number}-quiet-harbour"
        with self.session() as session:
            user = accounts.create_user(
                session,
                self.app.state.password_hasher,
                username=username,
                password=password,
                role=role,
                agency_id=agency_id,
                actor="system",
                now=self.now(),
            )
            _, token = accounts.create_api_token(session, user, "tests", self.now())
            return Person(user.id, username, password, role, agency_id, token)

    def auth(self, person: Person) -> dict[str, str]:
        return {"Authorization": f"Bearer {person.token}"}

    def login(self, person: Person, client: TestClient | None = None) -> str:
        """Sign in through the API (sets the cookie on the client); returns the CSRF token."""
        client = client or self.client
        response = client.post(
            "/api/session", json={"username": person.username, "password": person.password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["csrf_token"])

    def enrol_device(self, owner: Person, name: str = "porch") -> EnrolledDevice:
        """Enrol a new device for a resident through the real endpoints."""
        code = self.client.post("/api/devices/enrolment-codes", headers=self.auth(owner))
        assert code.status_code == 201, code.text
        key = Ed25519PrivateKey.generate()
        response = self.client.post(
            "/api/devices/enroll",
            json={
                "code": code.json()["code"],
                "public_key": base64.b64encode(raw_public_key(key)).decode(),
                "name": name,
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return EnrolledDevice(body["device_id"], body["credential"], key, owner)

    def device_headers(
        self,
        device: EnrolledDevice,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """Signed-call headers for `device` (see porchlight.client.sign_device_call)."""
        return sign_device_call(
            device.private_key,
            device.id,
            device.credential,
            method,
            path,
            body,
            timestamp=timestamp,
            nonce=nonce,
        )

    def counts(self) -> dict[str, int]:
        """Row count of every table: for "bad input changes nothing" assertions.

        Pending log entries are integrated first, so the server's background integrator
        moving them between two calls cannot change the counts.
        """
        with self.app.state.sessionmaker() as session:
            integrator.integrate_all(session)
            session.commit()
            return {
                table.name: session.scalar(select(func.count()).select_from(table)) or 0
                for table in metadata.sorted_tables
            }
