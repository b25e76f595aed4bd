"""Frame sources: file segments and the OpenCV source's reconnect with backoff."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from device.sources import FileSource, OpenCVSource, SourceError, open_source
from tests.testdata import require_testdata


def test_file_source_plays_segments_as_one_increasing_stream() -> None:
    video = require_testdata("video", "car-detection.mp4")
    source = FileSource(video, fast=True, segments=[(1.0, 2.0), (1.0, 2.0), (29.0, 99.0)])
    times = [frame.time for frame in source.frames()]
    assert all(b > a for a, b in itertools.pairwise(times))
    # 1 s twice at 12.5 fps, then the last ~1.2 s of the clip.
    assert 25 + 12 <= len(times) <= 25 + 17
    assert times[-1] == pytest.approx(3.2, abs=0.2)


def test_file_source_errors() -> None:
    with pytest.raises(SourceError, match="no such video file"):
        FileSource("/nonexistent.mp4")
    with pytest.raises(SourceError, match="picamera2"):
        open_source("picamera2", 640, 480, 10)


def test_opencv_source_reconnects_when_the_stream_goes_away(tmp_path: Path) -> None:
    video = require_testdata("video", "car-detection.mp4")
    link = tmp_path / "camera.mp4"  # a "camera" that is not there yet
    source = OpenCVSource(str(link), 768, 432, 12.5, max_backoff=0.5)
    threading.Timer(0.3, lambda: link.symlink_to(video)).start()
    frames = 0
    started = time.monotonic()
    for frame in source.frames():
        frames += 1
        assert frame.image.shape == (432, 768, 3)
        if frames == 377 + 50:  # past the end of the file: it reconnected and went on
            source.stop()
    assert frames == 377 + 50
    assert time.monotonic() - started >= 0.3
