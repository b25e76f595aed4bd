"""Random bearer secrets (invites, sessions, API tokens, device credentials) and their hashes.

Only SHA-256 digests are stored: the secrets carry 256 bits of entropy, so a slow hash adds
nothing, and a database leak yields nothing that can be presented to the server.
"""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
