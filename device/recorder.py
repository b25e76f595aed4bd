"""Turning a stream of encoded packets plus motion decisions into clips.

Idle, the recorder keeps the pre-roll as encoded packets: whole GOPs, dropping the oldest GOP
whenever the next one alone still covers ``pre_roll`` seconds, so memory is bounded by
``pre_roll + one GOP`` of compressed video, never raw frames. Motion opens a clip starting at
the oldest kept keyframe; each packet then goes straight to the muxer and the encryptor. The
clip closes ``post_roll`` seconds after the last motion, or at the first keyframe after
``max_clip`` seconds (a new clip then continues from that keyframe if motion goes on).
Each packet is muxed into exactly one clip.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from device.clipstore import ClipRecord, ClipStore, OpenClip
from device.encoder import FragmentedMP4Writer, H264Encoder, Packet, packet_seconds

log = logging.getLogger(__name__)


class _ClipInProgress:
    def __init__(self, store: ClipStore, encoder: H264Encoder, start: datetime) -> None:
        self.sealed: OpenClip = store.begin(start)
        self.writer = FragmentedMP4Writer(self.sealed, encoder)  # type: ignore[arg-type]
        self.score = 0.0


class Recorder:
    def __init__(
        self,
        encoder: H264Encoder,
        store: ClipStore,
        *,
        wall_start: datetime,
        pre_roll: float = 5.0,
        post_roll: float = 10.0,
        max_clip: float = 300.0,
        on_clip: Callable[[ClipRecord], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.wall_start = wall_start
        self.pre_roll, self.post_roll, self.max_clip = pre_roll, post_roll, max_clip
        self.on_clip = on_clip
        self._buffer: deque[Packet] = deque()
        self._keyframes: deque[float] = deque()  # times of the keyframes in _buffer
        self._clip: _ClipInProgress | None = None
        self._last_motion = float("-inf")
        self.buffered_bytes = 0
        self.peak_buffered_bytes = 0

    @property
    def recording(self) -> bool:
        return self._clip is not None

    def _wall(self, seconds: float) -> datetime:
        return self.wall_start + timedelta(seconds=seconds)

    def _buffer_packet(self, packet: Packet) -> None:
        if not self._buffer and not packet.is_keyframe:
            return  # a pre-roll must begin at a keyframe
        if packet.is_keyframe:
            self._keyframes.append(packet_seconds(packet))
        self._buffer.append(packet)
        self.buffered_bytes += packet.size
        self._trim(packet_seconds(packet))
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)

    def _trim(self, now: float) -> None:
        # Drop the oldest GOP while the remaining ones still reach back pre_roll seconds.
        while len(self._keyframes) > 1 and self._keyframes[1] <= now - self.pre_roll:
            self._keyframes.popleft()
            while self._buffer and packet_seconds(self._buffer[0]) < self._keyframes[0]:
                self.buffered_bytes -= self._buffer.popleft().size

    def _start_clip(self, first: Packet) -> None:
        self._clip = _ClipInProgress(self.store, self.encoder, self._wall(packet_seconds(first)))

    def _write(self, packet: Packet) -> None:
        assert self._clip is not None
        self._clip.writer.write(packet)

    def _finish_clip(self) -> ClipRecord | None:
        clip, self._clip = self._clip, None
        if clip is None:
            return None
        writer = clip.writer
        start = writer.first_seconds or 0.0
        duration = writer.duration
        try:
            plaintext_sha256, _ = writer.close()
            record = clip.sealed.seal(
                self._wall(start + duration), duration, clip.score, plaintext_sha256
            )
        except BaseException:
            clip.sealed.abort()
            raise
        log.info("clip %s: %.1f s, score %.3f", record.id, duration, clip.score)
        if self.on_clip is not None:
            self.on_clip(record)
        return record

    def push(
        self, packets: Iterable[Packet], frame_time: float, motion: bool, score: float
    ) -> None:
        """Feed the packets one frame produced and whether that frame showed motion."""
        if motion:
            self._last_motion = frame_time
            if self._clip is None:
                # The encoder's packets lag the frames (x264 lookahead): measure the pre-roll
                # back from the frame that showed motion, not from the newest packet.
                self._trim(frame_time)
            if self._clip is None and self._buffer:
                self._start_clip(self._buffer[0])
                while self._buffer:
                    self._write(self._buffer.popleft())
                self._keyframes.clear()
                self.buffered_bytes = 0
        if self._clip is not None and motion:
            self._clip.score = max(self._clip.score, score)
        for packet in packets:
            if self._clip is None:
                if motion and packet.is_keyframe:
                    self._start_clip(packet)
                    self._write(packet)
                else:
                    self._buffer_packet(packet)
                continue
            clip_start = self._clip.writer.first_seconds or 0.0
            if packet.is_keyframe and packet_seconds(packet) - clip_start >= self.max_clip:
                self._finish_clip()
                if frame_time - self._last_motion <= self.post_roll:
                    self._start_clip(packet)
                    self._write(packet)
                else:
                    self._buffer_packet(packet)
                continue
            self._write(packet)
        if self._clip is not None and frame_time - self._last_motion > self.post_roll:
            self._finish_clip()

    def close(self, tail: Iterable[Packet] = ()) -> ClipRecord | None:
        """Write the encoder's last packets into the open clip (if any) and seal it."""
        if self._clip is None:
            return None
        for packet in tail:
            self._write(packet)
        return self._finish_clip()

    def abort(self) -> None:
        clip, self._clip = self._clip, None
        if clip is not None:
            clip.sealed.abort()
