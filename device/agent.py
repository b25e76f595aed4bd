"""The agent loop: source -> privacy mask -> motion -> encoder -> recorder -> clip store.

Runs until the source ends or `stop` is set (SIGTERM/SIGINT in `porchlight device run`),
then seals the clip in progress so a clean shutdown loses nothing. Retention runs after each
clip and once a minute.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from device.agent_lock import AgentLock
from device.clipstore import ClipRecord, ClipStore, RecoveryReport
from device.config import DeviceConfig
from device.encoder import H264Encoder
from device.keys import DEVICE_KEY_NAME, load_device_key, parse_recipients
from device.masks import PrivacyMask, zone_mask
from device.motion import MotionDetector, MotionParams, motion_fraction
from device.recorder import Recorder
from device.retention import DiskUsageFn, enforce_retention, filesystem_usage
from device.sources import FrameSource
from porchlight.files import write_atomically

log = logging.getLogger(__name__)
STATUS_NAME = "status.json"


@dataclass
class RunSummary:
    frames: int = 0
    seconds: float = 0.0
    clips: int = 0
    deleted: int = 0
    recovery: RecoveryReport | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def open_store(config: DeviceConfig, data_dir: Path) -> ClipStore:
    return ClipStore(
        data_dir,
        device_key=load_device_key(data_dir),
        recipients=parse_recipients(config.keys.recipients),
    )


def _write_status(data_dir: Path, status: dict[str, object]) -> None:
    """Replace status.json atomically and durably: a power cut leaves the old or the new one."""
    write_atomically(data_dir / STATUS_NAME, json.dumps(status, indent=1).encode(), mode=0o600)


class Agent:
    def __init__(
        self,
        config: DeviceConfig,
        data_dir: Path,
        source: FrameSource,
        *,
        wall_start: datetime | None = None,
        disk_usage: DiskUsageFn = filesystem_usage,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.source = source
        self.wall_start = wall_start or datetime.now(UTC)
        self.disk_usage = disk_usage
        self.progress = progress
        self.stop = threading.Event()
        self.store = open_store(config, data_dir)
        self.mask = PrivacyMask(config.privacy_masks)
        self.summary = RunSummary()

    def _retention(self, now: datetime) -> None:
        retention = self.config.retention
        result = enforce_retention(
            self.store,
            now=now,
            max_age=timedelta(days=retention.max_age_days),
            min_free_fraction=retention.min_free_fraction,
            disk_usage=self.disk_usage,
        )
        deleted = result.expired + result.for_space
        if deleted:
            self.summary.deleted += len(deleted)
            log.info("retention deleted %d clips", len(deleted))

    def run(self) -> RunSummary:
        """Record until the source ends or `stop` is set. Raises AgentRunning (having touched
        nothing) if another agent holds the data directory."""
        lock = AgentLock(self.data_dir)
        try:
            lock.acquire()
        except BaseException:
            self.source.stop()
            self.store.close()
            raise
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> RunSummary:
        summary = self.summary
        summary.recovery = self.store.recover()
        if summary.recovery.changed:
            log.warning("crash recovery: %s", summary.recovery.summary())
        if summary.recovery.quarantined:
            log.error(
                "%d clips did not verify with this device's signing key and were moved, still "
                "encrypted, to %s: they may still open with your identity. If %s was replaced, "
                "put the old key back and move them into %s again",
                len(summary.recovery.quarantined),
                self.store.quarantine_dir,
                DEVICE_KEY_NAME,
                self.store.clips_dir,
            )
        _write_status(
            self.data_dir,
            {
                "pid": os.getpid(),
                "started": self.wall_start.isoformat(),
                "recovery": summary.recovery.summary(),
            },
        )
        # Before recording anything: a restart after "disk full" must make room first.
        self._retention(self.wall_start)
        cfg = self.config
        fps = getattr(self.source, "fps", cfg.camera.fps)
        analysis_fps = min(fps, cfg.motion.analysis_fps)
        # Analyse a frame once this much media time has passed (half a frame of slack).
        analysis_step = 1.0 / analysis_fps - 0.5 / fps
        last_analysis = float("-inf")
        detected = False
        score = 0.0
        detector = MotionDetector(
            MotionParams.for_fps(
                analysis_fps,
                floor=cfg.motion.threshold,
                learn_seconds=cfg.motion.learn_seconds,
                absorb_seconds=cfg.motion.absorb_seconds,
            )
        )
        encoder: H264Encoder | None = None
        recorder: Recorder | None = None
        zone = None
        zone_pixels = 0
        analysis_size = (0, 0)
        began = time.perf_counter()
        last_retention = float("-inf")
        last_progress = began
        streak = 0  # consecutive frames with enough motion

        def on_clip(record: ClipRecord) -> None:
            summary.clips += 1
            # Retention runs on the recording's clock, so a replayed file is judged consistently.
            self._retention(record.end)

        try:
            for frame in self.source.frames():
                image = self.mask.apply(frame.image)
                if encoder is None:
                    height, width = image.shape[:2]
                    rec = cfg.recording
                    encoder = H264Encoder(
                        width - width % 2,
                        height - height % 2,
                        fps,
                        keyframe_seconds=rec.keyframe_seconds,
                        preset=rec.preset,
                        crf=rec.crf,
                        threads=rec.encoder_threads,
                    )
                    recorder = Recorder(
                        encoder,
                        self.store,
                        wall_start=self.wall_start,
                        pre_roll=rec.pre_roll_seconds,
                        post_roll=rec.post_roll_seconds,
                        max_clip=rec.max_clip_seconds,
                        on_clip=on_clip,
                    )
                    aw = min(cfg.motion.analysis_width, width)
                    analysis_size = (aw, max(2, round(height * aw / width)))
                    zone = zone_mask(cfg.motion.zones, *analysis_size)
                    zone_pixels = (
                        cv2.countNonZero(zone)
                        if zone is not None
                        else analysis_size[0] * analysis_size[1]
                    )
                assert recorder is not None
                if image.shape[0] % 2 or image.shape[1] % 2:
                    image = image[: encoder.height, : encoder.width]
                if frame.time - last_analysis >= analysis_step:
                    last_analysis = frame.time
                    small = cv2.resize(image, analysis_size, interpolation=cv2.INTER_AREA)
                    foreground = detector.apply(small)
                    score = motion_fraction(foreground, zone, zone_pixels)
                    streak = streak + 1 if score >= cfg.motion.min_area else 0
                    detected = streak >= cfg.motion.min_frames
                packets = encoder.encode(image, frame.time)
                try:
                    recorder.push(packets, frame.time, detected, score)
                except OSError as error:
                    # Disk full or failing card: drop this clip (its partial file goes), make
                    # room, and keep watching rather than crash-looping.
                    log.error("could not write clip: %s; dropping it", error)
                    recorder.abort()
                    self._retention(self.wall_start + timedelta(seconds=frame.time))
                summary.frames += 1
                if frame.time - last_retention >= 60:
                    last_retention = frame.time
                    self._retention(self.wall_start + timedelta(seconds=frame.time))
                now = time.perf_counter()
                if self.progress is not None and now - last_progress >= 2:
                    last_progress = now
                    self.progress(
                        f"{frame.time:7.1f} s of video, {summary.frames / (now - began):6.1f} fps, "
                        f"{summary.clips} clips{', recording' if recorder.recording else ''}"
                    )
                # Let go of this frame before the source produces the next (peak RSS at 1080p).
                del frame, image
                if self.stop.is_set():
                    break
            if recorder is not None and encoder is not None:
                recorder.close(encoder.flush())
        except BaseException:
            if recorder is not None:
                recorder.abort()
            raise
        finally:
            self.source.stop()
            if encoder is not None:
                encoder.close()
            summary.seconds = time.perf_counter() - began
            self.store.close()
        return summary
