"""`porchlight device enroll | asks | consent | decline`: the device's side of footage requests.

device/cli.py defines these commands' arguments and calls the `cmd_*` functions here, importing
this module (and with it the HTTP client) only when one of them runs. `enroll` writes the
device's Ed25519 key (device/keys.py, the same key that signs clip manifests; created if
missing) and the server's credential to the data directory with mode 0600. The others are thin
wrappers over `device.sync.DeviceSync` (spec: docs/requests-api.md, "Device").
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.cli import IDENTITY_NAME, data_dir_of, load_device_config, read_passphrase
from device.keys import (
    DEVICE_KEY_NAME,
    KeyFileError,
    create_device_key,
    load_device_key,
    signed_footage,
)
from device.sync import (
    ENROLMENT_FILE,
    Ask,
    DeviceEnrolment,
    DeviceSync,
    SyncError,
    load_enrolment,
    write_private,
)
from porchlight.age import AgeError, Identity, PassphraseRequiredError, read_identity_file
from porchlight.cli import CommandError
from porchlight.client import (
    ApiError,
    PorchlightClient,
    ProgressBar,
    ServerURLError,
    validate_server_url,
)
from porchlight.text import shown as _shown

__all__ = [
    "ENROLMENT_FILE",
    "KEY_FILE",
    "enroll",
    "load_enrolment",
    "load_or_create_key",
]

KEY_FILE = DEVICE_KEY_NAME


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The device's Ed25519 signing key (the one that signs manifests), created if missing.

    Never created where clips signed by an earlier key exist (they would all stop verifying).
    """
    return _load_or_create_key(data_dir)[0]


def _load_or_create_key(data_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key, and whether this call created it."""
    try:
        return load_device_key(data_dir), False
    except KeyFileError as error:
        if (data_dir / DEVICE_KEY_NAME).exists():
            raise CommandError(str(error), hint="nothing was sent") from None
    footage = signed_footage(data_dir)
    if footage:
        raise CommandError(
            f"{data_dir} has no device signing key ({DEVICE_KEY_NAME}) but holds "
            f"{len(footage)} clip files signed with one; a new key would not match them",
            hint=f"put the original {DEVICE_KEY_NAME} back into {data_dir} (nothing was "
            "changed); the clips themselves still open with the homeowner identity",
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return create_device_key(data_dir), True
    except FileExistsError:  # another command created it just now
        return load_device_key(data_dir), False
    except OSError as error:
        raise CommandError(f"cannot create the device key in {data_dir}: {error}") from None


def enroll(
    server: str, code: str, data_dir: Path, name: str, *, allow_http: bool = False
) -> DeviceEnrolment:
    """Register the device key with the server using a one-time code; save the credential.

    A server URL the client refuses (plain HTTP to another host without `allow_http`) is
    refused before anything is made or sent; `allow_http` is saved with the credential so the
    later signed calls keep to it. A key made for this enrolment is removed again if the
    enrolment fails, so a failed attempt leaves the data directory as it was."""
    try:
        validate_server_url(server, allow_http=allow_http)
    except ServerURLError as error:
        raise CommandError(str(error), hint="nothing was sent") from None
    key, created = _load_or_create_key(data_dir)
    try:
        try:
            with PorchlightClient(server, allow_http=allow_http) as client:
                result = client.enroll_device(code, key, name)
        except ApiError as error:
            raise CommandError(
                f"the server refused the enrolment: {error.message}",
                hint="ask for a new enrolment code if this one was used or expired",
            ) from None
        except OSError as error:
            raise CommandError(f"cannot reach {server}: {error}") from None
        except Exception as error:  # httpx transport errors are not OSErrors
            raise CommandError(f"cannot reach {server}: {error}") from None
        saved = DeviceEnrolment(server.rstrip("/"), result.device_id, result.credential, allow_http)
        document: dict[str, Any] = {
            "server": saved.server,
            "device_id": saved.device_id,
            "credential": saved.credential,
        }
        if allow_http:
            document["allow_http"] = True
        write_private(data_dir / ENROLMENT_FILE, json.dumps(document, indent=2).encode("utf-8"))
    except BaseException:
        if created:
            (data_dir / DEVICE_KEY_NAME).unlink(missing_ok=True)
        raise
    return saved


def cmd_enroll(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    name = args.name or socket.gethostname()[:100] or "camera"
    saved = enroll(args.server, args.code, data_dir, name, allow_http=args.allow_http)
    print(
        f"enrolled as device {saved.device_id} with {saved.server}; "
        f"key and credential in {data_dir}"
    )
    return 0


def _sync(args: argparse.Namespace) -> DeviceSync:
    try:
        return DeviceSync(
            data_dir_of(args),
            allow_http=args.allow_http,
            retries=args.retries,
            on_retry=lambda line: print(f"porchlight: {line}", file=sys.stderr),
        )
    except SyncError as error:
        raise CommandError(error.message, hint=error.hint) from None


def _unlocker(args: argparse.Namespace) -> Callable[[], Sequence[Identity]]:
    """Unlock the homeowner identity only when it is needed (a resumed upload needs none)."""

    def unlock() -> Sequence[Identity]:
        data_dir, config = load_device_config(args)
        identity_path: Path | None = args.identity
        if identity_path is None and config.keys.identity_file:
            identity_path = data_dir / config.keys.identity_file
        if identity_path is None:
            identity_path = data_dir / IDENTITY_NAME
        if not identity_path.exists():
            raise CommandError(
                "this device holds no homeowner identity", hint="pass --identity FILE"
            )
        try:
            try:
                return read_identity_file(identity_path, None)
            except PassphraseRequiredError:
                return read_identity_file(identity_path, read_passphrase(args.passphrase_file))
        except OSError as error:
            raise CommandError(f"cannot read the homeowner identity: {error}") from None
        except AgeError as error:
            raise CommandError(
                f"cannot open the homeowner identity: {error}",
                hint="check the passphrase; nothing was sent",
            ) from None

    return unlock


# Text from the server is shown, never obeyed (porchlight/text.py): a request's fields are the
# requester's words, and printed raw they could forge a line or overwrite the agency's name.
_CONTINUATION = " " * 16  # under the value column of `_describe`'s labels


def _shown_lines(value: Any) -> str:
    """Like `_shown`, but line feeds start a new line indented under the label's value."""
    return ("\n" + _CONTINUATION).join(_shown(line) for line in str(value).split("\n"))


def _describe(ask: Ask, clips: Sequence[Any]) -> list[str]:
    request = ask.request
    warrant = request.get("warrant") or {}
    area = request.get("area") or {}

    def field(document: dict[str, Any], name: str) -> str:
        return _shown(document.get(name, "-"))

    lines = [
        f"ask {_shown(ask.ask_id)}  ({_shown(ask.state)}; answer by {_shown(ask.deadline or '-')})",
        f"  agency        {field(request, 'agency')} ({field(request, 'jurisdiction')})",
        f"  officer       {field(request, 'officer')}",
        f"  warrant       {field(warrant, 'court')}, docket {field(warrant, 'docket_number')}, "
        f"judge {field(warrant, 'judge')}",
        f"                issued {field(warrant, 'issued_on')}, "
        f"expires {field(warrant, 'expires_on')}, "
        f"document SHA-256 {field(warrant, 'document_sha256')}",
        f"  offence       {_shown_lines(request.get('offence', '-'))}",
        f"  window        {field(request, 'window_start')} to {field(request, 'window_end')}",
        f"  area          {field(area, 'radius_m')} m around "
        f"{field(area, 'lat')}, {field(area, 'lon')}",
    ]
    chosen = ask.document.get("clip_ids") or []
    if chosen:
        uploaded = set(ask.document.get("uploaded_clip_ids") or [])
        lines.append(
            "  you shared    "
            + ", ".join(
                f"{_shown(c)} ({'uploaded' if c in uploaded else 'not yet uploaded'})"
                for c in chosen
            )
        )
    if clips:
        lines.append("  your clips inside the window:")
        lines += [
            f"    {c.id}  {c.start:%Y-%m-%d %H:%M:%S}  {c.duration:6.1f} s  {c.size / 1e6:6.2f} MB"
            for c in clips
        ]
    else:
        lines.append("  you have no clips inside the window")
    return lines


def cmd_asks(args: argparse.Namespace) -> int:
    with _sync(args) as sync:
        try:
            asks = sync.asks()
        except ApiError as error:
            raise CommandError(f"the server refused: {error.message}") from None
        except SyncError as error:
            raise CommandError(error.message, hint=error.hint) from None
        listed = [(ask, sync.clips_in_window(ask)) for ask in asks]
    if args.json:
        print(
            json.dumps(
                [ask.document | {"clips": [c.as_json() for c in clips]} for ask, clips in listed],
                indent=1,
            )
        )
        return 0
    if not listed:
        print("no asks for this device", file=sys.stderr)
    for ask, clips in listed:
        print("\n".join(_describe(ask, clips)))
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    clip_ids = [c.strip() for c in (args.clips or "").split(",") if c.strip()]
    with _sync(args) as sync:
        try:
            outcome = sync.consent(
                args.ask,
                clip_ids,
                _unlocker(args),
                progress=lambda line: print(f"porchlight: {line}", file=sys.stderr),
                transfer=lambda clip_id: ProgressBar(f"uploading {clip_id}"),
            )
        except SyncError as error:
            raise CommandError(error.message, hint=error.hint) from None
        except ApiError as error:
            raise CommandError(f"the server refused: {error.message}") from None
        except OSError as error:
            raise CommandError(
                f"the consent to ask {args.ask} stopped: {error}",
                hint="if the card is full, free some space; running the same command again "
                "continues where it stopped",
            ) from None
    done = outcome.uploaded + outcome.already_stored
    print(f"shared {len(done)} clip(s) with ask {outcome.ask_id}: {', '.join(done)}")
    return 0


def cmd_decline(args: argparse.Namespace) -> int:
    with _sync(args) as sync:
        try:
            answer = sync.decline(args.ask)
        except SyncError as error:
            raise CommandError(error.message, hint=error.hint) from None
    # The state is the server's word: shown escaped, like every text from it.
    state = _shown(answer.get("state", "declined"))
    print(f"declined ask {args.ask} ({state}); nothing was shared")
    return 0
