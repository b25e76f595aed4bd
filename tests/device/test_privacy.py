"""Issue 5, point 3: no plaintext video in any file the agent writes, and exported clips decode
with the privacy-masked pixels black."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import av

from device.clipstore import ClipStore
from device.keys import load_device_key
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

REPO = Path(__file__).resolve().parents[2]
PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")
PLAINTEXT = [b"ftyp", b"moof", b"mdat", b"moov"]
ANNEX_B = re.compile(rb"\x00\x00\x01[\x65\x67\x68\x41\x06]|\x00\x00\x00\x01[\x65\x67\x68\x41\x06]")
MASK = "[[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]]"  # the top-left quarter


def plaintext_found(data: bytes) -> list[str]:
    found = [marker.decode() for marker in PLAINTEXT if marker in data]
    if ANNEX_B.search(data):
        found.append("Annex-B start code")
    return found


def test_recording_writes_no_plaintext_and_masks_are_black(
    device_dir: DeviceDir, tmp_path: Path
) -> None:
    video = require_testdata("video", "car-detection.mp4")
    device_dir.write_config(**{"privacy_masks = []": f"privacy_masks = {MASK}"})
    env = os.environ | {"TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(REPO)}
    (tmp_path / "tmp").mkdir()
    agent = subprocess.Popen(
        [
            PORCHLIGHT,
            "device",
            "run",
            "--data-dir",
            str(device_dir.path),
            "--source",
            str(video),
        ],  # real time: the scan runs while it records
        env=env,
        stderr=subprocess.PIPE,
    )
    seen: dict[Path, bytes] = {}
    stop = threading.Event()

    def scan() -> None:
        while not stop.is_set():
            for root in (device_dir.path, tmp_path / "tmp"):
                for path in root.rglob("*"):
                    if path.is_file():
                        with contextlib.suppress(FileNotFoundError):
                            seen[path] = path.read_bytes()
            time.sleep(0.05)

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        _, err = agent.communicate(timeout=90)
    finally:
        stop.set()
        scanner.join()
    assert agent.returncode == 0, err.decode()
    partials = [p for p in seen if p.name.endswith(".partial")]
    assert partials, "the scan never saw a clip being written"
    for path, data in seen.items():
        assert not plaintext_found(data), f"plaintext video in {path}: {plaintext_found(data)}"

    store = ClipStore(
        device_dir.path, device_public_key=load_device_key(device_dir.path).public_key()
    )
    clips = store.clips()
    assert clips
    for clip in clips:
        out = io.BytesIO()
        store.decrypt(clip.id, [device_dir.identity], out)
        assert out.getvalue()[4:8] == b"ftyp"
        with av.open(io.BytesIO(out.getvalue())) as container:
            assert not container.streams.audio
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) > 10
        h, w = frames[0].shape[:2]
        for frame in frames:
            masked = frame[2 : h // 2 - 2, 2 : w // 2 - 2]  # inside the mask, off its blurred edge
            kept = frame[h // 2 + 2 :, w // 2 + 2 :]
            assert masked.max() <= 16, "masked pixels must be black"
            assert kept.mean() > 30, "the rest of the picture is kept"
        # The standard age tool opens the same file.
        result = subprocess.run(
            ["age", "-d", "-i", str(device_dir.identity_file), str(store.clip_path(clip.id))],
            capture_output=True,
            check=True,
        )
        assert result.stdout == out.getvalue()
    store.close()


def test_scan_detects_plaintext() -> None:
    # The scanner itself must be able to fail.
    assert plaintext_found(b"....ftypisom")
    assert plaintext_found(b"\x00\x00\x00\x01\x67\x64")
    assert not plaintext_found(os.urandom(64))
