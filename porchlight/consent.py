"""Consent receipts and per-ask keys: the wire schema a camera uses to share clips.

Spec: docs/requests-api.md ("Unlinkability", device endpoints). Shared by the server
(`app/requests`) and the camera agent; imports neither FastAPI nor SQLAlchemy.

For every ask it answers with consent, the device makes a fresh Ed25519 *ask key*. The
consent receipt names the ask, the request, the chosen clip ids, the ask key's public half and
the time, and is signed by the device key: that endorsement ties the ask key to the device
for the server and the log's auditors. The shared clips' manifests are then signed by the ask
key only (a `porchlight.manifest.ClipManifest` whose ``device_key`` field holds the ask key),
so a requester who sees manifests from two cases cannot link them by key.

Receipt wire form (JSON object, the body of ``POST /api/device/asks/{ask_id}/consent``)::

    {"receipt": {"ask_id", "request_id", "clip_ids": [...], "ask_public_key", "time"},
     "device_signature": "<base64 of 64 bytes>"}

The signed message is ``b"porchlight/consent-receipt/v1\\n"`` followed by the canonical JSON
of the receipt (keys sorted, no whitespace, ASCII only); ``clip_ids`` must be sorted, unique
and non-empty, ``time`` is `porchlight.manifest.format_time` form. Anything else is rejected
with `ConsentError`.

Upload headers: ``X-Porchlight-Manifest`` carries base64 of the signed manifest document
(`porchlight.manifest.sign_manifest` output, signed by the ask key); use `manifest_header`
to build and `read_manifest_header` to check it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from porchlight.manifest import (
    ClipManifest,
    ManifestError,
    format_time,
    parse_time,
    public_key_text,
    sign_manifest,
    verify_manifest,
)

SIGNING_CONTEXT = b"porchlight/consent-receipt/v1\n"
MANIFEST_HEADER = "X-Porchlight-Manifest"
MAX_CLIPS = 256
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConsentError(Exception):
    """A consent receipt or shared manifest that is malformed or does not verify."""


@dataclass(frozen=True)
class ConsentReceipt:
    ask_id: str
    request_id: str
    clip_ids: tuple[str, ...]
    ask_public_key: str  # base64 of the raw 32-byte Ed25519 public key of the ask key
    time: str  # porchlight.manifest.format_time()

    def canonical_bytes(self) -> bytes:
        """The exact bytes the device key signs."""
        body = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return SIGNING_CONTEXT + body.encode("ascii")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"clip_ids": list(self.clip_ids)}

    @property
    def moment(self) -> datetime:
        return parse_time(self.time)


def new_ask_key() -> Ed25519PrivateKey:
    """A fresh key for one ask; keep it only until the ask's clips are uploaded."""
    return Ed25519PrivateKey.generate()


def make_receipt(
    ask_id: str, request_id: str, clip_ids: list[str], ask_key: Ed25519PrivateKey, moment: datetime
) -> ConsentReceipt:
    """A receipt for ``clip_ids`` (sorted and de-duplicated here), checked like a received one."""
    receipt = ConsentReceipt(
        ask_id=ask_id,
        request_id=request_id,
        clip_ids=tuple(sorted(set(clip_ids))),
        ask_public_key=public_key_text(ask_key.public_key()),
        time=format_time(moment),
    )
    return _check_receipt(receipt.to_json())


def sign_receipt(receipt: ConsentReceipt, device_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The request body for the consent endpoint: the receipt signed by the device key."""
    signature = device_key.sign(receipt.canonical_bytes())
    return {"receipt": receipt.to_json(), "device_signature": base64.b64encode(signature).decode()}


def _b64(text: object, size: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise ConsentError(f"{what} must be a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConsentError(f"{what} is not base64") from None
    if len(raw) != size or base64.b64encode(raw).decode() != text:
        raise ConsentError(f"{what} is not canonical base64 of {size} bytes")
    return raw


def _check_receipt(document: object) -> ConsentReceipt:
    if not isinstance(document, dict):
        raise ConsentError("receipt is not a JSON object")
    expected = {"ask_id", "request_id", "clip_ids", "ask_public_key", "time"}
    if set(document) != expected:
        raise ConsentError(
            f"receipt fields differ: expected {sorted(expected)}, got {sorted(document)}"
        )
    for name in ("ask_id", "request_id"):
        if not isinstance(document[name], str) or not _ID.match(document[name]):
            raise ConsentError(f"receipt {name} must be 1-64 characters of [A-Za-z0-9_-]")
    clip_ids = document["clip_ids"]
    if not isinstance(clip_ids, list) or not clip_ids:
        raise ConsentError("receipt clip_ids must be a non-empty list")
    if len(clip_ids) > MAX_CLIPS:
        raise ConsentError(f"receipt names more than {MAX_CLIPS} clips")
    for clip_id in clip_ids:
        if not isinstance(clip_id, str) or not _ID.match(clip_id):
            raise ConsentError("receipt clip_ids must be strings of [A-Za-z0-9_-]")
    if clip_ids != sorted(set(clip_ids)):
        raise ConsentError("receipt clip_ids must be sorted and unique")
    _b64(document["ask_public_key"], 32, "ask_public_key")
    if not isinstance(document["time"], str):
        raise ConsentError("receipt time must be a string")
    try:
        parse_time(document["time"])
    except ManifestError as error:
        raise ConsentError(f"receipt {error}") from None
    return ConsentReceipt(
        ask_id=document["ask_id"],
        request_id=document["request_id"],
        clip_ids=tuple(clip_ids),
        ask_public_key=document["ask_public_key"],
        time=document["time"],
    )


def verify_receipt(body: object, device_key: Ed25519PublicKey | str) -> ConsentReceipt:
    """Parse a consent body and check the device key's signature over the receipt."""
    if not isinstance(body, dict) or set(body) != {"receipt", "device_signature"}:
        raise ConsentError('consent body must be {"receipt": {...}, "device_signature": "..."}')
    receipt = _check_receipt(body["receipt"])
    signature = _b64(body["device_signature"], 64, "device_signature")
    if isinstance(device_key, str):
        device_key = Ed25519PublicKey.from_public_bytes(_b64(device_key, 32, "device key"))
    try:
        device_key.verify(signature, receipt.canonical_bytes())
    except InvalidSignature:
        raise ConsentError("consent receipt is not signed by this device's key") from None
    return receipt


def shared_manifest(
    original: ClipManifest, ciphertext_sha256: str, ciphertext_size: int, ask_key: Ed25519PrivateKey
) -> bytes:
    """The manifest of a rewrapped clip, signed by the ask key (same span and plaintext hash)."""
    manifest = ClipManifest(
        clip_id=original.clip_id,
        device_key=public_key_text(ask_key.public_key()),
        start=original.start,
        end=original.end,
        plaintext_sha256=original.plaintext_sha256,
        ciphertext_sha256=ciphertext_sha256,
        ciphertext_size=ciphertext_size,
    )
    return sign_manifest(manifest, ask_key)


def manifest_header(signed_manifest: bytes) -> str:
    """The ``X-Porchlight-Manifest`` value for a `shared_manifest` document."""
    return base64.b64encode(signed_manifest).decode("ascii")


def read_manifest_header(value: str, ask_public_key: str) -> tuple[ClipManifest, bytes]:
    """Decode and verify the upload header; returns the manifest and the signed document."""
    try:
        document = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConsentError(f"{MANIFEST_HEADER} is not base64") from None
    try:
        return verify_manifest(document, ask_public_key), document
    except ManifestError as error:
        raise ConsentError(f"shared manifest: {error}") from None
