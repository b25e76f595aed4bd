"""Where the shared, externally written test data lives, and how its absence is reported.

Locally a missing folder skips the tests that need it with a clear reason; under CI=true
that skip becomes a failure, because CI always has ../shared beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def testdata_root() -> Path:
    configured = os.environ.get("PORCHLIGHT_TESTDATA")
    return Path(configured) if configured else REPO.parent / "shared" / "testdata"


def require_testdata(*parts: str) -> Path:
    """Return a path inside the shared test data, skipping (or failing under CI) when absent."""
    path = testdata_root().joinpath(*parts)
    if not path.exists():
        reason = (
            f"shared test data not found at {path}; put ../shared/testdata beside the checkout "
            "or set PORCHLIGHT_TESTDATA"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    return path
