"""The log table: canonical entries, RFC 6962 leaf hashes, no gaps, one entry per change."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.audit import service as audit
from app.audit.entry import MAX_ENTRY_BYTES, EntryError, encode_entry
from app.audit.models import LogEntry
from app.permissions import Role
from tests.server.factories import Community
from tests.server.log.helpers import integrate_log


def _entries(community: Community) -> list[LogEntry]:
    with community.session() as session:
        return list(session.scalars(select(LogEntry).order_by(LogEntry.index)))


def test_entry_bytes_are_canonical() -> None:
    moment = datetime(2026, 11, 22, 20, 53, 25, 123456, tzinfo=UTC)
    data = encode_entry(
        moment,
        "user:3",
        "invite:create",
        "invite:5",
        {"role": "resident", "agency": None, "ü": ["x", 1, True]},
        salt=bytes(range(16)),
    )
    assert (
        data
        == (
            '{"action":"invite:create","actor":"user:3","details":{"agency":null,'
            '"role":"resident","ü":["x",1,true]},'
            '"salt":"000102030405060708090a0b0c0d0e0f","subject":"invite:5",'
            '"time":"2026-11-22T20:53:25.123456Z","v":1}'
        ).encode()
    )
    assert (
        json.dumps(
            json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        == data
    )


@pytest.mark.parametrize(
    "actor,action,subject,details,message",
    [
        ("user:1", "invite:create", "invite:1", {"x": 1.5}, "float"),
        ("user:1", "invite:create", "invite:1", {"x": 2**60}, "range"),
        ("root", "invite:create", "invite:1", {}, "actor"),
        ("user:1", "Invite Create", "invite:1", {}, "action"),
        ("user:1", "invite:create", "", {}, "subject"),
        ("user:1", "invite:create", "invite:1", {"x": "a" * MAX_ENTRY_BYTES}, "bytes"),
    ],
)
def test_non_canonical_entries_are_refused(
    actor: str,
    action: str,
    subject: str,
    details: dict[str, object],
    message: str,
    community: Community,
) -> None:
    with community.session() as session:
        with pytest.raises(EntryError, match=message):
            audit.append(session, actor, action, subject, details)  # type: ignore[arg-type]
        assert audit.size(session) == 0


def test_append_numbers_without_gaps_and_rollback_leaves_none(community: Community) -> None:
    with community.session() as session:
        first = audit.append(session, "system", "test:one", "test:1", {"n": 1})
        second = audit.append(session, "system", "test:two", "test:2", {"n": 2})
    assert integrate_log(community.app) == 2
    with community.app.state.sessionmaker() as session:
        audit.append(session, "system", "test:rolled_back", "test:3", {})
        session.rollback()
    with community.session() as session:
        third = audit.append(session, "system", "test:three", "test:3", {})
    assert integrate_log(community.app) == 3
    rows = _entries(community)
    # Indexes in sequencing order; the rolled-back entry left neither an entry nor a gap.
    assert [row.seq for row in rows] == [first.seq, second.seq, third.seq]
    assert [row.index for row in rows] == [0, 1, 2]
    for row in rows:
        assert row.leaf_hash == hashlib.sha256(b"\x00" + row.entry).digest()
        decoded = json.loads(row.entry)
        assert (decoded["actor"], decoded["action"], decoded["subject"]) == (
            row.actor,
            row.action,
            row.subject,
        )


def test_every_state_change_is_logged_without_secrets(
    community: Community, client: TestClient
) -> None:
    community.agency()
    admin = community.person(Role.admin)
    invite = client.post(
        "/api/invites", headers=community.auth(admin), json={"role": "resident"}
    ).json()
    password = "copper-kettle-morning-42"
    client.post(
        "/api/invites/accept",
        json={"code": invite["code"], "username": "rowan", "password": password},
    )
    client.post("/api/session", json={"username": "rowan", "password": "not-the-password"})
    csrf = client.post("/api/session", json={"username": "rowan", "password": password}).json()[
        "csrf_token"
    ]
    token = client.post("/api/tokens", json={"name": "cli"}, headers={"X-CSRF-Token": csrf}).json()
    client.delete(f"/api/tokens/{token['id']}", headers={"X-CSRF-Token": csrf})
    resident = community.person(Role.resident)
    device = community.enrol_device(resident)
    client.put(
        f"/api/devices/{device.id}/location",
        headers=community.auth(resident),
        json={"latitude": 10.12345, "longitude": 20.6789},
    )
    client.post(f"/api/admin/devices/{device.id}/revoke", headers=community.auth(admin))
    client.delete("/api/session", headers={"X-CSRF-Token": csrf})
    integrate_log(community.app)
    rows = _entries(community)
    actions = {row.action for row in rows}
    assert {
        "user:create",
        "token:create",
        "agency:create",
        "invite:create",
        "invite:accept",
        "login:fail",
        "session:create",
        "token:revoke",
        "enrolment:create",
        "device:enrol",
        "device:locate",
        "device:revoke",
        "session:end",
    } <= actions
    assert [row.index for row in rows] == list(range(len(rows)))
    everything = b"\n".join(row.entry for row in rows)
    for secret in (password, invite["code"], token["token"], device.credential, "10.12", "20.67"):
        assert secret.encode() not in everything


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


# No deadline: other suites share the CPU, and slowness here is not what is tested.
@hypothesis_settings(deadline=None)
@given(details=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_encoding_is_a_fixed_point(details: dict[str, object]) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    data = encode_entry(moment, "system", "test:prop", "test:1", details)  # type: ignore[arg-type]
    decoded = json.loads(data)
    assert decoded["details"] == details
    again = encode_entry(
        moment, "system", "test:prop", "test:1", decoded["details"],
        salt=bytes.fromhex(decoded["salt"]),
    )  # fmt: skip
    assert again == data
    assert b"\n" not in data
