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
import numpy as np

from device.clipstore import ClipStore
from device.encoder import FragmentedMP4Writer, H264Encoder
from device.keys import load_device_key
from tests.device.conftest import DeviceDir
from tests.testdata import require_testdata

REPO = Path(__file__).resolve().parents[2]
PORCHLIGHT = str(Path(sys.executable).parent / "porchlight")
PLAINTEXT = [b"ftyp", b"moof", b"mdat", b"moov"]
# A 3- or 4-byte start code then a NAL header (SEI, SPS, PPS, IDR or non-IDR slice). One hit
# can happen by chance in a SQLite page; H.264 in Annex-B form has several per frame.
ANNEX_B = re.compile(rb"\x00\x00\x01[\x06\x67\x68\x65\x41\x61\x25\x21]")
ANNEX_B_MIN = 3
MASK = "[[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]]"  # the top-left quarter


def plaintext_found(data: bytes) -> list[str]:
    found = [marker.decode() for marker in PLAINTEXT if marker in data]
    if len(ANNEX_B.findall(data)) >= ANNEX_B_MIN:
        found.append("Annex-B start codes")
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
    # The scanner itself must be able to fail: on the encoder's raw packets (Annex-B) and on
    # the fragmented MP4 the muxer makes of them.
    encoder = H264Encoder(320, 240, 10)
    packets = []
    for i in range(12):
        image = np.full((240, 320, 3), 40, np.uint8)
        image[50:120, 10 * i : 10 * i + 60] = 220
        packets += encoder.encode(image, i / 10)
    packets += encoder.flush()
    annex_b = b"".join(bytes(p) for p in packets)
    mp4 = io.BytesIO()
    writer = FragmentedMP4Writer(mp4, encoder)
    for packet in packets:
        writer.write(packet)
    writer.close()
    encoder.close()
    assert "Annex-B start codes" in plaintext_found(annex_b)
    assert {"ftyp", "moof", "mdat"} <= set(plaintext_found(mp4.getvalue()))
    assert not plaintext_found(os.urandom(1 << 16))
