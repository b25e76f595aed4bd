"""Loads the transcribed and derived tlog vectors (../shared/testdata/tlog, see its README)."""

from __future__ import annotations

import json
from typing import Any

from tests.testdata import require_testdata


def transcribed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(require_testdata("tlog", "transcribed.json").read_text())
    return data


def derived() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(require_testdata("tlog", "derived.json").read_text())
    return data
