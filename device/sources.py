"""Where frames come from: one interface over files, RTSP, USB webcams and Pi camera modules.

Every source yields `Frame`s (BGR uint8 pixels plus a time in seconds since the source
started). Live sources reconnect with exponential backoff when a stream drops, because an RTSP
camera rebooting at 3 am must not stop the agent for good. picamera2 is imported only when a
Pi camera module is asked for, so the agent installs anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source that cannot be opened at all (bad path, no such camera)."""


@dataclass(frozen=True)
class Frame:
    image: NDArray[Any]  # uint8 BGR, height x width x 3
    time: float  # seconds since the source started (media time for files)


class FrameSource(Protocol):
    fps: float

    def frames(self) -> Iterator[Frame]:
        """Frames in order until the source ends or `stop()` is called."""
        ...

    def stop(self) -> None: ...


def _bgr(frame: av.VideoFrame) -> NDArray[Any]:
    """The decoded frame as BGR.

    Plain 4:2:0 goes through OpenCV's SIMD I420->BGR (BT.601, the matrix the encoder converts
    back with) rather than swscale: faster, and swscale's BGR frames added ~13 MiB of peak
    RSS at 1080p. Anything else (full-range, odd sizes, other layouts) is left to swscale.
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


class FileSource:
    """A video file decoded with PyAV; ``fast`` skips real-time pacing.

    ``segments`` plays [start, end) second ranges in order as one continuous stream (times
    stay increasing), which is how tests build long empty stretches from a few empty seconds.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fast: bool = False,
        segments: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"no such video file: {self.path}")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise SourceError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 25.0
                duration = (
                    float(stream.duration * stream.time_base)
                    if stream.duration and stream.time_base
                    else None
                )
                if duration is None and container.duration:
                    duration = container.duration / 1_000_000
        except av.error.FFmpegError as error:
            raise SourceError(f"cannot read {self.path}: {error}") from None
        self.duration = duration
        self.fast = fast
        self.segments = list(segments) if segments else [(0.0, float("inf"))]
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _decode(self, start: float, end: float) -> Iterator[tuple[float, NDArray[Any]]]:
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            first: float | None = None
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                if first is None:
                    first = t
                t -= first  # files may start at a non-zero pts
                if t < start - 1e-6:
                    continue
                if t >= end - 1e-6 or self._stop.is_set():
                    return
                image = _bgr(frame)
                del frame  # the decoder may reuse or free its picture while we wait
                yield t, image
                del image

    def frames(self) -> Iterator[Frame]:
        offset = 0.0
        step = 1.0 / self.fps
        began = time.monotonic()
        for start, end in self.segments:
            last = start
            for t, image in self._decode(start, end):
                out = offset + (t - start)
                if not self.fast:
                    delay = began + out - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                last = t
                yield Frame(image, out)
                # Drop our reference before decoding the next frame, so that at 1080p two
                # BGR frames (12 MiB) are not alive at once when the consumer lets go of it.
                del image
            if self._stop.is_set():
                return
            offset += (last - start) + step


class OpenCVSource:
    """A USB camera index, an RTSP/HTTP URL or a device path through cv2.VideoCapture."""

    def __init__(
        self,
        spec: str,
        width: int,
        height: int,
        fps: float,
        *,
        max_backoff: float = 30.0,
    ) -> None:
        self.spec = spec
        self.width, self.height, self.fps = width, height, fps
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._capture: Any = None

    def stop(self) -> None:
        self._stop.set()

    def _open(self) -> Any:
        target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            return None
        if isinstance(target, int):
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        return capture

    def frames(self) -> Iterator[Frame]:
        began = time.monotonic()
        backoff = 1.0
        capture = None
        try:
            while not self._stop.is_set():
                if capture is None:
                    capture = self._open()
                    if capture is None:
                        log.warning("camera %s unavailable; retrying in %.0f s", self.spec, backoff)
                        if self._stop.wait(backoff):
                            return
                        backoff = min(backoff * 2, self.max_backoff)
                        continue
                    log.info("camera %s connected", self.spec)
                ok, image = capture.read()
                if not ok or image is None:
                    # A dropped stream: reconnect rather than give up.
                    log.warning("camera %s stopped delivering frames; reconnecting", self.spec)
                    capture.release()
                    capture = None
                    continue
                backoff = 1.0
                yield Frame(image, time.monotonic() - began)
        finally:
            if capture is not None:
                capture.release()


class Picamera2Source:
    """A Raspberry Pi camera module through picamera2 (present only on Raspberry Pi OS)."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "source 'picamera2' needs the picamera2 package "
                "(sudo apt install python3-picamera2)"
            ) from None
        self.fps = fps
        self._camera = Picamera2()
        # "RGB888" in picamera2 is BGR byte order in memory, which is what OpenCV expects.
        config = self._camera.create_video_configuration(
            main={"size": (width, height), "format": "RGB888"},
            controls={"FrameRate": fps},
        )
        self._camera.configure(config)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def frames(self) -> Iterator[Frame]:
        self._camera.start()
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                image = self._camera.capture_array("main")
                yield Frame(np.ascontiguousarray(image[:, :, :3]), time.monotonic() - began)
        finally:
            self._camera.stop()


def open_source(
    spec: str, width: int, height: int, fps: float, *, fast: bool = False
) -> FrameSource:
    """The source a config string names: "picamera2", a digit, a URL, or a file path."""
    if spec == "picamera2":
        return Picamera2Source(width, height, fps)
    if spec.isdigit() or "://" in spec or spec.startswith("/dev/"):
        return OpenCVSource(spec, width, height, fps)
    return FileSource(spec, fast=fast)
