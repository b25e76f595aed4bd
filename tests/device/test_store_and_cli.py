"""Retention and pinning, manifests, the strict config, and CLI errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.clipstore import ClipStore, ClipStoreError
from device.config import ConfigError, parse_config
from device.keys import load_device_key
from device.retention import DiskUsage, enforce_retention
from porchlight.cli import main
from porchlight.manifest import ManifestError, verify_manifest
from tests.device.conftest import DeviceDir

REPO = Path(__file__).resolve().parents[2]
PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def seal(store: ClipStore, start: datetime, payload: bytes) -> str:
    clip = store.begin(start)
    clip.write(payload)
    import hashlib

    record = clip.seal(
        start + timedelta(seconds=30), 30.0, 0.1, hashlib.sha256(payload).hexdigest()
    )
    return record.id


def open_store(device_dir: DeviceDir) -> ClipStore:
    from device.keys import parse_recipients

    return ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )


def test_retention_by_age_and_space_never_deletes_pinned(device_dir: DeviceDir) -> None:
    store = open_store(device_dir)
    ids = [seal(store, T0 + timedelta(days=d), bytes([d]) * 20_000) for d in range(6)]
    store.set_pinned(ids[0], True)
    # 20 days after the first clip with a 17-day limit: clips 0-2 are too old, 0 is pinned.
    expired = enforce_retention(
        store, now=T0 + timedelta(days=20), max_age=timedelta(days=17), min_free_fraction=0.0
    )
    assert expired.expired == ids[1:3] and expired.pinned_kept == 1
    assert [c.id for c in store.clips()] == [ids[0], ids[3], ids[4], ids[5]]

    # A small card: capacity fits the clips; free space is what the clips leave.
    def usage(_: Path) -> DiskUsage:
        used = store.total_size()
        return DiskUsage(100_000, used, 100_000 - used)

    result = enforce_retention(
        store, now=T0, max_age=timedelta(days=100), min_free_fraction=0.45, disk_usage=usage
    )
    assert result.for_space == [ids[3], ids[4]]  # oldest unpinned first, until enough space
    assert [c.id for c in store.clips()] == [ids[0], ids[5]]
    result = enforce_retention(
        store, now=T0, max_age=timedelta(days=100), min_free_fraction=0.99, disk_usage=usage
    )
    assert result.for_space == [ids[5]] and result.still_short_of_space
    assert [c.id for c in store.clips()] == [ids[0]], "the pinned clip survives"
    store.set_pinned(ids[0], False)
    enforce_retention(
        store, now=T0 + timedelta(days=30), max_age=timedelta(days=14), min_free_fraction=0
    )
    assert store.clips() == []
    assert not list(store.clips_dir.iterdir())
    store.close()


def test_manifest_tamper_and_recovery(device_dir: DeviceDir) -> None:
    store = open_store(device_dir)
    good = seal(store, T0, b"video" * 1000)
    bad = seal(store, T0 + timedelta(minutes=1), b"other" * 1000)
    data = store.manifest_path(good).read_bytes()
    verify_manifest(data, store.device_public_key)
    for change in ({"end": "2026-03-01T00:09:00.000Z"}, {"extra": 1}, {"ciphertext_size": -1}):
        tampered = json.loads(data) | change
        with pytest.raises(ManifestError):
            verify_manifest(json.dumps(tampered).encode(), store.device_public_key)
    # Flip a ciphertext byte: verification fails; recovery of an unindexed copy sets it aside.
    path = store.clip_path(bad)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1
    path.write_bytes(raw)
    with pytest.raises(ClipStoreError):
        store.decrypt(bad, [device_dir.identity], io.BytesIO())
    store._db.execute("DELETE FROM clips")
    (store.clips_dir / "x.age.partial").write_bytes(b"junk")
    report = store.recover()
    assert report.reindexed == [good] and list(report.quarantined) == [bad]
    assert (device_dir.path / "quarantine" / f"{bad}.age").read_bytes() == raw
    assert report.partials_removed == ["x.age.partial"]
    assert [c.id for c in store.clips()] == [good]
    store.close()


def test_config_rejects_unknown_keys_and_bad_values(device_dir: DeviceDir) -> None:
    text = (device_dir.path / "config.toml").read_text()
    assert parse_config(text).recording.pre_roll_seconds == 5.0
    with pytest.raises(ConfigError, match="pre_rol_seconds"):
        parse_config(text.replace("pre_roll_seconds", "pre_rol_seconds"))
    with pytest.raises(ConfigError, match="colour: Extra inputs are not permitted"):
        parse_config("colour = 'red'\n" + text)
    with pytest.raises(ConfigError, match="at least 3 points"):
        parse_config(
            "privacy_masks = [[[0, 0], [1, 1]]]\n" + text.replace("privacy_masks = []", "")
        )
    with pytest.raises(ConfigError, match="TOML"):
        parse_config("[camera\n")


def run_cli(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [PORCHLIGHT, "device", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return result.returncode, result.stderr


def test_cli_errors_are_one_line_not_tracebacks(device_dir: DeviceDir, tmp_path: Path) -> None:
    data = ["--data-dir", str(device_dir.path)]
    cases = [
        (["clips", "--data-dir", str(tmp_path / "none")], "no camera agent set up"),
        (["export", "nope", "-o", str(tmp_path / "o.mp4"), *data], "no homeowner identity"),
        (
            [
                "export",
                "nope",
                "-o",
                str(tmp_path / "o.mp4"),
                "--identity",
                str(device_dir.identity_file),
                *data,
            ],
            "no clip 'nope'",
        ),
        (["run", "--fast", *data], "--fast needs --source"),
        (["run", "--source", str(tmp_path / "missing.mp4"), *data], "no such video file"),
        (["init", "--recipient", "age1nope", *data], "already set up"),
        (["init", "--recipient", "age1nope", "--data-dir", str(tmp_path / "new")], "not valid"),
    ]
    for args, message in cases:
        code, err = run_cli(*args)
        assert code != 0, args
        assert "porchlight: error:" in err and message in err, (args, err)
        assert "Traceback" not in err
    (device_dir.path / "config.toml").write_text("[camera]\nsauce = 1\n")
    code, err = run_cli("status", *data)
    assert code == 1 and "sauce" in err


def test_cli_init_clips_json_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    home = tmp_path / "pi"
    assert (
        main(
            [
                "device",
                "init",
                "--data-dir",
                str(home),
                "--passphrase-file",
                str(secret),
                "--classic",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("age1")
    sealed = (home / "homeowner-identity.age").read_bytes()
    assert b"AGE-SECRET-KEY" not in sealed.upper()
    from porchlight.age import read_identity_file

    assert read_identity_file(home / "homeowner-identity.age", "correct horse")
    assert main(["device", "clips", "--json", "--data-dir", str(home)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["device", "status", "--data-dir", str(home)]) == 0
    assert "clips            0" in capsys.readouterr().out


def test_mask_preview_shows_what_the_camera_keeps(device_dir: DeviceDir, tmp_path: Path) -> None:
    import cv2

    from tests.testdata import require_testdata

    video = require_testdata("video", "car-detection.mp4")
    mask = "[[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]]"
    device_dir.write_config(**{"privacy_masks = []": f"privacy_masks = {mask}"})
    out = tmp_path / "preview.png"
    code, err = run_cli(
        "mask-preview", "-o", str(out), "--source", str(video), "--data-dir", str(device_dir.path)
    )
    assert code == 0, err
    image = cv2.imread(str(out))
    assert image is not None
    h, w = image.shape[:2]
    assert image[5 : h // 2 - 5, 5 : w // 2 - 5].max() == 0
    assert image[h // 2 + 5 : h - 30, w // 2 + 5 :].mean() > 30
    assert image[h // 2, w // 4][2] > 200  # the mask's outline is drawn in red
