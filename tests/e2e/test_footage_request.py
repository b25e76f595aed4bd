"""Issue 6, point 1: a footage request end to end, with real parts only.

A real server (uvicorn on loopback) on SQLite or PostgreSQL; two camera agents in their own
data directories, each set up with `porchlight device init` + `enroll` and recording a real clip
with `porchlight device run --fast`; a requester filing with `porchlight request submit`; a
reviewer approving; resident A consenting to one clip (after a wrong passphrase and a dropped
upload) and resident B declining; the requester downloading and decrypting with the agency
identity. The decrypted video equals resident A's own `porchlight device export` byte for byte,
and no requester response says anything about resident B.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.accounts.models import User
from app.agencies import service as agencies
from app.permissions import Role
from app.settings import Settings
from device.clipstore import ClipStore
from device.keys import load_device_key
from device.sync import DeviceSync, SyncError
from porchlight import request_cli
from porchlight.age import generate_identity, write_identity_file
from porchlight.cli import main
from porchlight.client import PorchlightClient
from porchlight.manifest import public_key_text
from tests.server.factories import Community, Person
from tests.server.live import live_server
from tests.testdata import require_testdata

PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")
PASSPHRASE = "correct horse battery staple porch"
# Area centre and the two homes: both within 450 m, and no home's coarse coordinates
# (51.501 / 51.502) is a substring of anything the requester itself sent.
AREA = {"lat": 51.504, "lon": -0.121, "radius": 450}
HOMES = {"A": (51.5012, -0.1195), "B": (51.5021, -0.1203)}


@dataclass
class Recorded:
    """Every response the requester's client received: status, content type and body text."""

    responses: list[tuple[str, int, str]] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/octet-stream"):
            # A clip's ciphertext: record the headers only (they are the visible metadata).
            self.responses.append(
                (str(response.url), response.status_code, json.dumps(dict(response.headers)))
            )
            return
        response.read()
        self.responses.append((str(response.url), response.status_code, response.text))

    def client(self, server: str, token: str, *, allow_http: bool = False) -> PorchlightClient:
        client = PorchlightClient(server, token=token, allow_http=allow_http)
        client.http.event_hooks["response"].append(self.hook)
        return client


@dataclass
class Home:
    name: str
    resident: Person
    data_dir: Path
    device_id: int = 0


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = cli(capsys, *argv)
    assert code == 0, f"porchlight {' '.join(argv)} failed: {err}"
    return out


def age_payload(data: bytes) -> bytes:
    """What follows an age header ("--- <MAC>" line, c2sp.org/age): nonce and STREAM chunks."""
    mac_line = data.index(b"\n--- ") + 1
    return data[data.index(b"\n", mac_line) + 1 :]


def keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


class FailingFirstUpload(httpx.HTTPTransport):
    """The network dropping one upload: the first clip PUT never reaches the server."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and not self.dropped:
            self.dropped += 1
            raise httpx.ConnectError("connection reset by the test", request=request)
        return super().handle_request(request)


@pytest.fixture
def short_video() -> Path:
    # 30 s of a car park with three passing cars: one motion clip, about 6 s with --fast.
    return require_testdata("video", "car-detection.mp4")


def test_footage_request_end_to_end(
    community: Community,
    database_url: str,
    settings: Settings,
    tmp_path: Path,
    short_video: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    began = time.monotonic()
    # -- the community: an agency whose identity only this test (the "agency") holds ----------
    agency_identity = generate_identity()
    agency_identity_file = tmp_path / "agency-identity.txt"
    write_identity_file(agency_identity_file, agency_identity, None)
    admin = community.person(Role.admin)
    with community.session() as session:
        by = session.get(User, admin.id)
        assert by is not None
        agency_id = agencies.create_agency(
            session,
            by,
            "Testshire Police",
            "Testshire",
            str(agency_identity.recipient()),
            community.now(),
        ).id
    requester = community.person(Role.requester, agency_id=agency_id)
    reviewer = community.person(Role.reviewer)
    homes = {
        name: Home(name, community.person(Role.resident), tmp_path / f"home-{name}")
        for name in HOMES
    }
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    wrong_passphrase = tmp_path / "wrong"
    wrong_passphrase.write_text("not the passphrase\n")
    recorded = Recorded()
    monkeypatch.setattr(request_cli, "make_client", recorded.client)

    # The live server shares the in-process app's data directory: one log key, one clip store.
    with live_server(database_url, settings.data_dir) as url:
        # -- two homes: init, enrol, locate, record a real clip (both agents at once) ---------
        for home in homes.values():
            ok(
                capsys,
                "device",
                "init",
                "--data-dir",
                str(home.data_dir),
                "--passphrase-file",
                str(passphrase_file),
                "--source",
                str(short_video),
            )
            code = community.client.post(
                "/api/devices/enrolment-codes", headers=community.auth(home.resident)
            ).json()["code"]
            ok(
                capsys,
                "device",
                "enroll",
                "--server",
                url,
                "--code",
                code,
                "--data-dir",
                str(home.data_dir),
                "--name",
                f"porch-{home.name}",
            )
            home.device_id = json.loads((home.data_dir / "enrolment.json").read_text())["device_id"]
            lat, lon = HOMES[home.name]
            located = community.client.put(
                f"/api/devices/{home.device_id}/location",
                json={"latitude": lat, "longitude": lon},
                headers=community.auth(home.resident),
            )
            assert located.status_code == 200, located.text
        agents = [
            subprocess.Popen(
                [
                    PORCHLIGHT,
                    "device",
                    "run",
                    "--data-dir",
                    str(home.data_dir),
                    "--source",
                    str(short_video),
                    "--fast",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for home in homes.values()
        ]
        for agent in agents:
            _, agent_err = agent.communicate(timeout=120)
            assert agent.returncode == 0, agent_err.decode()
        clips = {
            name: json.loads(ok(capsys, "device", "clips", "--json", "--data-dir", str(h.data_dir)))
            for name, h in homes.items()
        }
        assert all(len(c) >= 1 for c in clips.values()), clips
        clip_a = clips["A"][0]["id"]

        # -- the requester files a warrant-backed request ------------------------------------
        now = datetime.now(UTC)
        warrant_pdf = tmp_path / "warrant.pdf"
        warrant_pdf.write_bytes(b"%PDF-1.7\n% a search warrant, signed by the judge\n")
        submitted = json.loads(
            ok(
                capsys,
                "request",
                "submit",
                "--server",
                url,
                "--token",
                requester.token,
                "--court",
                "Testshire Crown Court",
                "--docket",
                "TC-2026-0042",
                "--judge",
                "HHJ Marlow",
                "--issued",
                (now - timedelta(days=1)).date().isoformat(),
                "--expires",
                (now + timedelta(days=30)).date().isoformat(),
                "--warrant-file",
                str(warrant_pdf),
                "--offence",
                "theft of a bicycle",
                "--from",
                (now - timedelta(hours=2)).isoformat(),
                "--to",
                (now + timedelta(hours=2)).isoformat(),
                "--lat",
                str(AREA["lat"]),
                "--lon",
                str(AREA["lon"]),
                "--radius",
                str(AREA["radius"]),
                "--json",
            )
        )
        request_id = str(submitted["id"])
        assert submitted["state"] == "submitted"
        with httpx.Client(base_url=url, headers=community.auth(reviewer)) as as_reviewer:
            review = as_reviewer.post(
                f"/api/requests/{request_id}/review",
                json={"decision": "approve", "reason": "warrant checked against the court list"},
            )
        assert review.status_code == 200, review.text
        assert review.json()["state"] == "open"

        # -- each home sees the full request and its own clips in the window -----------------
        asks = {
            name: json.loads(
                ok(capsys, "device", "asks", "--json", "--data-dir", str(home.data_dir))
            )
            for name, home in homes.items()
        }
        for name, listed in asks.items():
            assert len(listed) == 1, (name, listed)
            ask = listed[0]
            assert ask["state"] == "pending"
            assert ask["request"]["warrant"]["docket_number"] == "TC-2026-0042"
            assert ask["request"]["offence"] == "theft of a bicycle"
            assert ask["agency_recipient"] == str(agency_identity.recipient())
            assert [c["id"] for c in ask["clips"]] == [c["id"] for c in clips[name]]
        text = ok(capsys, "device", "asks", "--data-dir", str(homes["A"].data_dir))
        assert "Testshire Crown Court" in text and "HHJ Marlow" in text and clip_a in text
        ask_a, ask_b = asks["A"][0]["ask_id"], asks["B"][0]["ask_id"]
        data_a = str(homes["A"].data_dir)

        # -- resident A: a wrong passphrase sends nothing ------------------------------------
        code, _, err = cli(
            capsys,
            "device",
            "consent",
            str(ask_a),
            "--clips",
            clip_a,
            "--data-dir",
            data_a,
            "--passphrase-file",
            str(wrong_passphrase),
        )
        assert code == 1 and "porchlight: error: cannot open the homeowner identity" in err
        again = json.loads(ok(capsys, "device", "asks", "--json", "--data-dir", data_a))
        assert again[0]["state"] == "pending"
        assert not list((homes["A"].data_dir / "clips").glob("outbox/*/"))

        # -- resident A consents; the upload is dropped once; a re-run finishes it ------------
        dropping = FailingFirstUpload()
        with (
            DeviceSync(homes["A"].data_dir, transport=dropping, retries=0) as sync,
            pytest.raises(SyncError, match=r"uploading clip .* failed"),
        ):
            sync.consent(str(ask_a), [clip_a], lambda: _unlock(homes["A"].data_dir))
        assert dropping.dropped == 1
        store = ClipStore(
            homes["A"].data_dir, device_public_key=load_device_key(homes["A"].data_dir).public_key()
        )
        assert store.get(clip_a).pinned, "a clip waiting for upload must be pinned"
        out = ok(capsys, "device", "consent", str(ask_a), "--data-dir", data_a)
        assert f"shared 1 clip(s) with ask {ask_a}: {clip_a}" in out
        assert not store.get(clip_a).pinned
        store.close()
        assert not (homes["A"].data_dir / "clips" / "outbox" / str(ask_a)).exists()
        assert (
            json.loads(ok(capsys, "device", "asks", "--json", "--data-dir", data_a))[0]["state"]
            == "consented"
        )

        # -- resident B declines ---------------------------------------------------------------
        out = ok(capsys, "device", "decline", str(ask_b), "--data-dir", str(homes["B"].data_dir))
        assert f"declined ask {ask_b}" in out

        # -- the requester: status, then download and decrypt with the agency identity ---------
        status = ok(
            capsys, "request", "status", request_id, "--server", url, "--token", requester.token
        )
        assert "TC-2026-0042" in status
        downloads = tmp_path / "downloads"
        out = ok(
            capsys,
            "request",
            "download",
            request_id,
            "--server",
            url,
            "--token",
            requester.token,
            "-o",
            str(downloads),
            "-i",
            str(agency_identity_file),
        )
        videos = sorted(downloads.glob("*.mp4"))
        assert len(videos) == 1, out
        assert videos[0].name.endswith(f"-{clip_a}.mp4")
        assert not list(downloads.glob("*.partial"))

        # A second download into the same folder fetches nothing again (each fetch is logged).
        fetched = len([r for r in recorded.responses if '"application/octet-stream"' in r[2]])
        ok(capsys, "request", "download", request_id, "--server", url, "--token",
           requester.token, "-o", str(downloads), "-i", str(agency_identity_file))  # fmt: skip
        assert fetched == 1
        assert len([r for r in recorded.responses if '"application/octet-stream"' in r[2]]) == 1

        # -- the homeowner's own export of the same clip: byte for byte the same ----------------
        exported = tmp_path / "homeowner-export.mp4"
        ok(
            capsys,
            "device",
            "export",
            clip_a,
            "-o",
            str(exported),
            "--data-dir",
            data_a,
            "--passphrase-file",
            str(passphrase_file),
        )
        assert videos[0].read_bytes() == exported.read_bytes()
        assert exported.stat().st_size > 100_000

        # -- another agency's identity cannot open it: a clear error, no video written ---------
        other_identity = tmp_path / "other-agency.txt"
        write_identity_file(other_identity, generate_identity(), None)
        wrong_dir = tmp_path / "downloads-wrong-key"
        code, _, err = cli(capsys, "request", "download", request_id, "--server", url,
                           "--token", requester.token, "-o", str(wrong_dir),
                           "-i", str(other_identity))  # fmt: skip
        assert code == 1 and "cannot decrypt" in err and f"{clip_a}.age" in err
        assert "is this the identity of the agency" in err
        assert not list(wrong_dir.glob("*.mp4")) and not list(wrong_dir.glob("*.partial"))

        # -- a blob altered at rest on the server is refused by the requester's check ----------
        (blob,) = [p for p in settings.data_dir.rglob("*") if p.parent.name == "blobs"]
        # Sharing cost a header, not a re-encryption: the stored payload is the home's own.
        home_clip = (homes["A"].data_dir / "clips" / f"{clip_a}.age").read_bytes()
        assert age_payload(blob.read_bytes()) == age_payload(home_clip)
        assert blob.read_bytes() != home_clip  # a different header (the agency's recipient)
        data = bytearray(blob.read_bytes())
        data[-100] ^= 0x01  # one bit in the payload: same size, different SHA-256
        blob.write_bytes(bytes(data))
        tampered_dir = tmp_path / "downloads-again"
        code, out, err = cli(
            capsys,
            "request",
            "download",
            request_id,
            "--server",
            url,
            "--token",
            requester.token,
            "-o",
            str(tampered_dir),
            "-i",
            str(agency_identity_file),
        )
        assert code == 1, out
        assert "does not match its signed manifest" in err and "porchlight: error:" in err
        assert not [p for p in tampered_dir.glob("*") if p.suffix in {".age", ".mp4", ".partial"}]

        # -- and a direct look at what the requester's API shows -------------------------------
        with recorded.client(url, requester.token) as as_requester:
            listing = as_requester.get("/api/requests")
            shared = as_requester.get(f"/api/requests/{request_id}/shared")
    elapsed = time.monotonic() - began

    assert len(shared) == 1
    assert shared[0]["pseudonym"] and shared[0]["manifest"]["clip_id"] == clip_a
    # Signed by the per-ask key, never by a key that would link the resident across cases.
    assert shared[0]["manifest"]["device_key"] == shared[0]["signer_public_key"]
    device_key_a = public_key_text(load_device_key(homes["A"].data_dir).public_key())
    assert shared[0]["signer_public_key"] != device_key_a
    assert any(item["id"] == int(request_id) or str(item["id"]) == request_id for item in listing)
    _assert_nothing_about_b(recorded, homes, clips["B"])
    print(f"end to end in {elapsed:.1f} s")


def _unlock(data_dir: Path) -> list[Any]:
    from porchlight.age import read_identity_file

    return list(read_identity_file(data_dir / "homeowner-identity.age", PASSPHRASE))


def _assert_nothing_about_b(
    recorded: Recorded, homes: dict[str, Home], clips_b: list[dict[str, Any]]
) -> None:
    """No requester response names, counts or hints at resident B (or at any device)."""
    assert recorded.responses, "the requester's responses were not recorded"
    forbidden = [
        "Resident B",
        "declin",
        "pending",
        homes["B"].resident.username,
        homes["A"].resident.username,
        "porch-A",
        "porch-B",
        "51.501",
        "51.502",
        "51501",
        "51502",
        *(clip["id"] for clip in clips_b),
    ]
    for home in homes.values():
        forbidden.append(public_key_text(load_device_key(home.data_dir).public_key()))
    bad_keys = ("device", "ask", "count", "declin", "pending", "resident", "location", "latitude")
    for url, status, body in recorded.responses:
        assert status < 400, (url, status, body)
        for word in forbidden:
            assert word not in body, f"{url} reveals {word!r}: {body[:500]}"
        try:
            document = json.loads(body)
        except ValueError:
            continue
        for key in keys_of(document):
            # A shared manifest's `device_key` field holds the per-ask key (checked below).
            if key == "device_key":
                continue
            assert not any(part in key.lower() for part in bad_keys), f"{url} has key {key!r}"
