"""Coarsening a location to about 100 m before it is stored; exact coordinates never are."""

from __future__ import annotations

import math

# 0.001 degree of latitude is about 111 m everywhere.
SCALE = 1000


def coarsen(latitude: float, longitude: float) -> tuple[int, int]:
    """Latitude to 0.001 degree; longitude to a step that is also ~111 m at this latitude."""
    lat_milli = round(latitude * SCALE)
    # A degree of longitude shrinks with cos(latitude): widen the step so cells stay ~100 m.
    cos_lat = max(math.cos(math.radians(lat_milli / SCALE)), 0.01)
    step = max(1, round(1 / cos_lat))
    lon_milli = round(longitude * SCALE / step) * step
    if lon_milli > 180 * SCALE:
        lon_milli -= 360 * SCALE
    return lat_milli, lon_milli


def to_degrees(milli: int | None) -> float | None:
    return None if milli is None else milli / SCALE
