"""`porchlight device enroll | asks | consent | decline`: the device's side of footage requests.

`register(commands)` adds the subcommands to the device command group (device/cli.py calls it
when this module is importable). `enroll` writes the device's Ed25519 key (device/keys.py, the
same key that signs clip manifests; created if missing) and the server's credential to the data
directory with mode 0600. The others are thin wrappers over `device.sync.DeviceSync`
(spec: docs/requests-api.md, "Device").
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.cli import IDENTITY_NAME, add_data_dir, data_dir_of, load_device_config
from device.keys import DEVICE_KEY_NAME, KeyFileError, create_device_key, load_device_key
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
from porchlight.client import ApiError, PorchlightClient, ProgressBar

__all__ = [
    "ENROLMENT_FILE",
    "KEY_FILE",
    "enroll",
    "load_enrolment",
    "load_or_create_key",
    "register",
]

KEY_FILE = DEVICE_KEY_NAME


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The device's Ed25519 signing key (the one that signs manifests), created if missing."""
    try:
        return load_device_key(data_dir)
    except KeyFileError:
        if (data_dir / DEVICE_KEY_NAME).exists():
            raise
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_device_key(data_dir)


def enroll(server: str, code: str, data_dir: Path, name: str) -> DeviceEnrolment:
    """Register the device key with the server using a one-time code; save the credential."""
    key = load_or_create_key(data_dir)
    try:
        with PorchlightClient(server) as client:
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
    saved = DeviceEnrolment(server.rstrip("/"), result.device_id, result.credential)
    write_private(
        data_dir / ENROLMENT_FILE,
        json.dumps(
            {"server": saved.server, "device_id": saved.device_id, "credential": saved.credential},
            indent=2,
        ).encode("utf-8"),
    )
    return saved


def _enroll(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    saved = enroll(args.server, args.code, data_dir, args.name)
    print(
        f"enrolled as device {saved.device_id} with {saved.server}; "
        f"key and credential in {data_dir}"
    )
    return 0


def _sync(args: argparse.Namespace) -> DeviceSync:
    try:
        return DeviceSync(
            data_dir_of(args),
            retries=args.retries,
            on_retry=lambda line: print(f"porchlight: {line}", file=sys.stderr),
        )
    except SyncError as error:
        raise CommandError(error.message, hint=error.hint) from None


def _read_passphrase(path: Path | None) -> str:
    if path is not None:
        try:
            passphrase = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise CommandError(f"cannot read passphrase file: {error}") from None
    else:
        if not sys.stdin.isatty():
            raise CommandError(
                "a passphrase is needed and there is no terminal to ask it on",
                hint="pass --passphrase-file FILE",
            )
        passphrase = getpass.getpass("Homeowner passphrase: ")
    if not passphrase:
        raise CommandError("the passphrase is empty")
    return passphrase


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
                return read_identity_file(identity_path, _read_passphrase(args.passphrase_file))
        except OSError as error:
            raise CommandError(f"cannot read the homeowner identity: {error}") from None
        except AgeError as error:
            raise CommandError(
                f"cannot open the homeowner identity: {error}",
                hint="check the passphrase; nothing was sent",
            ) from None

    return unlock


def _describe(ask: Ask, clips: Sequence[Any]) -> list[str]:
    request = ask.request
    warrant = request.get("warrant") or {}
    area = request.get("area") or {}
    lines = [
        f"ask {ask.ask_id}  ({ask.state}; answer by {ask.deadline or '-'})",
        f"  agency        {request.get('agency', '-')} ({request.get('jurisdiction', '-')})",
        f"  officer       {request.get('officer', '-')}",
        f"  warrant       {warrant.get('court', '-')}, docket {warrant.get('docket_number', '-')}, "
        f"judge {warrant.get('judge', '-')}",
        f"                issued {warrant.get('issued_on', '-')}, "
        f"expires {warrant.get('expires_on', '-')}, "
        f"document SHA-256 {warrant.get('document_sha256', '-')}",
        f"  offence       {request.get('offence', '-')}",
        f"  window        {request.get('window_start')} to {request.get('window_end')}",
        f"  area          {area.get('radius_m', '-')} m around "
        f"{area.get('lat', '-')}, {area.get('lon', '-')}",
    ]
    chosen = ask.document.get("clip_ids") or []
    if chosen:
        uploaded = set(ask.document.get("uploaded_clip_ids") or [])
        lines.append(
            "  you shared    "
            + ", ".join(
                f"{c} ({'uploaded' if c in uploaded else 'not yet uploaded'})" for c in chosen
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


def _asks(args: argparse.Namespace) -> int:
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


def _consent(args: argparse.Namespace) -> int:
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
    done = outcome.uploaded + outcome.already_stored
    print(f"shared {len(done)} clip(s) with ask {outcome.ask_id}: {', '.join(done)}")
    return 0


def _decline(args: argparse.Namespace) -> int:
    with _sync(args) as sync:
        try:
            answer = sync.decline(args.ask)
        except SyncError as error:
            raise CommandError(error.message, hint=error.hint) from None
    print(f"declined ask {args.ask} ({answer.get('state', 'declined')}); nothing was shared")
    return 0


def _retries(text: str) -> int:
    if not text.isdigit() or int(text) > 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of retries from 0 to 20")
    return int(text)


def _sync_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument(
        "--retries",
        type=_retries,
        default=5,
        help="retries (with doubling waits from 0.5 s) while the server is unreachable",
    )


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("enroll", help="register this device with a community server")
    parser.add_argument(
        "--server", required=True, help="server URL, e.g. https://porchlight.example"
    )
    parser.add_argument("--code", required=True, help="the one-time enrolment code")
    add_data_dir(parser)
    parser.add_argument("--name", default=socket.gethostname()[:100] or "camera")
    parser.set_defaults(handler=_enroll)

    asks = commands.add_parser("asks", help="footage requests asked of this device, and its clips")
    _sync_options(asks)
    asks.add_argument("--json", action="store_true", help="machine-readable output")
    asks.set_defaults(handler=_asks)

    consent = commands.add_parser(
        "consent", help="share chosen clips with a request (rewrapped for the agency, uploaded)"
    )
    consent.add_argument("ask", help="the ask id (see 'porchlight device asks')")
    consent.add_argument(
        "--clips", help="clip ids to share, comma separated (omit to finish an earlier upload)"
    )
    _sync_options(consent)
    consent.add_argument("--passphrase-file", type=Path, help="read the passphrase from this file")
    consent.add_argument(
        "--identity", type=Path, help="homeowner identity file (default: the configured one)"
    )
    consent.set_defaults(handler=_consent)

    decline = commands.add_parser("decline", help="decline an ask: nothing is shared")
    decline.add_argument("ask", help="the ask id")
    _sync_options(decline)
    decline.set_defaults(handler=_decline)
