"""Fan-out on approval: one ask per active device whose coarse location lies in the area.

A bounding box on the stored (integer, milli-degree) coordinates narrows the candidates in SQL
(an index-friendly range), then the exact great-circle distance (haversine) decides. Asks are
inserted in one bulk statement: 10,000 devices take well under a second.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.devices.location import SCALE
from app.devices.models import Device
from app.requests.models import Ask, FootageRequest

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE_LAT = 111_320.0


def new_id() -> str:
    """A random id (24 lowercase hex digits, as log subjects need) revealing no counts."""
    return secrets.token_hex(12)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def matching_devices(session: Session, lat: float, lon: float, radius_m: float) -> list[int]:
    """Ids of active devices whose stored location is within `radius_m` of (lat, lon)."""
    dlat = radius_m / METRES_PER_DEGREE_LAT
    dlon = radius_m / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 0.01))
    rows = session.execute(
        select(Device.id, Device.lat_milli, Device.lon_milli).where(
            Device.revoked_at.is_(None),
            Device.lat_milli.is_not(None),
            Device.lon_milli.is_not(None),
            Device.lat_milli.between(
                math.floor((lat - dlat) * SCALE), math.ceil((lat + dlat) * SCALE)
            ),
            # The box does not wrap the antimeridian; a community spans a town, not the globe.
            Device.lon_milli.between(
                math.floor((lon - dlon) * SCALE), math.ceil((lon + dlon) * SCALE)
            ),
        )
    ).all()
    return sorted(
        device_id
        for device_id, lat_milli, lon_milli in rows
        if lat_milli is not None
        and lon_milli is not None
        and haversine_m(lat, lon, lat_milli / SCALE, lon_milli / SCALE) <= radius_m
    )


def create_asks(
    session: Session, footage_request: FootageRequest, deadline: datetime, now: datetime
) -> int:
    """Insert one pending ask per matching device; returns how many."""
    device_ids = matching_devices(
        session, footage_request.area_lat, footage_request.area_lon, footage_request.area_radius_m
    )
    if device_ids:
        session.execute(
            insert(Ask),
            [
                {
                    "id": new_id(),
                    "request_id": footage_request.id,
                    "device_id": device_id,
                    "state": "pending",
                    "created_at": now,
                    "deadline": deadline,
                }
                for device_id in device_ids
            ],
        )
    return len(device_ids)
