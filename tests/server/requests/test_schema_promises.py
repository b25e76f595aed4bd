"""No marketing mechanics, by construction (DESIGN promise 5): the OpenAPI schema and the
database schema have no route, field or table about credits, referrals, rewards, opt-in
rates, camera maps or messaging residents."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from sqlalchemy import create_engine, inspect

FORBIDDEN = re.compile(
    r"credit|referr|reward|bonus|incentiv|opt.?in|leaderboard|tally|tallies|"
    r"camera.?map|map.?of|heat.?map|coverage.?map|/map\b|"
    r"messag(e|ing).?resident|contact.?resident|notify.?resident|inbox|chat|dm\b",
    re.IGNORECASE,
)


def _names(document: Any, trail: str = "") -> list[str]:
    """Every key path of the OpenAPI document except human prose (descriptions, titles)."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in {"description", "summary", "title"} and isinstance(value, str):
                continue
            found.append(f"{trail}/{key}")
            found.extend(_names(value, f"{trail}/{key}"))
    elif isinstance(document, list):
        for item in document:
            found.extend(_names(item, trail))
    elif isinstance(document, str):
        found.append(f"{trail}={document}")
    return found


def test_openapi_has_no_marketing_routes_or_fields(app: FastAPI) -> None:
    names = _names(app.openapi())
    assert any("/api/requests" in name for name in names)  # the scan sees the real schema
    offending = [name for name in names if FORBIDDEN.search(name)]
    assert offending == []


def test_database_has_no_marketing_tables_or_columns(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        tables = inspector.get_table_names()
        assert "asks" in tables and "shared_clips" in tables
        names = list(tables)
        for table in tables:
            names += [f"{table}.{column['name']}" for column in inspector.get_columns(table)]
    finally:
        engine.dispose()
    offending = [name for name in names if FORBIDDEN.search(name)]
    assert offending == []


def test_the_scan_catches_what_it_should() -> None:
    for bad in (
        "/api/credits",
        "referral_code",
        "opt_in_rate",
        "camera_map",
        "/api/map",
        "message_residents",
        "reward_points",
    ):
        assert FORBIDDEN.search(bad), bad
