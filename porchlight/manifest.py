"""Signed clip manifests: what a camera recorded, bound to the device's Ed25519 key.

age alone says nothing about where a file came from. Each clip therefore carries a manifest,
signed by the device key, naming the clip id, its time span and the SHA-256 of both the
plaintext MP4 and the age file as written. A requester who decrypts a shared clip checks the
plaintext hash; the server and the device check the ciphertext hash of the original.

Wire form: a JSON object with exactly the fields of `ClipManifest` plus ``signature``
(base64 of the 64-byte Ed25519 signature). The signed message is
``b"porchlight/clip-manifest/v1\\n"`` followed by the canonical JSON of the other fields:
keys sorted, no whitespace, ASCII only (RFC 8785 coincides with this for the strings and
integers used here). Anything else (extra or missing fields, wrong types, a non-canonical
time, bad base64) is rejected with `ManifestError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNING_CONTEXT = b"porchlight/clip-manifest/v1\n"
VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_CLIP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ManifestError(Exception):
    """A manifest that is malformed, or whose signature or hashes do not verify."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the one form a manifest accepts."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> datetime:
    if not _TIME.match(text):
        raise ManifestError(f"time {text!r} is not RFC 3339 UTC with milliseconds")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@dataclass(frozen=True)
class ClipManifest:
    clip_id: str
    device_key: str  # base64 of the raw 32-byte Ed25519 public key
    start: str  # format_time()
    end: str
    plaintext_sha256: str  # hex
    ciphertext_sha256: str  # hex
    ciphertext_size: int
    version: int = VERSION

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed."""
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return SIGNING_CONTEXT + body.encode("ascii")

    @property
    def start_time(self) -> datetime:
        return parse_time(self.start)

    @property
    def end_time(self) -> datetime:
        return parse_time(self.end)


def sign_manifest(manifest: ClipManifest, key: Ed25519PrivateKey) -> bytes:
    """The wire JSON of ``manifest`` signed with the device key (which must match device_key)."""
    if public_key_text(key.public_key()) != manifest.device_key:
        raise ManifestError("device_key does not belong to the signing key")
    signature = key.sign(manifest.canonical_bytes())
    document = asdict(manifest) | {"signature": base64.b64encode(signature).decode()}
    return json.dumps(document, sort_keys=True, indent=1).encode() + b"\n"


def _check_fields(document: object) -> ClipManifest:
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    expected = {f.name for f in fields(ClipManifest)} | {"signature"}
    if set(document) != expected:
        raise ManifestError(f"manifest fields differ: got {sorted(document)}")
    for name in ("clip_id", "device_key", "start", "end", "plaintext_sha256", "ciphertext_sha256"):
        if not isinstance(document[name], str):
            raise ManifestError(f"{name} must be a string")
    for name in ("ciphertext_size", "version"):
        if type(document[name]) is not int or document[name] < 0:
            raise ManifestError(f"{name} must be a non-negative integer")
    if document["version"] != VERSION:
        raise ManifestError(f"unsupported manifest version {document['version']}")
    if not _CLIP_ID.match(document["clip_id"]):
        raise ManifestError("clip_id has characters outside [A-Za-z0-9_-]")
    for name in ("plaintext_sha256", "ciphertext_sha256"):
        if not _HEX64.match(document[name]):
            raise ManifestError(f"{name} is not 64 lowercase hex digits")
    if parse_time(document["start"]) > parse_time(document["end"]):
        raise ManifestError("manifest ends before it starts")
    return ClipManifest(**{k: v for k, v in document.items() if k != "signature"})


def _b64(text: object, size: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise ManifestError(f"{what} must be a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError(f"{what} is not base64") from None
    if len(raw) != size or base64.b64encode(raw).decode() != text:
        raise ManifestError(f"{what} is not canonical base64 of {size} bytes")
    return raw


def verify_manifest(data: bytes, device_key: Ed25519PublicKey | str | None = None) -> ClipManifest:
    """Parse and verify a signed manifest; if ``device_key`` is given the manifest must name it.

    Without ``device_key`` the signature is checked against the key the manifest names, which
    proves integrity but not origin: callers that know the device must pass its key.
    """
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("manifest is not JSON") from None
    manifest = _check_fields(document)
    key_bytes = _b64(manifest.device_key, 32, "device_key")
    signature = _b64(document["signature"], 64, "signature")
    if device_key is not None:
        expected = device_key if isinstance(device_key, str) else public_key_text(device_key)
        if expected != manifest.device_key:
            raise ManifestError("manifest was signed by a different device")
    try:
        Ed25519PublicKey.from_public_bytes(key_bytes).verify(signature, manifest.canonical_bytes())
    except InvalidSignature:
        raise ManifestError("manifest signature does not verify") from None
    return manifest
