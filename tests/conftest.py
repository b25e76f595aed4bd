from __future__ import annotations

from pathlib import Path

import pytest

from tests.testdata import require_testdata


@pytest.fixture(scope="session")
def testdata() -> Path:
    return require_testdata()
