"""The device's own Ed25519 signing key and the homeowner's age recipients, on disk."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from device.clipstore import QUARANTINE_DIR
from porchlight.age import AgeError, Recipient, parse_recipient

DEVICE_KEY_NAME = "device-signing-key.pem"


class KeyFileError(Exception):
    pass


def create_device_key(data_dir: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path = data_dir / DEVICE_KEY_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def signed_footage(data_dir: Path) -> list[Path]:
    """What in ``data_dir`` the current device key signed: finished clips and their manifests,
    clips set aside by recovery, consents waiting in the outbox. A new key must never be made
    while any exists: the agent's recovery would find none of their manifests verifying."""
    clips = data_dir / "clips"
    aside = data_dir / QUARANTINE_DIR
    found = [
        *(clips.glob("*.age") if clips.is_dir() else ()),
        *(clips.glob("*.json") if clips.is_dir() else ()),
        *(aside.glob("*.age") if aside.is_dir() else ()),
        *((clips / "outbox").glob("*/state.json") if (clips / "outbox").is_dir() else ()),
    ]
    return sorted(found)


def load_device_key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / DEVICE_KEY_NAME
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyFileError(f"no device key at {path}") from None
    except ValueError as error:
        raise KeyFileError(f"{path} is not a PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def parse_recipients(texts: list[str]) -> list[Recipient]:
    recipients: list[Recipient] = []
    for text in texts:
        try:
            recipients.append(parse_recipient(text))
        except AgeError as error:
            raise KeyFileError(f"recipient {text[:24]}... is not valid: {error}") from None
    return recipients
