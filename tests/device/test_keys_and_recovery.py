"""A replaced or missing device key never costs footage: enroll refuses to make a key where
clips exist (and a failed enroll leaves none), and crash recovery sets aside, never deletes,
finished clips whose manifests do not verify."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.clipstore import ClipStore
from device.keys import DEVICE_KEY_NAME, create_device_key, load_device_key, parse_recipients
from porchlight.age import decryptor
from porchlight.cli import main
from tests.device.conftest import DeviceDir

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def open_store(device_dir: DeviceDir) -> ClipStore:
    return ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )


def seal(store: ClipStore, start: datetime, payload: bytes) -> str:
    clip = store.begin(start)
    clip.write(payload)
    return clip.seal(
        start + timedelta(seconds=30), 30.0, 0.1, hashlib.sha256(payload).hexdigest()
    ).id


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["device", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_failed_enroll_makes_no_key_where_clips_exist(
    device_dir: DeviceDir, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's reproduction: with the key moved away, 'enroll' used to create a new one
    before failing to reach the server, and the next 'run' deleted every clip."""
    store = open_store(device_dir)
    clip = seal(store, T0, b"front door" * 500)
    store.close()
    key_path = device_dir.path / DEVICE_KEY_NAME
    saved_key = key_path.read_bytes()
    key_path.unlink()
    code, _, err = run(
        capsys, "enroll", "--server", closed_port_url(), "--code", "X",
        "--data-dir", str(device_dir.path),
    )  # fmt: skip
    assert code == 1
    assert "has no device signing key" in err and "2 clip files" in err
    assert f"put the original {DEVICE_KEY_NAME} back" in err
    assert "Traceback" not in err and "cannot reach" not in err  # refused before any call
    assert not key_path.exists()
    # With the key back, everything is as it was.
    key_path.write_bytes(saved_key)
    store = open_store(device_dir)
    assert store.recover().kept == 1
    assert [c.id for c in store.clips()] == [clip]
    store.close()


def test_a_failed_enroll_of_a_new_device_leaves_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "new"
    code, _, err = run(
        capsys, "enroll", "--server", closed_port_url(), "--code", "X", "--data-dir", str(data_dir)
    )
    assert code == 1 and "cannot reach" in err
    assert not (data_dir / DEVICE_KEY_NAME).exists()


def test_recovery_sets_aside_clips_that_do_not_verify_and_deletes_only_unfinished_files(
    device_dir: DeviceDir, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(device_dir)
    payloads = [b"first clip" * 500, b"pinned clip" * 500, b"row lost" * 500]
    first, pinned, unindexed = (
        seal(store, T0 + timedelta(minutes=i), payload) for i, payload in enumerate(payloads)
    )
    store.set_pinned(pinned, True)
    store._db.execute("DELETE FROM clips WHERE id = ?", (unindexed,))
    ciphertexts = {c: store.clip_path(c).read_bytes() for c in (first, pinned, unindexed)}
    # An unfinished clip: its partial, and its manifest already renamed into place.
    (store.clips_dir / "20260301T000500Z-abcdef.age.partial").write_bytes(b"half a clip")
    (store.clips_dir / "20260301T000500Z-abcdef.json").write_bytes(b"{}")
    store.close()

    # The device key is replaced (as a failed enroll used to do).
    (device_dir.path / DEVICE_KEY_NAME).unlink()
    create_device_key(device_dir.path)
    store = open_store(device_dir)
    report = store.recover()
    assert report.partials_removed == ["20260301T000500Z-abcdef.age.partial"]
    assert report.manifests_removed == ["20260301T000500Z-abcdef.json"]
    assert sorted(report.quarantined) == sorted([first, pinned, unindexed])
    assert report.kept == 0 and store.clips() == []
    assert "set aside 3 clips that do not verify" in report.summary()
    assert not list(store.clips_dir.glob("*.age")) and not list(store.clips_dir.glob("*.json"))
    # Set aside as they were, manifests beside them, and they still decrypt.
    aside = device_dir.path / "quarantine"
    assert store.quarantined() == sorted(aside / f"{c}.age" for c in ciphertexts)
    for (clip_id, ciphertext), payload in zip(ciphertexts.items(), payloads, strict=True):
        assert (aside / f"{clip_id}.age").read_bytes() == ciphertext
        assert (aside / f"{clip_id}.json").exists()
        with (aside / f"{clip_id}.age").open("rb") as handle:
            assert decryptor(handle, [device_dir.identity]).read() == payload
    assert any("moved, still encrypted" in r.getMessage() for r in caplog.records)
    # A second recovery has nothing more to do.
    assert not store.recover().changed
    store.close()


def test_put_back_key_and_clips_are_taken_in_again(device_dir: DeviceDir) -> None:
    store = open_store(device_dir)
    clip = seal(store, T0, b"video" * 500)
    store.close()
    key = (device_dir.path / DEVICE_KEY_NAME).read_bytes()
    (device_dir.path / DEVICE_KEY_NAME).unlink()
    create_device_key(device_dir.path)
    store = open_store(device_dir)
    assert list(store.recover().quarantined) == [clip]
    store.close()
    # What the log tells the homeowner to do: the old key back, the clips back into clips/.
    (device_dir.path / DEVICE_KEY_NAME).write_bytes(key)
    for path in (device_dir.path / "quarantine").iterdir():
        os.rename(path, device_dir.path / "clips" / path.name)
    store = open_store(device_dir)
    report = store.recover()
    assert report.reindexed == [clip] and not report.quarantined
    out = io.BytesIO()
    store.decrypt(clip, [device_dir.identity], out)
    assert out.getvalue() == b"video" * 500
    store.close()
