"""A consent stopped before its choice was saved (Ctrl-C, a full card, a power cut) leaves
nothing behind, and never blocks the ask: it can be declined or consented again."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import device.sync as sync_module
from device.clipstore import ClipStore
from device.keys import load_device_key, parse_recipients
from device.sync import DeviceSync, SyncError
from porchlight.age import generate_identity
from tests.device.conftest import DeviceDir

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)


class FakeServer:
    """The device API's answers for one pending ask (the edge of the world for these tests)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        agency = generate_identity("x25519")
        self.ask: dict[str, Any] = {
            "ask_id": "a1",
            "state": "pending",
            "deadline": None,
            "request": {
                "id": "r1",
                "agency": "Police",
                "window_start": "2026-11-23T00:00:00Z",
                "window_end": "2026-11-24T00:00:00Z",
            },
            "agency_recipient": str(agency.recipient()),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/api/device/asks":
            return httpx.Response(200, json=[self.ask])
        if request.url.path.endswith("/decline"):
            return httpx.Response(200, json={"ask_id": "a1", "state": "declined"})
        if request.url.path.endswith("/consent"):
            return httpx.Response(200, json={"ask_id": "a1", "state": "consented"})
        return httpx.Response(201, json={})


@pytest.fixture
def enrolled(device_dir: DeviceDir) -> Iterator[tuple[DeviceDir, str]]:
    (device_dir.path / "enrolment.json").write_text(
        json.dumps({"server": "http://porchlight.test", "device_id": 1, "credential": "c" * 43})
    )
    store = ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )
    clip = store.begin(T0)
    body = os.urandom(300_000)  # larger than the file size limit below
    clip.write(body)
    clip_id = clip.seal(T0 + timedelta(seconds=30), 30.0, 0.2, hashlib.sha256(body).hexdigest()).id
    store.close()
    yield device_dir, clip_id


def device_sync(data_dir: Path, server: FakeServer) -> DeviceSync:
    return DeviceSync(data_dir, transport=httpx.MockTransport(server), retries=0)


def outbox_entries(data_dir: Path) -> list[str]:
    outbox = data_dir / "clips" / "outbox"
    return sorted(p.name for p in outbox.iterdir() if p.name != ".lock") if outbox.exists() else []


@pytest.mark.parametrize(
    "failure",
    [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
    ids=["ctrl-c", "disk-full"],
)
def test_a_consent_stopped_while_rewrapping_leaves_no_outbox(
    enrolled: tuple[DeviceDir, str], monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    device_dir, clip_id = enrolled
    server = FakeServer()

    def fail(*_args: object, **_kwargs: object) -> None:
        raise failure

    unlock = lambda: [device_dir.identity]  # noqa: E731
    with device_sync(device_dir.path, server) as sync, monkeypatch.context() as patch:
        patch.setattr(sync_module, "rewrap", fail)
        with pytest.raises((KeyboardInterrupt, SyncError)) as raised:
            sync.consent("a1", [clip_id], unlock)
    if isinstance(failure, OSError):
        assert isinstance(raised.value, SyncError)
        assert "cannot prepare the clips for sharing" in raised.value.message
        assert "No space left" in raised.value.message
        assert raised.value.hint is not None and "nothing was sent" in raised.value.hint
    assert outbox_entries(device_dir.path) == []
    assert server.calls == ["GET /api/device/asks"], "nothing was sent"
    store = ClipStore(
        device_dir.path, device_public_key=load_device_key(device_dir.path).public_key()
    )
    assert not store.get(clip_id).pinned
    store.close()
    # The ask is not stuck: it can still be declined.
    with device_sync(device_dir.path, server) as sync:
        assert sync.decline("a1")["state"] == "declined"
    assert server.calls[-1] == "POST /api/device/asks/a1/decline"


def test_an_outbox_without_state_is_stale_for_decline_and_consent(
    enrolled: tuple[DeviceDir, str],
) -> None:
    """What a power cut mid-rewrap leaves (no chance to clean up): decline and consent both
    treat it as the nothing it is."""
    device_dir, clip_id = enrolled
    stale = device_dir.path / "clips" / "outbox" / "a1"
    stale.mkdir(parents=True)
    (stale / f"{clip_id}.age.partial").write_bytes(b"half a rewrap")
    server = FakeServer()
    with device_sync(device_dir.path, server) as sync:
        with pytest.raises(SyncError, match="choose the clips to share"):
            sync.consent("a1", None, lambda: [device_dir.identity])
        assert not stale.exists()
        stale.mkdir()
        outcome = sync.consent("a1", [clip_id], lambda: [device_dir.identity])
    assert outcome.uploaded == [clip_id]
    stale.mkdir()
    with device_sync(device_dir.path, server) as sync:
        # The ask is consented on the fake server's side too, but locally nothing blocks it.
        assert sync.decline("a1")["state"] == "declined"
    assert not stale.exists()


def test_decline_waits_for_a_consent_in_progress(enrolled: tuple[DeviceDir, str]) -> None:
    device_dir, _ = enrolled
    server = FakeServer()
    with (
        device_sync(device_dir.path, server) as sync,
        sync._consent_lock(),
        device_sync(device_dir.path, server) as other,
        pytest.raises(SyncError, match="a 'porchlight device consent' is running"),
    ):
        other.decline("a1")
    assert "POST /api/device/asks/a1/decline" not in server.calls


CONSENT_UNDER_A_FILE_SIZE_LIMIT = """
import sys, resource
import httpx
import device.sync_cli as sync_cli
from device.sync import DeviceSync
from tests.device.test_consent_interrupted import FakeServer
from porchlight.cli import main

server = FakeServer()
sync_cli._sync = lambda args: DeviceSync(
    sync_cli.data_dir_of(args), transport=httpx.MockTransport(server), retries=0
)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # as 'ulimit -f' would
sys.exit(main(sys.argv[1:]))
"""


def test_consent_on_a_full_card_is_one_clear_error(
    enrolled: tuple[DeviceDir, str], tmp_path: Path
) -> None:
    device_dir, clip_id = enrolled
    done = subprocess.run(
        [sys.executable, "-c", CONSENT_UNDER_A_FILE_SIZE_LIMIT, "device", "consent", "a1",
         "--clips", clip_id, "--data-dir", str(device_dir.path),
         "--identity", str(device_dir.identity_file)],
        capture_output=True, text=True, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "porchlight: error: cannot prepare the clips for sharing" in done.stderr
    assert "File too large" in done.stderr
    assert "Traceback" not in done.stderr
    assert outbox_entries(device_dir.path) == []


def test_an_os_error_after_the_consent_was_saved_is_one_clear_error(
    enrolled: tuple[DeviceDir, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import device.sync_cli as sync_cli
    from porchlight.cli import main

    device_dir, clip_id = enrolled
    server = FakeServer()
    monkeypatch.setattr(
        sync_cli,
        "_sync",
        lambda args: device_sync(args.data_dir, server),
    )
    saves = []
    real_save = DeviceSync._save

    def save_then_fail(self: DeviceSync, ask_id: str, state: dict[str, Any]) -> None:
        saves.append(ask_id)
        if len(saves) == 2:  # recording that the consent was posted: the card is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, ask_id, state)

    monkeypatch.setattr(DeviceSync, "_save", save_then_fail)
    code = main(
        ["device", "consent", "a1", "--clips", clip_id, "--data-dir", str(device_dir.path),
         "--identity", str(device_dir.identity_file)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "porchlight: error: the consent to ask a1 stopped: [Errno 28] No space left" in err
    assert "continues where it stopped" in err
    # Saved before the failure: the next run finishes it.
    assert (device_dir.path / "clips" / "outbox" / "a1" / "state.json").exists()
