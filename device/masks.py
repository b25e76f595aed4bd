"""Privacy masks and motion zones: polygons in frame fractions, rasterised once per frame size.

A privacy mask is applied to every frame before motion detection and before encoding, so the
masked pixels are black in every recording and never reach the encoder at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[Any]  # uint8 pixels; Any because OpenCV's stubs return loose dtypes
Polygon = Sequence[Sequence[float]]


def _pixels(polygon: Polygon, width: int, height: int) -> NDArray[np.int32]:
    points = np.asarray(polygon, dtype=np.float64) * (width, height)
    return np.round(points).astype(np.int32).reshape(-1, 1, 2)


def polygon_mask(polygons: Sequence[Polygon], width: int, height: int) -> Image:
    """A single-channel image, 255 inside any polygon, 0 elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    if polygons:
        cv2.fillPoly(mask, [_pixels(p, width, height) for p in polygons], 255)
    return mask


class PrivacyMask:
    """Blacks out the configured polygons; built lazily for each frame size it meets."""

    def __init__(self, polygons: Sequence[Polygon]) -> None:
        self.polygons = list(polygons)
        self._keep: Image | None = None

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def apply(self, frame: Image) -> Image:
        """Zero the masked pixels of ``frame`` in place and return it."""
        if not self.polygons:
            return frame
        height, width = frame.shape[:2]
        if self._keep is None or self._keep.shape != frame.shape:
            keep = cv2.bitwise_not(polygon_mask(self.polygons, width, height))
            self._keep = cv2.merge([keep] * frame.shape[2]) if frame.ndim == 3 else keep
        cv2.bitwise_and(frame, self._keep, dst=frame)
        return frame


def zone_mask(zones: Sequence[Polygon], width: int, height: int) -> Image | None:
    """The motion zones at analysis size, or None for "the whole frame"."""
    return polygon_mask(zones, width, height) if zones else None


def draw_preview(frame: Image, masks: Sequence[Polygon], zones: Sequence[Polygon]) -> Image:
    """The frame as the camera keeps it, with mask outlines (red) and zones (green) drawn."""
    height, width = frame.shape[:2]
    shown = PrivacyMask(masks).apply(frame.copy())
    if zones:
        tint = shown.copy()
        cv2.fillPoly(tint, [_pixels(z, width, height) for z in zones], (0, 200, 0))
        shown = cv2.addWeighted(shown, 0.75, tint, 0.25, 0)
        cv2.polylines(shown, [_pixels(z, width, height) for z in zones], True, (0, 255, 0), 2)
    if masks:
        cv2.polylines(shown, [_pixels(m, width, height) for m in masks], True, (0, 0, 255), 2)
    label = "red: privacy masks (black in recordings)  green: motion zones"
    cv2.putText(shown, label, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return shown
