"""The command lines against a real server (uvicorn on loopback, SQLite): the server's refusals
reach the person as its own message on one line, and nothing is changed or sent."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.permissions import Role
from app.settings import Settings
from device.clipstore import ClipStore
from device.keys import load_device_key, parse_recipients
from device.sync import DeviceSync, SyncError
from porchlight.age import read_identity_file
from porchlight.cli import main
from tests.server.factories import Community, Person
from tests.server.live import live_server

PASSPHRASE = "a long enough passphrase for a test porch"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class World:
    url: str
    requester: Person
    reviewer: Person
    warrant: Path
    tmp: Path

    def request_args(self, hours: float = 2, radius: int = 450) -> list[str]:
        now = datetime.now(UTC)
        return [
            "--server", self.url, "--token", self.requester.token,
            "--court", "Testshire Crown Court", "--docket", "TC-1", "--judge", "HHJ Marlow",
            "--issued", (now - timedelta(days=5)).date().isoformat(),
            "--expires", (now + timedelta(days=10)).date().isoformat(),
            "--warrant-file", str(self.warrant), "--offence", "criminal damage",
            "--from", (now - timedelta(hours=hours)).isoformat(), "--to", now.isoformat(),
            "--lat", "51.504", "--lon", "-0.121", "--radius", str(radius),
        ]  # fmt: skip


# Client error paths do not depend on the database: run them on SQLite only.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def world(
    community: Community, database_url: str, settings: Settings, tmp_path: Path
) -> Iterator[World]:
    warrant = tmp_path / "warrant.pdf"
    warrant.write_bytes(b"%PDF-1.7 warrant")
    with live_server(database_url, settings.data_dir) as url:
        yield World(
            url,
            community.person(Role.requester),
            community.person(Role.reviewer),
            warrant,
            tmp_path,
        )


def test_requester_sees_the_servers_refusals(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "request", "status", "--server", world.url, "--token", "nope")
    assert code == 1
    assert "porchlight: error: the server refused (401)" in err
    assert "the token was refused" in err
    # Over policy: the server's 422 message, naming the field, is shown as is.
    code, _, err = run(capsys, "request", "submit", *world.request_args(hours=72))
    assert code == 1
    assert "porchlight: error: the server refused (422): window_end" in err
    assert "48" in err
    code, _, err = run(capsys, "request", "submit", *world.request_args(radius=5000))
    assert code == 1 and "(422)" in err and "radius" in err
    code, out, err = run(capsys, "request", "status", "--server", world.url,
                         "--token", world.requester.token)  # fmt: skip
    assert code == 0 and out == "" and "no requests" in err  # nothing was created
    code, _, err = run(capsys, "request", "status", "424242", "--server", world.url,
                       "--token", world.requester.token)  # fmt: skip
    assert code == 1 and "(404)" in err
    # A reviewer's token cannot file requests.
    code, _, err = run(
        capsys, "request", "submit",
        *[world.reviewer.token if a == world.requester.token else a for a in world.request_args()],
    )  # fmt: skip
    assert code == 1 and "(403)" in err
    assert "Traceback" not in err


def test_close_and_download_of_a_request_under_review(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "request", "submit", *world.request_args(), "--json")
    assert code == 0, err
    request = json.loads(out)
    assert request["warrant"]["document_sha256"] == hashlib.sha256(b"%PDF-1.7 warrant").hexdigest()
    auth = ["--server", world.url, "--token", world.requester.token]
    code, out, err = run(capsys, "request", "download", str(request["id"]), *auth,
                         "-o", str(world.tmp / "dl"))  # fmt: skip
    assert code == 0 and "nothing has been shared" in err
    assert not (world.tmp / "dl").exists()
    code, out, err = run(capsys, "request", "close", str(request["id"]), *auth)
    # Only an open request can be closed: an illegal transition is the server's 409, shown.
    assert code == 1 and "porchlight: error: the server refused (409)" in err
    code, out, err = run(capsys, "request", "status", str(request["id"]), *auth)
    assert code == 0 and f"request {request['id']}  submitted" in out
    assert "nothing shared (yet)" in out


def setup_home(
    world: World, community: Community, capsys: pytest.CaptureFixture[str], name: str, lat: float
) -> tuple[Path, Person]:
    """`device init` + `enroll` for a new resident, with the device located at (lat, -0.1201)."""
    passphrase = world.tmp / "passphrase"
    passphrase.write_text(PASSPHRASE)
    resident = community.person(Role.resident)
    data_dir = world.tmp / f"home-{name}"
    assert run(capsys, "device", "init", "--data-dir", str(data_dir),
               "--passphrase-file", str(passphrase), "--classic")[0] == 0  # fmt: skip
    code = community.client.post(
        "/api/devices/enrolment-codes", headers=community.auth(resident)
    ).json()["code"]
    assert run(capsys, "device", "enroll", "--server", world.url, "--code", code,
               "--data-dir", str(data_dir))[0] == 0  # fmt: skip
    device_id = json.loads((data_dir / "enrolment.json").read_text())["device_id"]
    located = community.client.put(
        f"/api/devices/{device_id}/location",
        json={"latitude": lat, "longitude": -0.1201},
        headers=community.auth(resident),
    )
    assert located.status_code == 200, located.text
    return data_dir, resident


def add_clips(data_dir: Path, *hours_ago: float) -> list[str]:
    """Seal small clips that started `hours_ago` through the device's real clip store."""
    config_text = (data_dir / "config.toml").read_text()
    recipient = next(line for line in config_text.splitlines() if "age1" in line)
    recipient = recipient[recipient.index("age1") :].split('"')[0]
    store = ClipStore(
        data_dir, device_key=load_device_key(data_dir), recipients=parse_recipients([recipient])
    )
    clip_ids = []
    for hours in hours_ago:
        start = datetime.now(UTC) - timedelta(hours=hours)
        clip = store.begin(start)
        body = f"not really a video, {hours} h ago".encode()
        clip.write(body)
        clip_ids.append(
            clip.seal(start + timedelta(seconds=5), 5.0, 0.5, hashlib.sha256(body).hexdigest()).id
        )
    store.close()
    return clip_ids


def open_request(world: World, community: Community, capsys: pytest.CaptureFixture[str]) -> int:
    code, out, err = run(capsys, "request", "submit", *world.request_args(), "--json")
    assert code == 0, err
    request_id = int(json.loads(out)["id"])
    with httpx.Client(base_url=world.url, headers=community.auth(world.reviewer)) as reviewer:
        approved = reviewer.post(
            f"/api/requests/{request_id}/review", json={"decision": "approve", "reason": "ok"}
        )
    assert approved.status_code == 200, approved.text
    return request_id


def device_asks(capsys: pytest.CaptureFixture[str], data_dir: Path) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "device", "asks", "--json", "--data-dir", str(data_dir))
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_device_consent_refusals_send_nothing(
    world: World, community: Community, capsys: pytest.CaptureFixture[str]
) -> None:
    passphrase = world.tmp / "passphrase"
    homes, residents = {}, {}
    for name, lat in (("A", 51.5012), ("B", 51.5021)):
        homes[name], residents[name] = setup_home(world, community, capsys, name, lat)
    key = load_device_key(homes["A"])
    # A clip recorded ten hours ago, outside the request's two-hour window, and one inside it.
    old_clip, new_clip = add_clips(homes["A"], 10, 1)
    open_request(world, community, capsys)

    def asks(home: str) -> list[dict[str, Any]]:
        return device_asks(capsys, homes[home])

    ask_a = asks("A")[0]
    ask_b = asks("B")[0]
    assert [c["id"] for c in ask_a["clips"]] == [new_clip]
    base = [
        "device",
        "consent",
        "--data-dir",
        str(homes["A"]),
        "--passphrase-file",
        str(passphrase),
    ]
    for clips, message in (
        (old_clip, "is not inside the request's window"),
        ("20990101T000000Z-ffffff", "no clip '20990101T000000Z-ffffff'"),
    ):
        code, _, err = run(capsys, *base, str(ask_a["ask_id"]), "--clips", clips)
        assert code == 1 and message in err, err
    # Another device's ask is not this device's to answer.
    code, _, err = run(capsys, *base, str(ask_b["ask_id"]), "--clips", new_clip)
    assert code == 1 and f"no ask {ask_b['ask_id']} for this device" in err
    assert asks("A")[0]["state"] == "pending" and asks("B")[0]["state"] == "pending"
    assert not list((homes["A"] / "clips").glob("outbox/*/"))
    # Declining twice: the second is refused by the server, clearly.
    decline = ["device", "decline", str(ask_b["ask_id"]), "--data-dir", str(homes["B"])]
    assert run(capsys, *decline)[0] == 0
    code, _, err = run(capsys, *decline)
    assert code == 1 and "porchlight: error: the server refused:" in err
    assert asks("B") == []

    # A consent whose upload was cut off, then revoked on the server by the resident: the next
    # run stops, unpins the clip and deletes the rewrapped copy and the per-ask key.
    with (
        DeviceSync(homes["A"], transport=DroppingUploads(), retries=0) as sync,
        pytest.raises(SyncError, match="failed"),
    ):
        sync.consent(
            str(ask_a["ask_id"]),
            [new_clip],
            lambda: read_identity_file(homes["A"] / "homeowner-identity.age", PASSPHRASE),
        )
    outbox = homes["A"] / "clips" / "outbox" / str(ask_a["ask_id"])
    assert (outbox / f"{new_clip}.age").exists() and (outbox / "state.json").exists()
    assert stat.S_IMODE((outbox / "state.json").stat().st_mode) == 0o600
    store = ClipStore(homes["A"], device_public_key=key.public_key())
    assert store.get(new_clip).pinned
    # The agent's crash recovery (run at every start) leaves the outbox alone.
    report = store.recover()
    assert not report.changed, report
    assert (outbox / f"{new_clip}.age").exists() and (outbox / "state.json").exists()
    revoked = community.client.post(
        f"/api/asks/{ask_a['ask_id']}/revoke", headers=community.auth(residents["A"])
    )
    assert revoked.status_code == 200, revoked.text
    code, _, err = run(capsys, "device", "consent", str(ask_a["ask_id"]), "--data-dir",
                       str(homes["A"]))  # fmt: skip
    assert code == 1 and "nothing more is uploaded" in err
    assert not outbox.exists()
    assert not store.get(new_clip).pinned
    store.close()


class DroppingUploads(httpx.HTTPTransport):
    """The network failing every clip upload (the consent itself gets through)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            raise httpx.ConnectError("connection reset by the test", request=request)
        return super().handle_request(request)


class LosingConsentAnswer(httpx.HTTPTransport):
    """The consent reaches the server, but its answer is lost on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/consent") and not self.lost:
            self.lost += 1
            response.close()
            raise httpx.ReadError("connection dropped by the test", request=request)
        return response


def test_a_consent_whose_answer_was_lost_completes_on_the_next_run(
    world: World, community: Community, capsys: pytest.CaptureFixture[str]
) -> None:
    home, _ = setup_home(world, community, capsys, "A", 51.5012)
    (clip,) = add_clips(home, 1)
    request_id = open_request(world, community, capsys)
    ask_id = str(device_asks(capsys, home)[0]["ask_id"])
    losing = LosingConsentAnswer()
    unlock = lambda: read_identity_file(home / "homeowner-identity.age", PASSPHRASE)  # noqa: E731
    with (
        DeviceSync(home, transport=losing, retries=0) as sync,
        pytest.raises(SyncError, match="cannot reach"),
    ):
        sync.consent(ask_id, [clip], unlock)
    assert losing.lost == 1
    assert device_asks(capsys, home)[0]["state"] == "consented"  # the server did record it
    # The rewrapped copy is lost too (say the SD card was swapped): the re-run rewraps again
    # and signs with the same per-ask key, posts the same receipt (a replay, 409), sees the
    # ask consented, and uploads.
    (home / "clips" / "outbox" / ask_id / f"{clip}.age").unlink()
    code, out, err = run(capsys, "device", "consent", ask_id, "--data-dir", str(home),
                         "--passphrase-file", str(world.tmp / "passphrase"))  # fmt: skip
    assert code == 0, err
    assert "again" in err
    assert f"shared 1 clip(s) with ask {ask_id}: {clip}" in out
    assert device_asks(capsys, home)[0]["uploaded_clip_ids"] == [clip]
    code, out, _ = run(capsys, "device", "asks", "--data-dir", str(home))
    assert f"you shared    {clip} (uploaded)" in out
    assert not list((home / "clips").glob("outbox/*/"))
    with httpx.Client(base_url=world.url, headers=community.auth(world.requester)) as requester:
        shared = requester.get(f"/api/requests/{request_id}/shared").json()
    assert [item["manifest"]["clip_id"] for item in shared] == [clip]
