from __future__ import annotations

import os
import shutil

import pytest

from porchlight.age import HybridIdentity, X25519Identity, generate_identity


@pytest.fixture(scope="session")
def x25519_identity() -> X25519Identity:
    identity = generate_identity("x25519")
    assert isinstance(identity, X25519Identity)
    return identity


@pytest.fixture(scope="session")
def pq_identity() -> HybridIdentity:
    identity = generate_identity()
    assert isinstance(identity, HybridIdentity)
    return identity


@pytest.fixture(scope="session")
def age_binary() -> str:
    """Debian's age; missing it skips locally and fails under CI=true."""
    path = shutil.which("age")
    if path is None:
        reason = "Debian's age is not installed (apt-get install age)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    return path
