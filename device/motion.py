"""Motion detection: a per-pixel running background with adaptive variance.

Each pixel keeps a running mean colour and a running variance of its difference from that
mean. A pixel is foreground when its largest per-channel difference exceeds
``max(k * sigma, floor)``: ``sigma`` absorbs pixels that always flicker (leaves, water,
compression noise), ``floor`` stops a very still pixel from firing on codec noise. A 3x3
opening removes speckle, a 5x5 closing joins the parts of one object. Only background pixels
update the model at the normal rate, so a person who stops at the door stays foreground; they
fade into the background on a much slower clock (``absorb_seconds``), so a parked car or a
moved flower pot does not keep the camera recording forever. A frame where most pixels change
at once (a light switched on, a cloud, the camera's exposure) resets the model instead of
recording a clip of the sky.

Everything is a handful of vectorised OpenCV calls on uint8/float32 images: about 1,200
frames per second at 320x240 on one core, pixel F1 about 0.92 on CDnet 2014 highway (see
``bench/motion.py`` and docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[Any]  # uint8 pixels; Any because OpenCV's stubs return loose dtypes

_OPEN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_ABSORB_EVERY = 8


@dataclass(frozen=True)
class MotionParams:
    """Tuning of the background model; rates are per frame (see ``for_fps``)."""

    k: float = 3.0  # threshold in standard deviations of each pixel's own noise
    floor: int = 20  # grey levels: below this a difference is never motion
    learn_rate: float = 0.02  # background pixels: weight of the new frame in the mean
    absorb_rate: float = 0.0  # foreground pixels: how fast a still object becomes background
    sudden_change: float = 0.6  # fraction of changed pixels treated as a lighting change
    quiet: float = 0.001  # below this foreground fraction the frame counts as an empty scene
    ghost_check_every: int = 0  # frames between edge-based ghost checks; 0 = never
    blur: int = 3

    @classmethod
    def for_fps(
        cls,
        fps: float,
        *,
        floor: int = 20,
        learn_seconds: float = 2.0,
        absorb_seconds: float = 60.0,
    ) -> MotionParams:
        """Parameters whose time constants are in seconds, whatever the frame rate."""
        fps = max(fps, 1.0)
        return cls(
            ghost_check_every=max(1, round(fps / 2)),
            floor=floor,
            learn_rate=min(1.0, 1.0 / (fps * learn_seconds)),
            absorb_rate=min(1.0, 1.0 / (fps * absorb_seconds)) if absorb_seconds > 0 else 0.0,
        )


class MotionDetector:
    """Feed frames in order; ``apply`` returns the foreground mask (0 or 255) of each."""

    def __init__(self, params: MotionParams | None = None) -> None:
        self.params = params or MotionParams()
        self._mean: NDArray[np.float32] | None = None
        self._mean_u8: Image | None = None
        self._var: NDArray[np.float32] | None = None
        self._threshold: Image | None = None
        self._floor: Image | None = None
        self._cap: Image = np.zeros(0, np.uint8)
        self._empty: Image | None = None  # the background as last seen with nothing moving
        self._age = 0

    def reset(self, frame: Image) -> None:
        """Start (or restart) the background model from this frame."""
        p = self.params
        self._mean = frame.astype(np.float32)
        self._mean_u8 = frame.copy()
        self._var = np.full(frame.shape[:2], (p.floor / p.k) ** 2, np.float32)
        self._threshold = np.full(frame.shape[:2], p.floor, np.uint8)
        self._floor = self._threshold.copy()
        self._cap = np.full(frame.shape[:2], 50, np.uint8)
        self._empty = None
        self._age = 0  # frames since the model (re)started

    def apply(self, frame: Image) -> Image:
        """Return the foreground mask of ``frame`` (BGR or grey, uint8) and update the model."""
        p = self.params
        if p.blur:
            frame = cv2.GaussianBlur(frame, (p.blur, p.blur), 0)
        if self._mean is None or self._mean.shape != frame.shape:
            self.reset(frame)
        assert self._mean is not None and self._mean_u8 is not None
        assert self._var is not None and self._threshold is not None and self._floor is not None

        diff = cv2.absdiff(frame, self._mean_u8)
        if diff.ndim == 3:
            # The largest channel difference: a red car on grey tarmac differs mostly in one.
            b, g, r = cv2.split(diff)
            diff = cv2.max(cv2.max(b, g), r)
        mask = cv2.compare(diff, self._threshold, cv2.CMP_GT)
        if cv2.countNonZero(mask) > p.sudden_change * mask.size:
            self.reset(frame)
            return np.zeros(mask.shape, np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPEN)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _CLOSE)
        ghost = None
        if self._empty is not None:
            # A ghost: a pixel that differs from the model only because something that stood
            # there was partly learnt and has now left, i.e. it looks like the empty scene again.
            # Snap those pixels back at once instead of waiting for the slow absorb rate.
            back = cv2.absdiff(frame, self._empty)
            if back.ndim == 3:
                b, g, r = cv2.split(back)
                back = cv2.max(cv2.max(b, g), r)
            ghost = cv2.bitwise_and(mask, cv2.compare(back, self._threshold, cv2.CMP_LE))
            if cv2.countNonZero(ghost):
                mask = cv2.bitwise_xor(mask, ghost)
            else:
                ghost = None

        background = cv2.bitwise_not(mask)
        cv2.accumulateWeighted(frame, self._mean, p.learn_rate, mask=background)
        if p.absorb_rate > 0 and self._age % _ABSORB_EVERY == 0:
            # Absorbing is slow by design (a minute), so doing it every few frames with a
            # proportionally larger step is the same curve at a fraction of the cost.
            rate = min(1.0, p.absorb_rate * _ABSORB_EVERY)
            cv2.accumulateWeighted(frame, self._mean, rate, mask=mask)
        if p.ghost_check_every and self._age % p.ghost_check_every == 0 and cv2.countNonZero(mask):
            stale = self._edge_ghosts(frame, mask)
            if stale is not None:
                mask = cv2.bitwise_xor(mask, stale)
                background = cv2.bitwise_not(mask)
                ghost = stale if ghost is None else cv2.bitwise_or(ghost, stale)
        if ghost is not None:
            cv2.accumulateWeighted(frame, self._mean, 1.0, mask=ghost)
        self._mean_u8 = cv2.convertScaleAbs(self._mean)
        self._age += 1
        # A fresh model sees nothing moving by construction: only trust "quiet" once it has
        # learnt for a couple of time constants.
        if self._age * p.learn_rate > 2 and cv2.countNonZero(mask) <= p.quiet * mask.size:
            self._empty = self._mean_u8
        # Cap the squared difference so one passing car does not make a pixel "noisy" for long.
        capped = cv2.min(diff, self._cap)
        cv2.accumulateWeighted(
            cv2.multiply(capped, capped, dtype=cv2.CV_32F), self._var, p.learn_rate, mask=background
        )
        sigma_k = cv2.convertScaleAbs(cv2.sqrt(self._var), alpha=p.k)
        self._threshold = cv2.max(sigma_k, self._floor)
        return mask

    def _edge_ghosts(self, frame: Image, mask: Image) -> Image | None:
        """Foreground blobs whose outline is an edge of the model but not of the frame.

        Something that was in view when the model started (a parked car that then drives
        off) leaves a "ghost": the empty spot differs from the model. A real object has an
        edge along its outline in the current frame; a ghost has that edge only in the model.
        """
        assert self._mean_u8 is not None
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        model = self._mean_u8
        model_grey = cv2.cvtColor(model, cv2.COLOR_BGR2GRAY) if model.ndim == 3 else model
        # Dilated gradients tolerate the 1-2 pixels the closing moved the outline by.
        now_edges = cv2.dilate(cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, _OPEN), _CLOSE)
        model_edges = cv2.dilate(cv2.morphologyEx(model_grey, cv2.MORPH_GRADIENT, _OPEN), _CLOSE)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        stale = []
        for contour in contours:
            if len(contour) < 20:
                continue
            xs, ys = contour[:, 0, 0], contour[:, 0, 1]
            now = float(now_edges[ys, xs].mean())
            then = float(model_edges[ys, xs].mean())
            if then > 2 * now + 4:
                stale.append(contour)
        if not stale:
            return None
        out = np.zeros_like(mask)
        cv2.drawContours(out, stale, -1, 255, -1)
        return cv2.bitwise_and(out, mask)


def motion_fraction(mask: Image, zone: Image | None, zone_pixels: int) -> float:
    """Fraction of the motion-zone pixels that are foreground in ``mask``."""
    if zone is not None:
        mask = cv2.bitwise_and(mask, zone)
    return cv2.countNonZero(mask) / max(zone_pixels, 1)
