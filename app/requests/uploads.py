"""Shared clips: checking and storing an upload, listing and serving what was shared.

An upload is checked in three steps so the body is streamed once and never held in memory
(and no database transaction stays open while bytes arrive):
1. `prepare` (before the body): the device's credential, its consented ask, the manifest
   header (signed by the ask key, clip named in the receipt, span inside the window, size
   within policy);
2. the route streams the body into the clip store's temporary file, parsing the age header
   from the first bytes and hashing everything;
3. `finish`: the signed call over the body's SHA-256, the hash and size against the manifest,
   then under the ask's row lock: an identical earlier upload is a 200, different bytes a 409,
   otherwise the blob is renamed into place and the shared clip recorded and logged.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import tokens
from app.accounts.models import User
from app.audit import service as audit
from app.clipstore import BlobWriter
from app.devices import service as devices
from app.devices.models import Device
from app.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from app.policy import service as policies
from app.requests import matching, schemas
from app.requests.asks import LIVE_REQUEST_STATES
from app.requests.models import Ask, FootageRequest, SharedClip
from app.requests.service import visible_request
from app.settings import Settings
from porchlight.age.errors import AgeError
from porchlight.age.header import parse_header
from porchlight.client import DEVICE_HEADER
from porchlight.consent import MANIFEST_HEADER, ConsentError, read_manifest_header
from porchlight.manifest import ClipManifest

# The age header (one recipient stanza, even post-quantum, is ~2 KB) must fit in this prefix.
HEADER_PREFIX = 64 * 1024


@dataclass(frozen=True)
class UploadPlan:
    ask_id: str
    clip_id: str
    blob_key: str
    manifest: ClipManifest
    manifest_document: bytes


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), "")


def prepare(
    session: Session,
    headers: Mapping[str, str],
    ask_id: str,
    clip_id: str,
    now: datetime,
) -> UploadPlan:
    """Everything checkable before the body arrives (the signature comes in `finish`)."""
    # The credential is checked here so strangers cannot make the server store bytes; the
    # signature over the body is checked once the body's hash is known.
    scheme, _, credential = _header(headers, "authorization").partition(" ")
    device_id = _header(headers, DEVICE_HEADER)
    number = devices.device_number(device_id)
    device = session.get(Device, number) if number is not None else None
    if (
        scheme != "Device"
        or device is None
        or device.revoked_at is not None
        or device.credential_hash != tokens.digest(credential)
    ):
        raise NotAuthenticated("device call not authenticated")
    ask = session.scalar(select(Ask).where(Ask.id == ask_id, Ask.device_id == device.id))
    if ask is None:
        raise NotFound("ask not found")
    if ask.state != "consented" or ask.receipt is None or ask.ask_public_key is None:
        raise Conflict(f"this ask is {ask.state}; clips are uploaded only after consent")
    footage_request = session.get(FootageRequest, ask.request_id)
    assert footage_request is not None
    if footage_request.state not in LIVE_REQUEST_STATES:
        raise Conflict(f"the request is {footage_request.state}; it takes no more clips")
    if clip_id not in json.loads(ask.receipt)["clip_ids"]:
        raise InvalidInput(f"clip_id: clip {clip_id} is not in this ask's consent receipt")
    value = _header(headers, MANIFEST_HEADER)
    if not value:
        raise InvalidInput(f"{MANIFEST_HEADER}: header missing")
    try:
        manifest, document = read_manifest_header(value, ask.ask_public_key)
    except ConsentError as error:
        raise InvalidInput(f"{MANIFEST_HEADER}: {error}") from None
    if manifest.clip_id != clip_id:
        raise InvalidInput(f"{MANIFEST_HEADER}: the manifest is for clip {manifest.clip_id}")
    if (
        manifest.start_time < footage_request.window_start
        or manifest.end_time > footage_request.window_end
    ):
        raise InvalidInput(
            f"{MANIFEST_HEADER}: clip {clip_id} ({manifest.start} to {manifest.end}) is not "
            "inside the request's time window"
        )
    policy = policies.current(session)
    if manifest.ciphertext_size > policy.max_clip_bytes:
        raise InvalidInput(
            f"{MANIFEST_HEADER}: a {manifest.ciphertext_size}-byte clip exceeds this "
            f"community's limit of {policy.max_clip_bytes} bytes"
        )
    length = _header(headers, "content-length")
    if length and length != str(manifest.ciphertext_size):
        raise InvalidInput(
            f"Content-Length {length} differs from the manifest's size {manifest.ciphertext_size}"
        )
    return UploadPlan(ask.id, clip_id, f"{ask.id}-{clip_id}", manifest, document)


def check_age_prefix(prefix: bytes) -> None:
    """The body must start with a well-formed age header (it cannot be decrypted here)."""
    try:
        header = parse_header(io.BytesIO(prefix))
    except AgeError as error:
        raise InvalidInput(f"body: not a well-formed age file: {error}") from None
    # The payload is at least a 16-byte nonce and one sealed (16-byte tag) chunk.
    if len(prefix) < HEADER_PREFIX and len(prefix) - header.payload_offset < 32:
        raise InvalidInput("body: the age file is truncated (no payload after the header)")


def finish(
    session: Session,
    settings: Settings,
    headers: Mapping[str, str],
    path: str,
    plan: UploadPlan,
    writer: BlobWriter,
    now: datetime,
) -> tuple[int, schemas.UploadOut]:
    """Authenticate over the body's hash, then store and record the clip (201) or accept an
    identical retry (200); the caller aborts the writer on any error."""
    body_sha256 = writer.sha256()
    device = devices.authenticate_call(
        session, settings, headers, "PUT", path, b"", now, body_sha256=body_sha256
    )
    manifest = plan.manifest
    if writer.size != manifest.ciphertext_size:
        raise InvalidInput(
            f"body: {writer.size} bytes arrived, the manifest says {manifest.ciphertext_size}"
            " (truncated or padded upload)"
        )
    if body_sha256 != manifest.ciphertext_sha256:
        raise InvalidInput("body: the file's SHA-256 differs from the manifest (tampered?)")
    ask = session.scalar(
        select(Ask).where(Ask.id == plan.ask_id, Ask.device_id == device.id).with_for_update()
    )
    if ask is None or ask.state != "consented":
        raise Conflict("the consent was revoked or the ask changed during the upload")
    answer = schemas.UploadOut(
        clip_id=plan.clip_id, size=writer.size, ciphertext_sha256=body_sha256
    )
    existing = session.scalar(
        select(SharedClip).where(SharedClip.ask_id == ask.id, SharedClip.clip_id == plan.clip_id)
    )
    if existing is not None:
        if existing.ciphertext_sha256 != body_sha256 or existing.purged_at is not None:
            raise Conflict(f"clip {plan.clip_id} was already uploaded with different bytes")
        writer.abort()
        return 200, answer
    # No record, so any blob under this key is an orphan of a crash before commit: replace it.
    writer.commit(replace=True)
    clip = SharedClip(
        id=matching.new_id(),
        ask_id=ask.id,
        clip_id=plan.clip_id,
        blob_key=plan.blob_key,
        size=writer.size,
        ciphertext_sha256=body_sha256,
        manifest=plan.manifest_document.decode("ascii"),
        start=manifest.start_time,
        end=manifest.end_time,
        stored_at=now,
    )
    session.add(clip)
    session.flush()
    audit.append(
        session,
        f"device:{device.id}",
        "clip:share",
        f"shared_clip:{clip.id}",
        {
            "ask": ask.id,
            "request": ask.request_id,
            "clip_id": plan.clip_id,
            "size": writer.size,
            "ciphertext_sha256": body_sha256,
            "manifest_sha256": tokens.digest(plan.manifest_document.decode("ascii")),
        },
        now=now,
    )
    return 201, answer


def _pseudonym(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = string.ascii_uppercase[remainder] + letters
    return f"Resident {letters}"


def _visible_clips(
    session: Session, footage_request: FootageRequest
) -> Sequence[tuple[SharedClip, Ask]]:
    if footage_request.state not in LIVE_REQUEST_STATES:
        return []
    rows = session.execute(
        select(SharedClip, Ask)
        .join(Ask, Ask.id == SharedClip.ask_id)
        .where(
            Ask.request_id == footage_request.id,
            Ask.state == "consented",
            SharedClip.purged_at.is_(None),
        )
        .order_by(Ask.answered_at, Ask.id, SharedClip.start, SharedClip.clip_id)
    ).all()
    return [(row[0], row[1]) for row in rows]


def shared_clips(session: Session, user: User, request_id: int) -> list[schemas.SharedClipOut]:
    """What residents chose to share, under pseudonyms given in order of consent among the
    consents visible now: nothing reveals asks that were declined, pending or revoked."""
    footage_request = visible_request(session, user, request_id)
    pseudonyms: dict[str, str] = {}
    result = []
    for clip, ask in _visible_clips(session, footage_request):
        pseudonym = pseudonyms.setdefault(ask.id, _pseudonym(len(pseudonyms)))
        document = json.loads(clip.manifest)
        signature = document.pop("signature")
        result.append(
            schemas.SharedClipOut(
                shared_clip_id=clip.id,
                pseudonym=pseudonym,
                start=clip.start,
                end=clip.end,
                size=clip.size,
                manifest=document,
                manifest_signature=signature,
                signer_public_key=document["device_key"],
                downloadable=True,
            )
        )
    return result


def open_download(
    session: Session, user: User, request_id: int, shared_clip_id: str, now: datetime
) -> SharedClip:
    """The clip to stream (a logged read of footage); the first download ends revocability."""
    footage_request = visible_request(session, user, request_id)
    for clip, ask in _visible_clips(session, footage_request):
        if clip.id == shared_clip_id:
            locked = session.scalar(select(Ask).where(Ask.id == ask.id).with_for_update())
            if locked is None or locked.state != "consented":
                break
            if locked.first_download_at is None:
                locked.first_download_at = now
            audit.append(
                session,
                f"user:{user.id}",
                "clip:download",
                f"shared_clip:{clip.id}",
                {
                    "request": request_id,
                    "size": clip.size,
                    "ciphertext_sha256": clip.ciphertext_sha256,
                },
                now=now,
            )
            return clip
    raise NotFound("shared clip not found or no longer available")
