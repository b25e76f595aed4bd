"""Canonical log entry bytes and RFC 6962 leaf hashes (docs/log-format.md).

An entry is a JSON object with sorted keys, no insignificant whitespace, UTF-8 (non-ASCII left
unescaped), at most 65535 bytes (the tlog-tiles entry bundle length prefix is 16 bits).
Details values are restricted to strings, integers, booleans, null, lists and objects:
floats have no single canonical JSON spelling, so they are refused.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

# One definition of RFC 6962 leaf hashing, shared with auditors' verifiers.
from porchlight.tlog.merkle import leaf_hash as leaf_hash

MAX_ENTRY_BYTES = 65535
FORMAT_VERSION = 1
_TAG = re.compile(r"^[a-z][a-z0-9_]*:[a-z0-9_][a-z0-9_.:-]*$")
_ACTOR = re.compile(r"^(system|anonymous|user:[0-9]+|device:[0-9]+)$")

JSONValue = str | int | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class EntryError(ValueError):
    """An entry that cannot be encoded canonically."""


def _check_value(value: object, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        # Keep integers exact in any JSON reader (IEEE double range).
        if abs(value) > 2**53:
            raise EntryError(f"{where}: integer out of the exact JSON range")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EntryError(f"{where}: object keys must be strings")
            _check_value(item, f"{where}.{key}")
        return
    raise EntryError(f"{where}: {type(value).__name__} is not allowed in a log entry")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-22T20:53:25.123456Z."""
    if moment.tzinfo is None:
        raise EntryError("entry time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


SALT_BYTES = 16


def encode_entry(
    time: datetime,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JSONValue],
    *,
    salt: bytes | None = None,
) -> bytes:
    """The canonical bytes of one entry; raises EntryError for anything non-canonical.

    Every entry carries 16 random bytes (`salt`). Leaf hashes are public (hash tiles, proofs),
    and without a salt someone who knows all of an entry but one small number (a requester
    knows their own request's `request:open` entry except how many residents were asked)
    could hash each guess and find it among them.
    """
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise EntryError(f"an entry salt is {SALT_BYTES} bytes")
    if not _ACTOR.match(actor):
        raise EntryError(f"actor {actor!r} is not system, anonymous, user:N or device:N")
    if not _TAG.match(action):
        raise EntryError(f"action {action!r} is not of the form 'noun:verb'")
    if not _TAG.match(subject):
        raise EntryError(f"subject {subject!r} is not of the form 'kind:id'")
    _check_value(details, "details")
    document = {
        "v": FORMAT_VERSION,
        "time": format_time(time),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "salt": salt.hex(),
    }
    data = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry is {len(data)} bytes, more than {MAX_ENTRY_BYTES}")
    return data
