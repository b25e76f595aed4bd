"""The device side of a footage request: list asks, consent with chosen clips, decline, upload.

Spec: docs/requests-api.md ("Device") and DESIGN "How a clip is shared". All calls are signed
device calls (porchlight.client) to the server named in the enrolment.

Consenting is a resumable job, because a Pi loses power and networks drop. Everything it needs
to finish lives in ``<data>/clips/outbox/<ask_id>/`` (mode 0700):

* ``<clip_id>.age``: the clip rewrapped for the agency's recipient (age header replaced, payload
  untouched). It is ciphertext only the agency can open, kept until the server confirms it,
  because a second rewrap would produce different bytes and the server accepts one version of
  a clip (idempotent by clip id: same bytes 200, different bytes 409).
* ``state.json`` (0600): the per-ask Ed25519 key, the signed consent receipt, each clip's shared
  manifest and whether the consent was posted and which clips were uploaded. The key is kept so
  that a lost outbox copy can be rewrapped again and its manifest re-signed by the same key the
  receipt endorsed.

The chosen clips are pinned in the clip store (retention never deletes them) until uploaded. A
re-run of the same consent continues where the last one stopped; when every clip is uploaded the
outbox (and with it the per-ask key) is deleted. A consent stopped in any way before its
``state.json`` was saved removes its outbox (and one that could not, after a power cut, is
removed by the next `consent` or `decline` of that ask): nothing of it was sent. The outbox
is a sub-directory, so the clip store's crash recovery, which looks only at top-level files,
leaves it alone.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from device.clipstore import ClipRecord, ClipStore, ClipStoreError
from device.keys import KeyFileError, load_device_key
from porchlight.age import AgeError, Identity, parse_recipient, rewrap
from porchlight.client import ApiError, Enrolment, PorchlightClient, ServerURLError
from porchlight.consent import (
    MANIFEST_HEADER,
    ConsentError,
    make_receipt,
    manifest_header,
    new_ask_key,
    shared_manifest,
    sign_receipt,
)
from porchlight.files import write_atomically

ENROLMENT_FILE = "enrolment.json"
OUTBOX = "outbox"
STATE_FILE = "state.json"
# Answers worth retrying: the server or a proxy in front of it was briefly unavailable.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TERMINAL_ASK_STATES = frozenset({"declined", "expired", "revoked"})


class SyncError(Exception):
    """Something the resident must hear about; nothing further was sent."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class DeviceEnrolment:
    server: str
    device_id: int
    credential: str
    # The homeowner enrolled with --allow-http: plain http:// to a server that is not this
    # machine is allowed (porchlight.client.validate_server_url). Saved as "allow_http": true.
    allow_http: bool = False

    @property
    def enrolment(self) -> Enrolment:
        return Enrolment(self.device_id, self.credential)


def load_enrolment(data_dir: Path) -> DeviceEnrolment | None:
    path = data_dir / ENROLMENT_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        allow_http = data.get("allow_http", False)
        if not isinstance(allow_http, bool):
            raise TypeError("allow_http is not true or false")
        return DeviceEnrolment(
            str(data["server"]), int(data["device_id"]), str(data["credential"]), allow_http
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SyncError(
            f"{path} is damaged", hint="enrol the device again with a new code"
        ) from None


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by this user, atomically (never half-written)."""
    write_atomically(path, data, mode=0o600)


def parse_server_time(text: str) -> datetime:
    """An RFC 3339 time from the server, as an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def inside_window(clip: ClipRecord, start: datetime, end: datetime) -> bool:
    """A clip may be shared only if all of it lies in the request's window (the warrant's scope)."""
    return start <= clip.start and clip.end <= end


@dataclass(frozen=True)
class Ask:
    """One ask as the device API returns it: the full request, so the resident can judge it."""

    ask_id: str
    state: str
    deadline: str | None
    request: dict[str, Any]
    agency_recipient: str
    # Everything the server said (e.g. clip_ids, uploaded_clip_ids), for --json output.
    document: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ask:
        return cls(
            ask_id=str(data["ask_id"]),
            state=str(data["state"]),
            deadline=data.get("deadline"),
            request=dict(data["request"]),
            agency_recipient=str(data["agency_recipient"]),
            document=dict(data),
        )

    @property
    def request_id(self) -> str:
        return str(self.request["id"])

    @property
    def window(self) -> tuple[datetime, datetime]:
        return (
            parse_server_time(str(self.request["window_start"])),
            parse_server_time(str(self.request["window_end"])),
        )


@dataclass
class UploadOutcome:
    ask_id: str
    uploaded: list[str]
    already_stored: list[str]
    resumed: bool


Progress = Callable[[str], None]
TransferProgress = Callable[[str], Callable[[int, int | None], None] | None]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(
        key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    ).decode("ascii")


def _key_from_text(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))


class DeviceSync:
    """Signed calls for one enrolled device, and its clip store."""

    def __init__(
        self,
        data_dir: Path,
        *,
        transport: httpx.BaseTransport | None = None,
        allow_http: bool = False,
        retries: int = 6,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_retry: Progress = lambda _line: None,
    ) -> None:
        saved = load_enrolment(data_dir)
        if saved is None:
            raise SyncError(
                f"this device ({data_dir}) is not enrolled with a server",
                hint="run 'porchlight device enroll --server URL --code CODE' first",
            )
        try:
            self.key = load_device_key(data_dir)
        except KeyFileError as error:
            raise SyncError(str(error)) from None
        try:
            # Refuses plain HTTP to another host (the credential would be readable on the way)
            # unless this command or the enrolment opted in.
            client = PorchlightClient(
                saved.server, transport=transport, allow_http=allow_http or saved.allow_http
            )
        except ServerURLError as error:
            raise SyncError(
                str(error),
                hint=f"the server URL is the one enrolled ({ENROLMENT_FILE}): "
                "enrol again with its https:// URL to change it",
            ) from None
        self.data_dir = data_dir
        self.saved = saved
        self.client = client
        self.retries = max(0, retries)
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.on_retry = on_retry
        self.store = ClipStore(data_dir, device_public_key=self.key.public_key())

    def close(self) -> None:
        self.store.close()
        self.client.close()

    def __enter__(self) -> DeviceSync:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def _wait(self, attempt: int, what: str, reason: object) -> None:
        delay = self.backoff * 2**attempt
        self.on_retry(f"{what} failed ({reason}); retrying in {delay:g} s")
        self.sleep(delay)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A signed JSON call, retried with backoff while the server is unreachable or busy."""
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            try:
                return self.client.device_call(
                    self.key, self.saved.enrolment, method, path, payload
                )
            except ApiError as error:
                if error.status_code not in RETRY_STATUS or attempt == self.retries:
                    raise
                reason: object = f"{error.status_code} {error.message}"
            except httpx.TransportError as error:
                if attempt == self.retries:
                    raise SyncError(
                        f"cannot reach {self.saved.server}: {error or type(error).__name__}",
                        hint="check the network; running the same command again is safe",
                    ) from None
                reason = error or type(error).__name__
            self._wait(attempt, f"{method} {path}", reason)
        raise AssertionError("unreachable")

    def asks(self) -> list[Ask]:
        return [Ask.from_json(item) for item in self._call("GET", "/api/device/asks")]

    def ask(self, ask_id: str) -> Ask | None:
        return next((a for a in self.asks() if a.ask_id == ask_id), None)

    def clips_in_window(self, ask: Ask) -> list[ClipRecord]:
        start, end = ask.window
        return [c for c in self.store.clips() if inside_window(c, start, end)]

    def decline(self, ask_id: str) -> dict[str, Any]:
        # Under the consent lock: a consent still rewrapping for this ask has no state.json
        # yet, and must not have its outbox removed (or be overtaken) by this decline.
        with self._consent_lock("a 'porchlight device consent' is running on this device"):
            if (self._outbox(ask_id) / STATE_FILE).exists():
                raise SyncError(
                    f"ask {ask_id} already has a consent being uploaded",
                    hint=f"finish it with 'porchlight device consent {ask_id}'; "
                    "a consent can be revoked on the server until the first download",
                )
            self._drop_stale_outbox(ask_id)
            return self._decline(ask_id)

    def _decline(self, ask_id: str) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self._call("POST", f"/api/device/asks/{ask_id}/decline")
        except ApiError as error:
            raise SyncError(f"the server refused: {error.message}") from None
        return answer

    # -- consent ---------------------------------------------------------------------------
    def _outbox(self, ask_id: str) -> Path:
        return self.store.clips_dir / OUTBOX / ask_id

    def _save(self, ask_id: str, state: dict[str, Any]) -> None:
        write_private(self._outbox(ask_id) / STATE_FILE, json.dumps(state, indent=1).encode())

    def _load(self, ask_id: str) -> dict[str, Any] | None:
        path = self._outbox(ask_id) / STATE_FILE
        if not path.exists():
            return None
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def _drop_stale_outbox(self, ask_id: str) -> None:
        """Remove an outbox without state.json: a consent stopped before its choice was saved
        (power cut, kill -9), so nothing of it was sent and nothing in it is needed."""
        outbox = self._outbox(ask_id)
        if outbox.is_dir() and not (outbox / STATE_FILE).exists():
            shutil.rmtree(outbox, ignore_errors=True)

    def _discard(self, ask_id: str, clip_ids: Sequence[str]) -> None:
        for clip_id in clip_ids:
            with contextlib.suppress(ClipStoreError):
                self.store.set_pinned(clip_id, False)
        shutil.rmtree(self._outbox(ask_id), ignore_errors=True)

    def _rewrap(
        self, ask_id: str, clip_id: str, identities: Sequence[Identity], recipient: str
    ) -> tuple[str, int]:
        """Rewrap one clip into the outbox (header for the agency, payload verified and copied)."""
        target = self._outbox(ask_id) / f"{clip_id}.age"
        partial = target.with_name(target.name + ".partial")
        try:
            with self.store.clip_path(clip_id).open("rb") as src, partial.open("wb") as dst:
                rewrap(src, dst, identities, [parse_recipient(recipient)])
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return _sha256_file(target), target.stat().st_size

    def _prepare(
        self,
        ask: Ask,
        clip_ids: Sequence[str],
        unlock: Callable[[], Sequence[Identity]],
        progress: Progress,
    ) -> dict[str, Any]:
        """Check the choice, unlock, rewrap every clip and sign the receipt: nothing sent yet."""
        if ask.state != "pending":
            raise SyncError(f"ask {ask.ask_id} is {ask.state}; only a pending ask can be answered")
        start, end = ask.window
        originals = {}
        for clip_id in clip_ids:
            try:
                record = self.store.get(clip_id)
                originals[clip_id] = self.store.verify(clip_id)
            except ClipStoreError as error:
                raise SyncError(str(error)) from None
            if not inside_window(record, start, end):
                raise SyncError(
                    f"clip {clip_id} ({record.start:%Y-%m-%d %H:%M:%S} to "
                    f"{record.end:%H:%M:%S} UTC) is not inside the request's window",
                    hint=f"porchlight device asks lists the clips inside ask {ask.ask_id}'s window",
                )
        try:
            parse_recipient(ask.agency_recipient)
        except AgeError as error:
            raise SyncError(
                f"the agency's recipient is not a valid age recipient: {error}"
            ) from None
        identities = unlock()
        outbox = self._outbox(ask.ask_id)
        try:
            outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
            ask_key = new_ask_key()
            clips: dict[str, Any] = {}
            for clip_id in clip_ids:
                progress(f"rewrapping {clip_id} for {ask.request.get('agency', 'the agency')}")
                sha256, size = self._rewrap(ask.ask_id, clip_id, identities, ask.agency_recipient)
                signed = shared_manifest(originals[clip_id], sha256, size, ask_key)
                clips[clip_id] = {
                    "sha256": sha256,
                    "size": size,
                    "manifest": manifest_header(signed),
                    "uploaded": False,
                }
            receipt = make_receipt(
                ask.ask_id, ask.request_id, list(clip_ids), ask_key, self.clock()
            )
            state = {
                "ask_id": ask.ask_id,
                "request_id": ask.request_id,
                "agency_recipient": ask.agency_recipient,
                "ask_key": _key_text(ask_key),
                "consent": sign_receipt(receipt, self.key),
                "consent_posted": False,
                "clips": clips,
            }
            self._save(ask.ask_id, state)
        except BaseException as error:
            # Until state.json is saved nothing of this consent is kept or sent; whatever
            # stopped it (Ctrl-C, a full card, a wrong key), leave no outbox to block the ask.
            shutil.rmtree(outbox, ignore_errors=True)
            if isinstance(error, AgeError):
                raise SyncError(
                    f"cannot open the clip with the homeowner identity: {error}",
                    hint="was the clip recorded for another homeowner key?",
                ) from None
            if isinstance(error, ConsentError):
                raise SyncError(str(error)) from None
            if isinstance(error, OSError):
                raise SyncError(
                    f"cannot prepare the clips for sharing: {error}",
                    hint="nothing was sent; if the card is full, free some space and run the "
                    "command again",
                ) from None
            raise
        # Pinned only once the choice is made durable, so a crash never leaves a stray pin.
        for clip_id in clip_ids:
            self.store.set_pinned(clip_id, True)
        return state

    def _restore_outbox(
        self,
        ask_id: str,
        state: dict[str, Any],
        unlock: Callable[[], Sequence[Identity]],
        progress: Progress,
    ) -> None:
        """Rewrap again any clip whose outbox copy was lost (the reason the ask key is kept)."""
        identities: Sequence[Identity] | None = None
        for clip_id, entry in state["clips"].items():
            path = self._outbox(ask_id) / f"{clip_id}.age"
            if entry["uploaded"] or (path.exists() and _sha256_file(path) == entry["sha256"]):
                continue
            if identities is None:
                identities = unlock()
            progress(f"rewrapping {clip_id} again (its copy in the outbox was lost)")
            try:
                original = self.store.verify(clip_id)
                sha256, size = self._rewrap(
                    ask_id, clip_id, identities, str(state["agency_recipient"])
                )
            except (ClipStoreError, AgeError) as error:
                raise SyncError(f"cannot prepare clip {clip_id} again: {error}") from None
            signed = shared_manifest(original, sha256, size, _key_from_text(state["ask_key"]))
            entry.update(sha256=sha256, size=size, manifest=manifest_header(signed))
            self._save(ask_id, state)

    def _post_consent(self, ask_id: str, state: dict[str, Any]) -> None:
        try:
            self._call("POST", f"/api/device/asks/{ask_id}/consent", state["consent"])
        except ApiError as error:
            if error.status_code == 409:
                # Our earlier post may have been stored before its answer was lost: a replay
                # of the same receipt is refused, and the ask then reads as consented.
                current = self.ask(ask_id)
                if current is not None and current.state == "consented":
                    return
            if error.status_code < 500:
                self._discard(ask_id, list(state["clips"]))
            raise SyncError(
                f"the server refused the consent: {error.message}",
                hint="nothing was uploaded" if error.status_code < 500 else None,
            ) from None

    def _upload(
        self, ask_id: str, clip_id: str, entry: dict[str, Any], transfer: TransferProgress
    ) -> None:
        path = f"/api/device/asks/{ask_id}/clips/{clip_id}"
        source = self._outbox(ask_id) / f"{clip_id}.age"
        for attempt in range(self.retries + 1):
            try:
                with source.open("rb") as handle:
                    self.client.device_upload(
                        self.key,
                        self.saved.enrolment,
                        path,
                        handle,
                        int(entry["size"]),
                        str(entry["sha256"]),
                        headers={MANIFEST_HEADER: str(entry["manifest"])},
                        progress=transfer(clip_id),
                    )
                return
            except ApiError as error:
                if error.status_code not in RETRY_STATUS or attempt == self.retries:
                    raise SyncError(
                        f"the server refused clip {clip_id}: {error.message}",
                        hint="running the same command again retries what is left",
                    ) from None
                reason: object = f"{error.status_code} {error.message}"
            except httpx.TransportError as error:
                if attempt == self.retries:
                    raise SyncError(
                        f"uploading clip {clip_id} failed: {error or type(error).__name__}",
                        hint="running the same command again retries what is left",
                    ) from None
                reason = error or type(error).__name__
            self._wait(attempt, f"uploading {clip_id}", reason)

    def consent(
        self,
        ask_id: str,
        clip_ids: Sequence[str] | None,
        unlock: Callable[[], Sequence[Identity]],
        *,
        progress: Progress = lambda _line: None,
        transfer: TransferProgress = lambda _clip: None,
    ) -> UploadOutcome:
        """Consent to ``ask_id`` with ``clip_ids`` and upload them; or finish an earlier run."""
        with self._consent_lock():
            self._drop_stale_outbox(ask_id)
            return self._consent(ask_id, clip_ids, unlock, progress, transfer)

    @contextmanager
    def _consent_lock(
        self, busy: str = "another 'porchlight device consent' is running on this device"
    ) -> Iterator[None]:
        """One consent (or decline) at a time per device: they would race on an ask's outbox."""
        outbox = self.store.clips_dir / OUTBOX
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (outbox / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncError(busy, hint="wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _consent(
        self,
        ask_id: str,
        clip_ids: Sequence[str] | None,
        unlock: Callable[[], Sequence[Identity]],
        progress: Progress,
        transfer: TransferProgress,
    ) -> UploadOutcome:
        state = self._load(ask_id)
        resumed = state is not None
        if state is None:
            if not clip_ids:
                raise SyncError("choose the clips to share with --clips ID[,ID...]")
            ask = self.ask(ask_id)
            if ask is None:
                raise SyncError(
                    f"no ask {ask_id} for this device",
                    hint="'porchlight device asks' lists this device's asks",
                )
            state = self._prepare(ask, list(dict.fromkeys(clip_ids)), unlock, progress)
        else:
            chosen = sorted(state["clips"])
            if clip_ids and sorted(set(clip_ids)) != chosen:
                raise SyncError(
                    f"ask {ask_id} already has a consent for clips {', '.join(chosen)}",
                    hint="run the command again without --clips (or with the same ones) "
                    "to finish uploading them",
                )
            current = self.ask(ask_id)
            # The server lists only asks a device can still act on: one that is gone was
            # declined or revoked on the server, or its request expired; stop sharing.
            if current is None or current.state in TERMINAL_ASK_STATES:
                self._discard(ask_id, chosen)
                gone = "no longer open" if current is None else current.state
                raise SyncError(f"ask {ask_id} is {gone}; nothing more is uploaded for it")
            progress(f"continuing the consent to ask {ask_id}")
            # Pins are set just after the state is saved: a crash in between left none.
            for clip_id, entry in state["clips"].items():
                if not entry["uploaded"]:
                    with contextlib.suppress(ClipStoreError):
                        self.store.set_pinned(clip_id, True)
            self._restore_outbox(ask_id, state, unlock, progress)
        if not state["consent_posted"]:
            self._post_consent(ask_id, state)
            state["consent_posted"] = True
            self._save(ask_id, state)
            progress(f"consent to ask {ask_id} recorded by the server")
        outcome = UploadOutcome(ask_id, [], [], resumed)
        for clip_id, entry in state["clips"].items():
            if entry["uploaded"]:
                outcome.already_stored.append(clip_id)
                continue
            self._upload(ask_id, clip_id, entry, transfer)
            entry["uploaded"] = True
            self._save(ask_id, state)
            outcome.uploaded.append(clip_id)
            (self._outbox(ask_id) / f"{clip_id}.age").unlink(missing_ok=True)
            with contextlib.suppress(ClipStoreError):
                self.store.set_pinned(clip_id, False)
        # Done: the per-ask key has signed everything it ever will; forget it.
        self._discard(ask_id, list(state["clips"]))
        return outcome
