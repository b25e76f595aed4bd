"""The device poll (`GET /api/device/asks`): replay and clock refusals, refused calls burn
nothing, last_seen_at at most once a minute, no fsync wait only for a poll that changes
nothing, old nonces forgotten by the scheduler, replays refused across server processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from app import scheduler
from app.audit.models import LogEntry
from app.devices import service as devices
from app.devices.models import Device
from app.permissions import Role
from app.settings import Settings
from tests.server.factories import Clock, Community, EnrolledDevice
from tests.server.live import live_server
from tests.server.requests.helpers import make_world, nonces_used

POLL = "/api/device/asks"


def _last_seen(community: Community, device: EnrolledDevice) -> object:
    with community.session() as session:
        return session.scalar(select(Device.last_seen_at).where(Device.id == device.id))


def _stamp(community: Community) -> int:
    return int(community.now().timestamp())


def test_poll_replay_and_stale_clock_are_refused(
    community: Community, client: TestClient, settings: Settings
) -> None:
    device = community.enrol_device(community.person(Role.resident))
    headers = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    first = client.get(POLL, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == []
    assert first.headers["content-type"] == "application/json"
    assert nonces_used(community, device) == 1

    replay = client.get(POLL, headers=headers)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["message"]

    stale = community.device_headers(
        device, "GET", POLL, timestamp=_stamp(community) - settings.device_clock_skew_seconds - 5
    )
    refused = client.get(POLL, headers=stale)
    assert refused.status_code == 401
    assert "clock" in refused.json()["message"]
    ahead = community.device_headers(
        device, "GET", POLL, timestamp=_stamp(community) + settings.device_clock_skew_seconds + 5
    )
    assert client.get(POLL, headers=ahead).status_code == 401
    # Neither refusal burned a nonce.
    assert nonces_used(community, device) == 1


def test_refused_polls_change_nothing(community: Community, client: TestClient) -> None:
    device = community.enrol_device(community.person(Role.resident))
    before = community.counts()
    forged = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    forged["X-Porchlight-Signature"] = community.device_headers(
        device, "GET", "/api/device/other", timestamp=_stamp(community)
    )["X-Porchlight-Signature"]
    wrong_credential = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    wrong_credential["Authorization"] = "Device dev_wrong"
    unknown_device = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    unknown_device["X-Porchlight-Device"] = "999999"
    bad_nonce = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    bad_nonce["X-Porchlight-Nonce"] = "not-hex"
    # A Latin-1 superscript two is a "digit" to str.isdigit() but not to int().
    odd_digit: dict[str, str | bytes] = {
        **community.device_headers(device, "GET", POLL, timestamp=_stamp(community)),
        "X-Porchlight-Device": b"\xb2",
    }
    odd_stamp: dict[str, str | bytes] = {
        **community.device_headers(device, "GET", POLL, timestamp=_stamp(community)),
        "X-Porchlight-Timestamp": b"\xb2",
    }
    cases: list[dict[str, str] | dict[str, str | bytes]] = [
        forged,
        wrong_credential,
        unknown_device,
        bad_nonce,
        odd_digit,
        odd_stamp,
        {},
    ]
    for headers in cases:
        response = client.get(POLL, headers=headers)
        assert response.status_code == 401
        assert response.json()["message"] == "device call not authenticated"
    assert community.counts() == before
    assert _last_seen(community, device) is None


def test_a_revoked_device_cannot_poll(community: Community, client: TestClient) -> None:
    resident = community.person(Role.resident)
    device = community.enrol_device(resident)
    revoked = client.post(f"/api/devices/{device.id}/revoke", headers=community.auth(resident))
    assert revoked.status_code == 200, revoked.text
    headers = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    assert client.get(POLL, headers=headers).status_code == 401


def test_last_seen_is_refreshed_at_most_once_a_minute(
    community: Community, client: TestClient, clock: Clock
) -> None:
    device = community.enrol_device(community.person(Role.resident))

    def poll() -> None:
        headers = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
        assert client.get(POLL, headers=headers).status_code == 200

    poll()
    first = _last_seen(community, device)
    assert first is not None
    clock.advance(seconds=30)
    poll()
    assert _last_seen(community, device) == first
    clock.advance(seconds=31)
    poll()
    refreshed = _last_seen(community, device)
    assert isinstance(refreshed, datetime) and isinstance(first, datetime)
    assert refreshed - first >= timedelta(seconds=61)


def test_first_delivery_is_logged_once(community: Community, client: TestClient) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    world.open_request()

    def deliveries() -> int:
        with community.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(LogEntry)
                    .where(LogEntry.action == "ask:deliver")
                )
                or 0
            )

    community.counts()  # integrates pending log entries first
    assert deliveries() == 0
    first = world.device_asks(device)
    assert len(first) == 1 and first[0]["state"] == "pending"
    assert first[0]["request"]["warrant"]["document_sha256"]
    community.counts()
    assert deliveries() == 1
    again = world.device_asks(device)
    assert again == first
    community.counts()
    assert deliveries() == 1


@pytest.mark.postgresql_only  # synchronous_commit is a PostgreSQL setting
def test_only_a_poll_that_changes_nothing_skips_the_fsync_wait(
    community: Community, settings: Settings
) -> None:
    assert settings.database_url.startswith("postgresql")
    device = community.enrol_device(community.person(Role.resident))

    def call(durable: bool) -> str:
        headers = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
        with community.app.state.sessionmaker() as session, session.begin():
            devices.check_call(
                session, settings, headers, "GET", POLL, b"", community.now(), durable=durable
            )
            setting = str(session.scalar(text("SHOW synchronous_commit")))
            if not durable:
                devices.make_durable(session)
                assert session.scalar(text("SHOW synchronous_commit")) == "on"
            return setting

    assert call(durable=True) == "on"
    assert call(durable=False) == "off"
    # SET LOCAL: the next transaction on the pooled connection is durable again.
    with community.app.state.sessionmaker() as session:
        assert session.scalar(text("SHOW synchronous_commit")) == "on"


def test_scheduler_forgets_nonces_past_twice_the_skew(
    community: Community, client: TestClient, settings: Settings, clock: Clock
) -> None:
    device = community.enrol_device(community.person(Role.resident))
    headers = community.device_headers(device, "GET", POLL, timestamp=_stamp(community))
    assert client.get(POLL, headers=headers).status_code == 200
    assert nonces_used(community, device) == 1
    skew = timedelta(seconds=settings.device_clock_skew_seconds)
    factory, store = community.app.state.sessionmaker, community.app.state.clip_store

    # Without a maximum age the scheduler keeps every nonce; within twice the skew it keeps it.
    scheduler.run_once(factory, store, community.now() + 3 * skew)
    report = scheduler.run_once(factory, store, community.now() + skew, 2 * skew)
    assert report.nonces_forgotten == 0
    assert nonces_used(community, device) == 1
    report = scheduler.run_once(
        factory, store, community.now() + 2 * skew + timedelta(seconds=1), 2 * skew
    )
    assert report.nonces_forgotten == 1
    assert nonces_used(community, device) == 0
    # Forgotten is safe: by then the old call fails the clock check instead.
    clock.advance(seconds=2 * settings.device_clock_skew_seconds + 1)
    replay = client.get(POLL, headers=headers)
    assert replay.status_code == 401
    assert "clock" in replay.json()["message"]


def test_replay_is_refused_across_two_server_processes(
    community: Community, database_url: str, tmp_path: Path
) -> None:
    device = community.enrol_device(community.person(Role.resident))
    with (
        live_server(database_url, tmp_path / "data") as first,
        live_server(database_url, tmp_path / "data") as second,
    ):
        # One after the other: the second process sees the first one's nonce.
        headers = community.device_headers(device, "GET", POLL, timestamp=int(time.time()))
        assert httpx.get(first + POLL, headers=headers).status_code == 200
        replay = httpx.get(second + POLL, headers=headers)
        assert replay.status_code == 401
        assert "replayed" in replay.json()["message"]

        # At the same moment, several times: exactly one copy of each call is accepted.
        def poll(server: str, headers: dict[str, str]) -> int:
            return httpx.get(server + POLL, headers=headers).status_code

        for _ in range(5):
            headers = community.device_headers(device, "GET", POLL, timestamp=int(time.time()))
            servers = [first, second, first, second]
            with ThreadPoolExecutor(len(servers)) as pool:
                statuses = list(pool.map(poll, servers, [headers] * len(servers)))
            assert sorted(statuses) == [200, 401, 401, 401], statuses


def test_server_run_refuses_zero_workers(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from porchlight.cli import main; sys.exit(main())",
            "server",
            "run",
            "--workers",
            "0",
        ],
        env={"PATH": "/usr/bin:/bin", "PORCHLIGHT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--workers must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
