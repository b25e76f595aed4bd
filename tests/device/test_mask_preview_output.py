"""`mask-preview` writes an unencrypted picture of the camera's view: only as a PNG or JPEG,
readable by its owner only, never over a file without --force, and a bad output path is one
clear error rather than an OpenCV traceback."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from porchlight.cli import main
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["device", *argv])
    return code, capsys.readouterr().err


def test_mask_preview_output_checks(
    device_dir: DeviceDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = require_testdata("video", "car-detection.mp4")
    base = ["mask-preview", "--source", str(video), "--data-dir", str(device_dir.path)]
    for name, message in (
        ("snap.txt", "does not name a PNG or JPEG image"),
        ("snap", "does not name a PNG or JPEG image"),
        ("missing/snap.png", "the directory"),
    ):
        code, err = run(capsys, *base, "-o", str(tmp_path / name))
        assert code == 1, name
        assert "porchlight: error:" in err and message in err, err
        assert "use a .png" not in err
    existing = tmp_path / "snap.png"
    existing.write_bytes(b"an earlier snapshot")
    code, err = run(capsys, *base, "-o", str(existing))
    assert code == 1 and "exists" in err and "--force" in err
    assert existing.read_bytes() == b"an earlier snapshot"
    code, err = run(capsys, *base, "-o", str(existing), "--force")
    assert code == 0, err
    assert existing.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    code, err = run(capsys, *base, "-o", str(tmp_path / "snap.JPG"))
    assert code == 0, err
    assert (tmp_path / "snap.JPG").read_bytes().startswith(b"\xff\xd8")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix.lower() in (".png", ".jpg")) == [
        "snap.JPG",
        "snap.png",
    ]


def test_mask_preview_help_and_guide() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "porchlight.cli", "device", "mask-preview", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    text = " ".join(done.stdout.split())
    assert "where to write the snapshot; the name must end in .png or .jpg" in text
    assert "--force" in text and "/dev/shm" in text
    guide = (REPO / "deploy" / "pi-install.md").read_text()
    assert "mask-preview -o /tmp/" not in guide and "mask-preview -o /dev/shm/" in guide
