"""`porchlight device enroll`: register this device with a community server.

`register(commands)` adds the subcommand to the device command group (device/cli.py calls it
when this module is importable). The device's Ed25519 key (device/keys.py, the same key that
signs clip manifests; created if missing) and the credential the server returns are written to
the device data directory with mode 0600. Later sync commands (asks, consent, decline) build on
`load_enrolment`, `load_or_create_key` and `porchlight.client.PorchlightClient.device_call`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.cli import add_data_dir, data_dir_of
from device.keys import DEVICE_KEY_NAME, KeyFileError, create_device_key, load_device_key
from porchlight.cli import CommandError
from porchlight.client import ApiError, Enrolment, PorchlightClient

KEY_FILE = DEVICE_KEY_NAME
ENROLMENT_FILE = "enrolment.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable only by this user, atomically (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The device's Ed25519 signing key (the one that signs manifests), created if missing."""
    try:
        return load_device_key(data_dir)
    except KeyFileError:
        if (data_dir / DEVICE_KEY_NAME).exists():
            raise
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_device_key(data_dir)


@dataclass(frozen=True)
class DeviceEnrolment:
    server: str
    device_id: int
    credential: str

    @property
    def enrolment(self) -> Enrolment:
        return Enrolment(self.device_id, self.credential)


def load_enrolment(data_dir: Path) -> DeviceEnrolment | None:
    path = data_dir / ENROLMENT_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return DeviceEnrolment(str(data["server"]), int(data["device_id"]), str(data["credential"]))


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
    _write_private(
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


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("enroll", help="register this device with a community server")
    parser.add_argument(
        "--server", required=True, help="server URL, e.g. https://porchlight.example"
    )
    parser.add_argument("--code", required=True, help="the one-time enrolment code")
    add_data_dir(parser)
    parser.add_argument("--name", default=socket.gethostname()[:100] or "camera")
    parser.set_defaults(handler=_enroll)
