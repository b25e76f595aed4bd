"""The log's Ed25519 signing key (c2sp signed-note type 0x01), kept in the data directory.

Created once, at the first start (or `porchlight server log-key`), as `log-signer.key`, mode
0600, holding the signer key string `PRIVATE+KEY+<origin>+<id>+<base64>`. The key's name is
the checkpoint origin, so the origin is fixed when the key is made and never drifts with
later settings changes. Several server processes serving one database must share this file.
The seed is never printed or logged; only the verifier key leaves this module.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from app.settings import Settings
from porchlight.tlog.note import (
    Ed25519Signer,
    NoteError,
    generate_signer,
    is_valid_key_name,
    parse_signer_key,
)

KEY_FILE = "log-signer.key"


class LogKeyError(RuntimeError):
    """The key file is unusable (unreadable, malformed, or readable by others)."""


class LogSigner:
    """The loaded log key. Wraps the signer so its seed never shows up in a repr or a log."""

    def __init__(self, signer: Ed25519Signer) -> None:
        self._signer = signer

    @property
    def signer(self) -> Ed25519Signer:
        return self._signer

    @property
    def origin(self) -> str:
        return self._signer.name

    @property
    def verifier_key(self) -> str:
        return self._signer.verifier().vkey()

    def __repr__(self) -> str:
        return f"LogSigner({self.verifier_key})"


def default_origin(settings: Settings) -> str:
    """The checkpoint origin for a new key: `log_origin`, else `<public host/path>/log`."""
    if settings.log_origin:
        return settings.log_origin
    parts = urlsplit(settings.public_url)
    base = (parts.netloc + parts.path).rstrip("/") if parts.netloc else "porchlight.localhost"
    return f"{base}/log"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def load_or_create(settings: Settings) -> LogSigner:
    """The log key from the data directory, made (atomically, 0600) if there is none yet."""
    path = key_path(settings)
    if not path.exists():
        origin = default_origin(settings)
        if not is_valid_key_name(origin):
            raise LogKeyError(f"log origin {origin!r} is not a valid key name (no spaces or '+')")
        _create(path, generate_signer(origin))
    return _load(path)


def _create(path: Path, signer: Ed25519Signer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(signer.skey() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process made the key first: then theirs is the key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load(path: Path) -> LogSigner:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LogKeyError(
                f"{path} is readable by others (mode {stat.filemode(mode)}); run: chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii")
    except OSError as error:
        raise LogKeyError(f"cannot read the log key {path}: {error.strerror}") from None
    try:
        signer = parse_signer_key(text)
    except NoteError as error:
        raise LogKeyError(f"{path} is not a log signer key: {error}") from None
    if type(signer) is not Ed25519Signer:
        raise LogKeyError(f"{path} is not an Ed25519 (type 0x01) log key")
    return LogSigner(signer)
