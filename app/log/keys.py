"""The log's Ed25519 signing key (c2sp signed-note type 0x01), kept in the data directory.

Created once, at the first start (or `porchlight server log-key`), as `log-signer.key`, mode
0600, holding the signer key string `PRIVATE+KEY+<origin>+<id>+<base64>`. The key's name is
the checkpoint origin, so the origin is fixed when the key is made and never drifts with
later settings changes. Several server processes serving one database must share this file.
A key is only ever made for a database whose log has published no checkpoint, and a key that
did not sign the latest published checkpoint is refused: a restore that forgot the file, or
shared storage that is not mounted, stops the server instead of forking the log's signatures.
The seed is never printed or logged; only the verifier key leaves this module.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import create_engine, inspect, make_url, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from app.log.models import LogCheckpoint
from app.settings import Settings
from porchlight.tlog.checkpoint import CheckpointError, open_checkpoint
from porchlight.tlog.note import (
    Ed25519Signer,
    NoteError,
    generate_signer,
    is_valid_key_name,
    parse_signer_key,
)

KEY_FILE = "log-signer.key"


class LogKeyError(RuntimeError):
    """The key file is unusable (unreadable, malformed, readable by others, or not the key
    that signed this log's published checkpoints)."""

    def __init__(self, message: str, hint: str = "check PORCHLIGHT_DATA_DIR") -> None:
        super().__init__(message)
        self.hint = hint


# Either way out of a key that does not match the published log. A new key for the same
# database would make every auditor's verification fail, so it is never made silently.
_RESTORE_HINT = (
    f"restore {KEY_FILE} (mode 0600) from the backup of the data directory, or mount the "
    "storage that holds it; only to start a new, separate log, point PORCHLIGHT_DATABASE_URL "
    "at a new, empty database"
)


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
    """The log key from the data directory, made (atomically, 0600) if there is none yet.

    Checked against the database first: a key is made only for a log that has published no
    checkpoint, and a key that did not sign the latest published checkpoint is refused.
    """
    path = key_path(settings)
    published = _latest_published_note(settings.database_url)
    if not path.exists():
        if published is not None:
            raise LogKeyError(
                f"the log key {path} is missing, but this database's log already has "
                "published checkpoints signed with it",
                hint=_RESTORE_HINT,
            )
        origin = default_origin(settings)
        if not is_valid_key_name(origin):
            raise LogKeyError(f"log origin {origin!r} is not a valid key name (no spaces or '+')")
        _create(path, generate_signer(origin))
    signer = _load(path)
    if published is not None:
        try:
            open_checkpoint(published, signer.signer.verifier())
        except CheckpointError:
            raise LogKeyError(
                f"the log key {path} ({signer.verifier_key}) did not sign this database's "
                "latest published checkpoint",
                hint=_RESTORE_HINT,
            ) from None
    return signer


def _latest_published_note(database_url: str) -> str | None:
    """The latest checkpoint note in the database; None when there is none or no schema yet."""
    doing = "cannot reach the database"
    try:
        url = make_url(database_url)
        # A SQLite file not made yet holds no log (connecting would create it, or fail when
        # its directory does not exist yet).
        if (
            url.get_backend_name() == "sqlite"
            and url.database not in (None, "", ":memory:")
            and not Path(str(url.database)).exists()
        ):
            return None
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                doing = "cannot read the log's checkpoints from the database"
                if not inspect(connection).has_table(LogCheckpoint.__tablename__):
                    return None
                return connection.scalars(
                    select(LogCheckpoint.note).order_by(LogCheckpoint.size.desc()).limit(1)
                ).first()
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError) as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise LogKeyError(
            f"{doing} to check the log key: {reason}", hint="check PORCHLIGHT_DATABASE_URL"
        ) from None


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
