"""The pre-roll is kept as encoded GOPs with bounded memory, and clips start pre_roll early."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import av
import numpy as np

from device.clipstore import ClipStore
from device.encoder import H264Encoder, packet_seconds
from device.keys import load_device_key, parse_recipients
from device.recorder import Recorder
from tests.device.conftest import DeviceDir

WALL = datetime(2026, 5, 1, tzinfo=UTC)


def test_pre_roll_is_bounded_gops_and_clip_starts_five_seconds_early(device_dir: DeviceDir) -> None:
    store = ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )
    fps = 10.0
    encoder = H264Encoder(320, 240, fps, keyframe_seconds=1.0)
    recorder = Recorder(encoder, store, wall_start=WALL, pre_roll=5.0, post_roll=3.0, max_clip=60)
    rng = np.random.default_rng(1)
    for i in range(300):  # 30 s with no motion: nothing recorded, buffer stays bounded
        t = i / fps
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # incompressible noise
        recorder.push(encoder.encode(image, t), t, False, 0.0)
        if recorder._buffer:
            span = t - packet_seconds(recorder._buffer[0])
            assert span <= 5.0 + 1.0 + 0.05, "at most pre-roll plus one GOP is kept"
    assert store.clips() == []
    raw_pre_roll = 6 * fps * 240 * 320 * 3  # what 6 s of raw frames would take
    assert recorder.peak_buffered_bytes < raw_pre_roll / 4  # compressed packets, even of noise
    for i in range(300, 320):  # 2 s of motion, then 4 s quiet to pass the post-roll
        t = i / fps
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        recorder.push(encoder.encode(image, t), t, i < 320, 0.5)
    for i in range(320, 360):
        t = i / fps
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        recorder.push(encoder.encode(image, t), t, False, 0.0)
    recorder.close(encoder.flush())
    clips = store.clips()
    assert len(clips) == 1
    start = (clips[0].start - WALL).total_seconds()
    end = (clips[0].end - WALL).total_seconds()
    assert 24.0 <= start <= 25.0  # the keyframe at or before 30 - 5 s
    assert 31.9 + 3.0 - 0.2 <= end <= 36.0
    out = io.BytesIO()
    store.decrypt(clips[0].id, [device_dir.identity], out)
    out.seek(0)
    with av.open(out) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round((end - start) * fps)
    store.close()
